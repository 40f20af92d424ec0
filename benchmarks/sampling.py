r"""Sampling speed of a cascade per stage and end to end, and quality against steps.

  python -m benchmarks.sampling [--cascade configs/cascades/demo.py] [--repeats 5] \
      [--prompts 32] [--steps 4,8,16,32,64,200] [--out benchmarks/results/sampling_quality.md]

Speed: seconds per video of every stage and of the whole chain at batch 1 and batch 8,
medians of `--repeats` warm runs (the first run, which compiles or loads the compiled
programs, is excluded and reported separately as "first call").

Quality against steps: the base stage's text alignment (the `experiments.evaluate`
judge: background, colour, shape, direction, one object, all correct) on `--prompts`
random validation prompts, for DDIM and DPM-Solver++ at each of `--steps`, with the
stage's other sampling settings (guidance, thresholding). The base stage is where the
number of steps decides what the video shows; the SR stages are conditioned on it and
start near the clean end, where halving their steps (TSR 16 -> 8, SSR 8 -> 4) moved
their PSNR by under 0.05 dB. A table and a plot (`<out>.png`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import jax
import numpy as np

from videojax.cascade.chain import DEFAULT_CASCADE, Cascade
from videojax.cascade.stages import load_config_file
from videojax.eval import alignment
from videojax.eval import cascade_eval
from videojax.runtime import enable_compilation_cache

PROMPT = "a red circle moving left on a black background"


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def speed(cascade: Cascade, batch: int, repeats: int) -> dict[str, dict[str, float]]:
  """{stage or 'chain': {'first': s, 'median': s per call}} at `batch` prompts."""
  prompts = [PROMPT] * batch
  out: dict[str, dict[str, float]] = {}
  video = None
  for i, stage in enumerate(cascade.stages):  # each stage on the previous stage's video

    def run(name=stage.name, given=video, i=i):
      return cascade.sample_stage(name, prompts, given, seed=i)  # text encoding included

    first = _timed(run)
    times = [_timed(run) for _ in range(repeats)]
    out[stage.name] = {"first": first, "median": statistics.median(times)}
    video = run()
  times = [_timed(lambda: cascade.sample(prompts, seed=0)) for _ in range(repeats)]
  out["chain"] = {"first": sum(v["first"] for v in out.values()),
                  "median": statistics.median(times)}
  return out


def quality(config_path: str, samplers: list[str], steps: list[int], num_prompts: int
            ) -> dict[tuple[str, int], dict[str, float]]:
  """Base-stage alignment for each (sampler, steps)."""
  captions = cascade_eval.prompts("validation", num_prompts, seed=0)
  results = {}
  for sampler in samplers:
    for n in steps:
      config = load_config_file(config_path)
      config.stages[config.order[0]].sample.sampler = sampler
      config.stages[config.order[0]].sample.num_steps = n
      cascade = Cascade.load(config)
      start = time.perf_counter()
      videos = cascade.sample_stage(config.order[0], captions, seed=0)
      scores = alignment.score(videos, captions)
      results[(sampler, n)] = {a: float(scores[a]) for a in alignment.ATTRIBUTES} | {
          "all_correct": float(scores["all_correct"]),
          "seconds": time.perf_counter() - start}
      print(sampler, n, results[(sampler, n)], flush=True)
  return results


def _plot(results, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.2))
  for sampler in sorted({s for s, _ in results}):
    xs = sorted(n for s, n in results if s == sampler)
    ax.plot(xs, [results[(sampler, n)]["all_correct"] for n in xs], "o-", label=sampler)
  ax.set_xscale("log")
  ax.set_xlabel("sampling steps")
  ax.set_ylabel("base stage: all correct")
  ax.set_ylim(0, 1)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cascade", default=DEFAULT_CASCADE)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--prompts", type=int, default=32)
  parser.add_argument("--steps", default="4,8,16,32,64,200")
  parser.add_argument("--samplers", default="ddim,dpm_solver_pp")
  parser.add_argument("--parts", default="speed,quality",
                      help="what to measure: speed, quality or both (comma-separated)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  enable_compilation_cache()
  cascade = Cascade.load(args.cascade)
  parts = args.parts.split(",")
  lines = [f"jax {jax.__version__} ({jax.devices()[0].platform}), {os.cpu_count()} CPU "
           f"threads on {platform.processor() or platform.machine()}; cascade "
           f"{args.cascade}; medians of {args.repeats} warm runs.", "",
           "| stage | settings | batch | first call (s) | s per call | s per video |",
           "|---|---|---|---|---|---|"] if "speed" in parts else []
  for batch in (1, 8) if "speed" in parts else ():
    for name, t in speed(cascade, batch, args.repeats).items():
      stage = next((s for s in cascade.stages if s.name == name), None)
      settings = ("-" if stage is None else
                  ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(stage.sample).items()
                            if k in ("sampler", "num_steps", "guidance_scale")))
      lines.append(f"| {name} | {settings} | {batch} | {t['first']:.2f} | {t['median']:.2f} | "
                   f"{t['median'] / batch:.3f} |")
      print(lines[-1], flush=True)
  results = {}
  if "quality" in parts:
    steps = [int(s) for s in args.steps.split(",")]
    results = quality(args.cascade, args.samplers.split(","), steps, args.prompts)
  attrs = list(alignment.ATTRIBUTES) + ["all_correct"]
  lines += [] if not results else ["", f"Base stage, {args.prompts} validation prompts:", "",
            "| sampler | steps | " + " | ".join(attrs) + " | seconds |",
            "|---" * (len(attrs) + 3) + "|"]
  for (sampler, n), r in results.items():
    lines.append(f"| {sampler} | {n} | " + " | ".join(f"{r[a]:.2f}" for a in attrs) +
                 f" | {r['seconds']:.1f} |")
  text = "\n".join(lines)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write("# Sampling: speed per stage and quality against steps\n\n"
              "```\npython -m benchmarks.sampling " + " ".join(
                  f"--{k}={v}" for k, v in vars(args).items() if v is not None) +
              "\n```\n\n" + text + "\n")
    if results:
      _plot(results, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
  main()
