"""Stages as data: what each stage of a cascade makes and takes, checked before compute.

A cascade config (videojax/cascade/demo.py, configs/cascades/*.py) is an ml_collections
ConfigDict (`stage_config` builds one stage's entry):
  text       the frozen text encoder every stage is conditioned on (encoder, path, max_len).
  order      stage names, first to last.
  stages     per name: config ('configs/tsr.py:demo', a stage training config; '' for
             the one recorded with the checkpoint), checkpoint (an exported directory or
             a training workdir; '' for none: random weights), output
             (frames, height, width, fps), sample (SampleSettings fields), frame_chunk
             (SSR only: sample this many frames at a time; 0 = all).
A stage's input follows from its kind: base takes text only; tsr takes the previous
video at 1/temporal_factor of its frames and fps; ssr the previous video at
1/spatial_factor of its height and width.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys

import ml_collections

from videojax.cascade import weights
from videojax.cascade.sampling import SampleSettings
from videojax.nn.stage import StageNetwork

# The directory holding the `videojax` package: the repository checkout for an editable
# install (configs/ beside it), site-packages for a wheel (no configs/).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def find_path(path: str, root: str = ROOT) -> tuple[str, str | None]:
  """(absolute path, the directory it was found under) of a file or directory named in
  a cascade config.

  An absolute path is taken as it is (directory None). A relative one is looked up in
  the current directory, then under `root` (the checkout videojax is imported from), so
  'configs/cascades/tiny.py' works from anywhere in a repository install and relative
  paths of the user's own files work from a wheel install. A path found nowhere is
  returned relative to the current directory (directory None), for the caller to
  report.
  """
  if os.path.isabs(path):
    return path, None
  for base in (os.getcwd(), root):
    full = os.path.join(base, path)
    if os.path.exists(full):
      return full, base
  return os.path.abspath(path), None


def load_config_file(spec: str, root: str = ROOT) -> ml_collections.ConfigDict:
  """'configs/ssr.py:demo' -> get_config('demo') of that file (see `find_path`).

  Raises:
    FileNotFoundError: the file is in neither the current directory nor `root`.
  """
  path, _, arg = spec.partition(":")
  full, base = find_path(path, root)
  if not os.path.isfile(full):
    where = full if os.path.isabs(path) else f"{os.getcwd()} or {root}"
    raise FileNotFoundError(f"Config file {path!r} not found (looked in {where}); give a "
                            "path relative to the current directory, or an absolute one.")
  # Stage configs import `configs.common`: the directory holding configs/ goes on the path.
  top = next((d for d in (base, root) if d and os.path.isdir(os.path.join(d, "configs"))),
             None)
  if top and top not in sys.path:
    sys.path.insert(0, top)
  module_spec = importlib.util.spec_from_file_location(
      f"_videojax_config_{abs(hash(full))}", full)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def stage_config(config: str | ml_collections.ConfigDict, output: tuple,
                 checkpoint: str = "", **sample) -> ml_collections.ConfigDict:
  """One stage's entry in a cascade config.

  Args:
    config: the stage's training config ('configs/tsr.py:demo' or a ConfigDict; '':
      the one recorded with its checkpoint).
    output: (frames, height, width, fps) it makes; checked against the config.
    checkpoint: its weights, an exported directory or a training workdir ('': random
      weights, for tests and dry runs).
    **sample: SampleSettings fields (videojax/cascade/sampling.py) that differ from the
      defaults below.

  Returns:
    A ConfigDict with config, checkpoint, output, frame_chunk (0) and sample.
  """
  s = ml_collections.ConfigDict()
  s.config = config  # the stage's training config ('': the one its checkpoint records)
  s.checkpoint = checkpoint  # exported weights or a workdir ('' = random, for dry runs)
  s.output = output  # (frames, height, width, fps) it makes; checked against the config
  s.frame_chunk = 0  # ssr only: frames sampled at a time (0: all)
  s.sample = ml_collections.ConfigDict(dict(  # SampleSettings
      sampler="ddim", num_steps=32, spacing="uniform", guidance_scale=3.0,
      noisy_guidance_scale=ml_collections.config_dict.placeholder(float),  # None: one scale
      noisy_logsnr=-3.0, reversal_guidance_scale=0.0, reversal_logsnr=float("inf"),
      threshold="dynamic", percentile=0.995, aug_level=0.0,
      start_logsnr=ml_collections.config_dict.placeholder(float),  # None: from pure noise
      consistency=False))  # ssr only: project x0 onto the low-resolution input
  s.sample.update(sample)
  return s


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a cascade.

  Attributes:
    name: its name in the cascade ('base', 'tsr1', ...).
    config: the stage's training config (model, data view, diffusion, ...).
    checkpoint: where its weights are ('' for none: random weights, for tests).
    sample: how it samples.
    frame_chunk: SSR only: frames sampled at a time (0: all at once).
  """

  name: str
  config: ml_collections.ConfigDict
  checkpoint: str = ""
  sample: SampleSettings = SampleSettings()
  frame_chunk: int = 0

  @property
  def kind(self) -> str:
    return self.config.data.kind

  @property
  def output(self) -> tuple[int, int, int, float]:
    """(frames, height, width, fps) of the video the stage makes."""
    d = self.config.data
    return (d.frames, d.height, d.width, float(d.fps))

  @property
  def input(self) -> tuple[int, int, int, float] | None:
    """(frames, height, width, fps) of the video the stage needs; None for text only."""
    frames, height, width, fps = self.output
    d = self.config.data
    if self.kind == "tsr":
      return (len(range(0, frames, d.temporal_factor)), height, width, fps / d.temporal_factor)
    if self.kind == "ssr":
      return (frames, height // d.spatial_factor, width // d.spatial_factor, fps)
    return None

  @property
  def channels(self) -> tuple[int, int]:
    """(channels of the video it takes, of the video it makes): stages pass videos, a
    latent stage encoding what it takes and decoding what it makes."""
    ae = self.config.get("autoencoder") or {}
    if ae.get("name"):
      return (ae.get("channels", 3),) * 2
    m = self.config.model
    return (m.get("in_channels", 3), m.get("out_channels", 3))


_FIELDS = ("frames", "height", "width", "fps")


def validate(stages: list[Stage]) -> None:
  """Checks the chain before any compute; errors name both stages and the values.

  Raises:
    ValueError: an empty chain, a first stage that needs a video, a stage whose
      input is not the previous stage's output (frames, size, fps, channels), or a
      frame_chunk on a stage that mixes information across frames by attention.
  """
  if not stages:
    raise ValueError("A cascade needs at least one stage.")
  if stages[0].input is not None:
    raise ValueError(f"The first stage {stages[0].name!r} is a {stages[0].kind} stage: it "
                     "needs an input video; a cascade starts with a base (text-only) stage.")
  for prev, stage in zip(stages, stages[1:]):
    if stage.input is None:
      raise ValueError(f"Stage {stage.name!r} is a base stage but follows {prev.name!r}; only "
                       "the first stage generates from text alone.")
    for field, want, have in zip(_FIELDS, stage.input, prev.output):
      if abs(float(want) - float(have)) > 1e-6:
        raise ValueError(f"{stage.kind.upper()} stage {stage.name!r} expects {want:g} input "
                         f"{field} but stage {prev.name!r} produces {have:g}.")
    if stage.channels[0] != prev.channels[1]:
      raise ValueError(f"Stage {stage.name!r} expects {stage.channels[0]}-channel input but "
                       f"stage {prev.name!r} produces {prev.channels[1]} channels.")
  for stage in stages:
    try:  # the denoiser and latent space it names, and the latents of its output
      network = StageNetwork.from_config(stage.config)
      frames, height, width, _ = stage.output
      network.network_shape((1, frames, height, width, network.video_channels))
      if stage.input is not None:
        network.network_shape((1,) + stage.input[:3] + (network.video_channels,))
    except ValueError as e:
      raise ValueError(f"Stage {stage.name!r}: {e}") from None
    if stage.frame_chunk:
      if stage.kind != "ssr" or stage.config.model.get("temporal_attn_levels"):
        raise ValueError(f"Stage {stage.name!r}: frame_chunk needs an SSR stage without "
                         "temporal attention (fully convolutional in time).")
      if stage.output[0] % stage.frame_chunk:
        raise ValueError(f"Stage {stage.name!r}: frame_chunk {stage.frame_chunk} must divide "
                         f"its {stage.output[0]} frames.")


def stages_from_config(cascade: ml_collections.ConfigDict, root: str = ROOT) -> list[Stage]:
  """The validated stages of a cascade config (see the module docstring)."""
  stages = []
  for name in cascade.order:
    if name not in cascade.stages:
      raise ValueError(f"Cascade order names {name!r} but stages has only "
                       f"{sorted(cascade.stages)}.")
    s = cascade.stages[name]
    checkpoint = _resolve(s.get("checkpoint", ""), root)
    if isinstance(s.config, ml_collections.ConfigDict):
      config = s.config
    elif s.config:
      config = load_config_file(s.config, root)
    elif checkpoint:  # '': the config its weights were trained with
      config = weights.load_config(checkpoint)
    else:
      raise ValueError(f"Stage {name!r} has neither a config nor a checkpoint; name its "
                       "training config (e.g. 'configs/base.py:demo') or its weights.")
    stage = Stage(name, config, checkpoint, SampleSettings.from_config(s.sample),
                  int(s.get("frame_chunk", 0)))
    declared = tuple(s.output)
    if any(abs(float(a) - float(b)) > 1e-6 for a, b in zip(declared, stage.output)):
      raise ValueError(f"Stage {name!r} declares output {declared} (frames, height, width, "
                       f"fps) but its config {s.config} makes {stage.output}.")
    stages.append(stage)
  validate(stages)
  return stages


def _resolve(path: str, root: str) -> str:
  return find_path(path, root)[0] if path else path


def describe(stages: list[Stage]) -> str:
  """One line per stage: kind, input -> output, sampler."""
  lines = []
  for s in stages:
    t, h, w, fps = s.output
    src = "text" if s.input is None else "{}x{}x{} @ {:g} fps".format(*s.input)
    guidance = f"{s.sample.guidance_scale:g}"
    if s.sample.noisy_guidance_scale is not None:
      guidance += (f" ({s.sample.noisy_guidance_scale:g} below log-SNR "
                   f"{s.sample.noisy_logsnr:g})")
    if s.sample.reversal_guidance_scale:
      guidance += f", time reversal {s.sample.reversal_guidance_scale:g}"
      if s.sample.reversal_logsnr != float("inf"):
        guidance += f" below log-SNR {s.sample.reversal_logsnr:g}"
    lines.append(f"{s.name:>6} ({s.kind}): {src} -> {t}x{h}x{w} @ {fps:g} fps; "
                 f"{s.sample.sampler} x {s.sample.num_steps}, guidance {guidance}"
                 + (", consistent with its input" if s.sample.consistency else ""))
  return "\n".join(lines)

