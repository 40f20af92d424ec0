"""The chain: text -> base video -> TSR / SSR stages -> the final video.

  from videojax.cascade import chain
  cascade = chain.Cascade.load()  # the shipped demo (videojax/cascade/demo.py)
  video = cascade.sample(["a red circle moving left on a black background"], seed=0)
  chain.show(video)  # uint8 [B, T, H, W, 3], inline in Colab / Jupyter

Each stage conditions on the prompts' text embeddings (one frozen encoder for the
whole cascade) and on the previous stage's video, prepared the way the training
pipeline prepared it: a TSR stage gets the previous frames placed on every
`temporal_factor`-th frame of its grid (and keeps them: its x0 predictions on those
frames are replaced by the given frames at every step); an SSR stage gets the
previous video as its low-resolution input. Both noise it to the stage's sampling
augmentation level.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from videojax.cascade import weights
from videojax.cascade.sampling import stage_sampler
from videojax.cascade import demo
from videojax.cascade.stages import ROOT, Stage, describe, load_config_file, stages_from_config
from videojax.io.video import show, to_uint8
from videojax.nn import denoisers
from videojax.nn import text as text_lib
from videojax.nn.conditioning import place_frames
from videojax.nn.stage import StageNetwork

# The shipped demo cascade's definition as a config file path, for code that takes a
# path (config_flags, `load_config_file`); it lies inside the package, so it works
# from a wheel install.
DEFAULT_CASCADE = os.path.abspath(demo.__file__)

__all__ = ["Cascade", "DEFAULT_CASCADE", "show"]


class _Runner:
  """One stage's model, weights and jitted sampler."""

  def __init__(self, stage: Stage, text_dim: int, seed: int):
    self.stage = stage
    cfg = stage.config
    if cfg.model.get("text_dim") and cfg.model.text_dim != text_dim:
      raise ValueError(f"Stage {stage.name!r} expects {cfg.model.text_dim}-wide text "
                       f"embeddings but the cascade's encoder gives {text_dim}.")
    self.network = StageNetwork.from_config(cfg)
    self.sampler = stage_sampler(
        cfg, self.network, stage.sample,
        cache_tag=repr((cfg.model.to_json(), cfg.diffusion.to_json(), stage.sample)))
    self.params = None
    self._seed = seed

  def _check_trained_like(self, trained: ml_collections.ConfigDict) -> None:
    """The weights' training config must agree with the stage's on what the network
    predicts (parameterization, residual or not, schedule), on the stage kind, and on
    how the network computes it: the denoiser and every field of it except how it runs
    (its RUN_FIELDS: dtypes, remat, kernels, dropout). Fields without parameters (e.g.
    `causal_temporal`) would load silently otherwise."""
    want, got = self.stage.config.diffusion, trained.get("diffusion", {})
    pairs = [(f"diffusion.{key}", want.get(key, default), got.get(key, default))
             for key, default in (("parameterization", "v"), ("residual", False),
                                  ("schedule", "cosine"), ("formulation", "vp"))]
    pairs.append(("data.kind", self.stage.config.data.kind, trained.data.kind))
    want_m = denoisers.function_fields(self.stage.config.model)
    got_m = denoisers.function_fields(trained.model) if trained.model.get(
        "name") == want_m["name"] else {"name": trained.model.get("name")}
    pairs += [(f"model.{k}", want_m[k], got_m.get(k)) for k in want_m]
    for key, w, g in pairs:
      if w != g:
        raise ValueError(
            f"Stage {self.stage.name!r}: its weights ({self.stage.checkpoint}) were trained "
            f"with {key}={g!r} but its config says {w!r}; use the config they were trained "
            "with or retrain / re-export the stage.")

  def load(self, example_cond: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Weights: the stage's checkpoint, or random ones initialised for inputs shaped
    like `example_cond` (arrays or jax.ShapeDtypeStructs) and `shape`."""
    if self.params is not None:
      return
    if self.stage.checkpoint:
      self.params, trained = weights.load(self.stage.checkpoint)
      self._check_trained_like(trained)
      self.params = jax.device_put(self.params)  # one transfer, no per-shape programs
    else:  # random weights: tests and dry runs
      logging.warning("Stage %r has no checkpoint: random weights.", self.stage.name)
      kw = {k: jnp.zeros(v.shape, v.dtype) for k, v in example_cond.items()}
      if "cond_video" in kw:  # in the stage's space, like z
        kw["cond_video"] = self.network.encode(kw["cond_video"])
        kw["aug_logsnr"] = jnp.zeros((shape[0],))
      z = jnp.zeros(self.network.network_shape(shape))
      self.params = nn.meta.unbox(jax.jit(lambda: self.network.init(
          jax.random.PRNGKey(self._seed), z, jnp.zeros((shape[0],)), **kw))())


class Cascade:
  """A validated chain of stages with their weights, sampled stage by stage."""

  def __init__(self, stages: list[Stage], text: ml_collections.ConfigDict, seed: int = 0,
               encoder: Any = None):
    self.stages = stages
    self.text_config = text
    self._encoder = encoder  # None: built from `text` on first use
    self._text_dim = next((s.config.model.get("text_dim", 0) for s in stages
                           if s.config.model.get("text_dim", 0)), 0)
    self._runners = [_Runner(s, self._text_dim, seed) for s in stages]

  @classmethod
  def load(cls, config: str | ml_collections.ConfigDict | None = None,
           root: str = ROOT, *, encoder: Any = None) -> "Cascade":
    """A cascade from a config file path ('configs/cascades/tiny.py', relative to the
    current directory or `root`: see `stages.find_path`) or a ConfigDict; None for the
    shipped demo (`videojax.cascade.demo.get_config()`: weights and stage configs from
    the package, whatever the working directory).

    `encoder`: anything with `dim` and `encode_captions(prompts) -> (emb, mask)` to use
    instead of the config's text encoder, e.g. a `videojax.nn.text.EmbeddingCache` of
    the same encoder's embeddings where its weights are not installed.
    """
    if config is None:
      config = demo.get_config()
    elif isinstance(config, str):
      config = load_config_file(config, root)
    return cls(stages_from_config(config, root), config.text, encoder=encoder)

  def __repr__(self) -> str:
    return "Cascade(\n" + describe(self.stages) + "\n)"

  def encode(self, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
    """Text embeddings [B, L, D] and mask [B, L] of the prompts (the frozen encoder)."""
    if self._encoder is None:
      t = self.text_config
      self._encoder = text_lib.build_text_encoder(t.encoder, path=t.path or None,
                                                  max_len=t.max_len)
    emb, mask = self._encoder.encode_captions(list(prompts))
    if emb.shape[-1] != self._text_dim:
      raise ValueError(f"The cascade's {self.text_config.encoder} encoder gives "
                       f"{emb.shape[-1]}-wide embeddings; the stages expect {self._text_dim}.")
    return emb, mask

  def sample_stage(self, name: str, prompts: Sequence[str], video: np.ndarray | None = None,
                   seed: int = 0) -> np.ndarray:
    """Runs one stage on a given input video (evaluation of a stage on real data).

    Args:
      name: the stage.
      prompts: B captions ('' entries get the empty, unconditional text).
      video: the stage's input, uint8 or float in [-1, 1], [B, T, H, W, 3] (None for
        the base stage).
      seed: randomness.

    Returns:
      uint8 [B, T, H, W, 3].
    """
    names = [r.stage.name for r in self._runners]
    if name not in names:
      raise ValueError(f"No stage {name!r}; the cascade has {names}.")
    runner = self._runners[names.index(name)]
    want = runner.stage.input
    if video is not None:
      video = np.asarray(video)
      video = video.astype(np.float32) / 127.5 - 1.0 if video.dtype == np.uint8 else video
      if want is None or tuple(video.shape[1:4]) != tuple(want[:3]):
        raise ValueError(f"Stage {name!r} takes input videos [B, T, H, W, C] with (T, H, W) "
                         f"= {None if want is None else want[:3]}, got {video.shape}.")
    elif want is not None:
      raise ValueError(f"Stage {name!r} needs an input video of (T, H, W) = {want[:3]}.")
    text = None
    if self._text_dim:
      emb, mask = self.encode([p or "." for p in prompts])
      empty = np.array([not p for p in prompts])[:, None]  # the unconditional input
      text = (np.where(empty[..., None], 0.0, emb), np.where(empty, 0, mask))
    out = self._run(runner, len(prompts), text, None if video is None else jnp.asarray(video),
                    jax.random.PRNGKey(seed), None)
    return to_uint8(np.asarray(out))

  @staticmethod
  def _conditioning(runner: _Runner, text, video) -> tuple[dict[str, Any], Any]:
    """A stage's conditioning and known frames from the text embeddings and mask and
    the previous stage's video (arrays, or abstract ones under jax.eval_shape)."""
    stage = runner.stage
    cond = {}
    if text is not None:
      cond.update(text=jnp.asarray(text[0], jnp.float32),
                  text_mask=jnp.asarray(text[1], jnp.int32))
    known = None
    if stage.kind == "tsr":
      placed, fmask = place_frames(video, stage.output[0], stage.config.data.temporal_factor)
      cond.update(cond_video=placed, cond_mask=fmask)
      known = (placed, fmask)
    elif stage.kind == "ssr":
      cond["cond_video"] = video
    return cond, known

  @staticmethod
  def _shapes(runner: _Runner, b: int) -> tuple[tuple[int, ...], int]:
    """(output shape [B, T, H, W, C], frames sampled per call)."""
    stage = runner.stage
    frames, height, width, _ = stage.output
    return (b, frames, height, width, stage.channels[1]), stage.frame_chunk or frames

  @staticmethod
  def _chunk(cond: dict[str, Any], c0: int, chunk: int) -> dict[str, Any]:
    return {n: (v[:, c0:c0 + chunk] if n == "cond_video" else v) for n, v in cond.items()}

  def _prepare(self, runner: _Runner, b: int, text, video) -> None:
    """Loads a stage's weights and compiled sampler ahead of its turn, from the abstract
    text and input video (jax.ShapeDtypeStruct, shaped as `sample` makes them): run in a
    thread while earlier stages sample. Errors (e.g. weights trained otherwise) surface
    when the stage's turn comes."""
    cond, known = jax.eval_shape(lambda t, v: self._conditioning(runner, t, v), text, video)
    shape, chunk = self._shapes(runner, b)
    runner.load(cond, shape)
    part = jax.eval_shape(lambda c: self._chunk(c, 0, chunk), cond)
    key = jax.eval_shape(lambda: jax.random.fold_in(jax.random.PRNGKey(0), 0))
    runner.sampler.prepare(runner.params, (b, chunk) + shape[2:], part, key, known)

  def _run(self, runner: _Runner, b: int, text, video, key, progress) -> jax.Array:
    """One stage: conditioning from the previous video, chunked sampling, checks."""
    stage = runner.stage
    shape, chunk = self._shapes(runner, b)
    cond, known = self._conditioning(runner, text, video)
    runner.load(cond, shape)
    frames = shape[1]
    if progress is not None:
      progress(stage.name, 0, frames // chunk)
    pieces = []
    for c0 in range(0, frames, chunk):  # SSR stages may go a chunk of frames at a time
      pieces.append(runner.sampler(runner.params, (b, chunk) + shape[2:],
                                   self._chunk(cond, c0, chunk),
                                   jax.random.fold_in(key, c0), known))
      if progress is not None:  # report finished work, not work handed to the device
        jax.block_until_ready(pieces[-1])
        progress(stage.name, len(pieces), frames // chunk)
    video = jnp.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
    if not bool(jnp.all(jnp.isfinite(video))):
      raise FloatingPointError(f"Stage {stage.name!r} produced non-finite values; check its "
                               "weights and sampling settings (guidance scale, steps).")
    return video

  def sample(self, prompts: Sequence[str], seed: int = 0, *, keep_stages: bool = False,
             progress: Callable[[str, int, int], Any] | None = None
             ) -> np.ndarray | dict[str, np.ndarray]:
    """Text -> video through every stage.

    Args:
      prompts: B captions.
      seed: all randomness of the run (stage i uses fold_in(PRNGKey(seed), i)).
      keep_stages: also return every stage's video.
      progress: called as progress(stage_name, chunks_done, num_chunks) before a stage
        and after each chunk of frames it samples (for progress bars); None for none.

    Returns:
      uint8 [B, T, H, W, 3] of the last stage, or (keep_stages) a dict stage name ->
      uint8 video, in order.

    Raises:
      ValueError: no prompts.
      FloatingPointError: a stage produced non-finite values (never a black video).
    """
    prompts = [str(p) for p in prompts]
    if not prompts:
      raise ValueError("Give at least one prompt.")
    b = len(prompts)
    abstract_text = None if not self._text_dim else (
        jax.ShapeDtypeStruct((b, self.text_config.max_len, self._text_dim), jnp.float32),
        jax.ShapeDtypeStruct((b, self.text_config.max_len), jnp.int32))
    # One thread loads the stages' weights and programs in order while this one
    # encodes the text and samples the earlier stages.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
      ready, abstract_video = [], None
      for runner in self._runners:
        ready.append(pool.submit(self._prepare, runner, b, abstract_text, abstract_video))
        abstract_video = jax.ShapeDtypeStruct(self._shapes(runner, b)[0], jnp.float32)
      text = self.encode(prompts) if self._text_dim else None
      key = jax.random.PRNGKey(seed)
      video, out = None, {}
      for i, runner in enumerate(self._runners):
        ready[i].result()  # re-raises what preparing the stage raised
        video = self._run(runner, b, text, video, jax.random.fold_in(key, i), progress)
        if keep_stages:
          out[runner.stage.name] = to_uint8(np.asarray(video))
    finally:
      pool.shutdown(wait=True, cancel_futures=True)
    return out if keep_stages else to_uint8(np.asarray(video))
