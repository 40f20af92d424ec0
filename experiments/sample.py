r"""Text -> video through a cascade (default: the shipped demo cascade).

  python -m experiments.sample --prompt "a red circle moving left on a black background"
  python -m experiments.sample --prompt "..." --prompt "..." --out samples.gif --seed 3
  python -m experiments.sample --prompts_file prompts.txt --out out/video.mp4 --save_stages
  python -m experiments.sample --cascade configs/cascades/demo.py \
      --cascade.stages.base.sample.num_steps=64 --prompt "..."

One prompt writes --out; several write <out>_<i>.<ext>. --save_stages also writes every
stage's video as <out>_<stage>.<ext>. Existing files are never overwritten: if --out is
taken, the video goes to <out>-1.<ext> (then -2, ...), or pass --overwrite. Compiled
programs are cached in ~/.cache/videojax/jax, so a second run starts in seconds.

Output: one line per stage on stderr (its video, sampling steps and time), then one
line per file written on stdout; the last one also says how long the command took.
--verbosity=1 adds the libraries' INFO lines.
"""

import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from videojax.runtime import enable_compilation_cache, quiet_library_logs

_CASCADE = config_flags.DEFINE_config_file(
    "cascade", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "cascades", "demo.py"),
    "Cascade config file.", lock_config=True)
_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt (repeat for several).")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "A text file, one prompt per line.")
_OUT = flags.DEFINE_string("out", "video.mp4", "Output video (.mp4 or .gif).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_SAVE_STAGES = flags.DEFINE_bool("save_stages", False, "Also write every stage's video.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing output files.")


def _prompts() -> list[str]:
  prompts = list(_PROMPT.value)
  if _PROMPTS_FILE.value:
    with open(_PROMPTS_FILE.value) as f:
      prompts += [line.strip() for line in f if line.strip()]
  if not prompts:
    raise app.UsageError("Give --prompt (one or more) or --prompts_file.")
  return prompts


def output_paths(out: str, n: int, stages: list[str], save_stages: bool) -> dict:
  """(prompt index, stage or None) -> path; checks the suffix."""
  stem, ext = os.path.splitext(out)
  if ext.lower() not in (".mp4", ".gif"):
    raise app.UsageError(f"--out must end in .mp4 or .gif, got {out!r}.")
  paths = {}
  for i in range(n):
    base = stem if n == 1 else f"{stem}_{i}"
    paths[(i, None)] = base + ext
    if save_stages:
      paths.update({(i, s): f"{base}_{s}{ext}" for s in stages})
  return paths


class StageTimes:
  """A `Cascade.sample(progress=...)` callback that prints one line per stage.

  A stage's time runs from its first progress call (before it samples) to its last
  (after its last chunk of frames is computed: the cascade waits for the device before
  each progress call after the first).
  """

  def __init__(self, stages, stream=None):
    self._stages = {s.name: s for s in stages}
    self._stream = stream
    self._current: tuple[str, int, float] | None = None  # (stage, chunks, start time)

  def __call__(self, stage: str, done: int, total: int) -> None:
    if done == 0:
      self.finish()
      self._current = (stage, total, time.perf_counter())
    elif done == total:
      self.finish()

  def finish(self) -> None:
    """Prints the running stage's line (no-op when none is running)."""
    if self._current is None:
      return
    name, chunks, t0 = self._current
    self._current = None
    stage = self._stages[name]
    frames, height, width, fps = stage.output
    per = f" per chunk of {stage.frame_chunk} frames" if chunks > 1 else ""
    print(f"{name:>6}: {frames} frames {height}x{width} at {fps:g} fps, "
          f"{stage.sample.num_steps} {stage.sample.sampler} steps{per}, "
          f"{time.perf_counter() - t0:.2f} s", file=self._stream or sys.stderr, flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.perf_counter()
  quiet_library_logs()
  prompts = _prompts()
  enable_compilation_cache()

  from videojax.cascade.chain import Cascade
  from videojax.io.video import write_video

  cascade = Cascade.load(_CASCADE.value)  # validates the chain before any compute
  names = [s.name for s in cascade.stages]
  out = _OUT.value
  stem, ext = os.path.splitext(out)
  for k in range(1, 10_000):  # never over an earlier result: the next free name
    paths = output_paths(out, len(prompts), names, _SAVE_STAGES.value)
    if _OVERWRITE.value or not any(os.path.exists(p) for p in paths.values()):
      break
    out = f"{stem}-{k}{ext}"

  times = StageTimes(cascade.stages)
  videos = cascade.sample(prompts, seed=_SEED.value, keep_stages=True, progress=times)
  times.finish()
  outputs = {s.name: s.output for s in cascade.stages}  # (frames, height, width, fps)
  for n, ((i, stage), path) in enumerate(paths.items(), 1):
    name = stage or names[-1]
    write_video(path, videos[name][i], outputs[name][3], overwrite=_OVERWRITE.value)
    frames, height, width, fps = outputs[name]
    line = f"Wrote {path}: {frames} frames, {height}x{width}, {fps:g} fps"
    if n == len(paths):
      took = time.perf_counter() - start
      line += f" in {took:.1f} s" if n == 1 else f" ({n} videos in {took:.1f} s)"
    print(line, flush=True)


if __name__ == "__main__":
  app.run(main)
