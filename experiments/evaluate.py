r"""Evaluates a cascade: text alignment on moving_shapes and per-stage SR quality.

  python -m experiments.evaluate --out_dir outputs/eval_demo
  python -m experiments.evaluate --cascade configs/cascades/demo.py --num_prompts 256
  python -m experiments.evaluate --parts stages --cascade.stages.tsr.checkpoint=runs/tsr

Writes OUT_DIR/report.md (tables), OUT_DIR/results.json and OUT_DIR/report.png (plot),
plus a few sample videos (GIF) per prompt set.
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from videojax.runtime import enable_compilation_cache, quiet_library_logs

_CASCADE = config_flags.DEFINE_config_file(
    "cascade", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "cascades", "demo.py"),
    "Cascade config file.", lock_config=True)
_OUT_DIR = flags.DEFINE_string("out_dir", "outputs/evaluate", "Report directory.")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 256, "Prompts per prompt set.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 32, "Clips per stage-quality set.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Prompts per sampling call.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed (prompts and sampling).")
_PARTS = flags.DEFINE_multi_enum("parts", ["alignment", "stages"], ["alignment", "stages"],
                                 "What to measure: text alignment, SR stage quality.")

ATTRS = ("background", "color", "shape", "direction", "single_object", "all_correct")


def _plot(results, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  parts = [p for p in ("alignment", "stages") if results[p]]  # the measured parts only
  fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 3.6), squeeze=False)
  axes = dict(zip(parts, axes[0]))
  width = 0.38
  if "alignment" in axes:
    ax = axes["alignment"]
    for k, (name, r) in enumerate(results["alignment"].items()):
      ax.bar([i + k * width for i in range(len(ATTRS))], [r[a] for a in ATTRS], width,
             label=name)
    ax.set_xticks([i + width / 2 for i in range(len(ATTRS))], ATTRS, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_title("text alignment (fraction correct)")
    ax.legend()
  if "stages" in axes:
    ax = axes["stages"]
    labels, ours, base = [], [], []
    for key, r in results["stages"].items():
      ref = "psnr_bicubic" if "psnr_bicubic" in r else "psnr_blend"
      labels.append(key)
      ours.append(r["psnr"])
      base.append(r[ref])
    ax.bar([i for i in range(len(labels))], ours, width, label="stage")
    ax.bar([i + width for i in range(len(labels))], base, width,
           label="baseline (bicubic / frame blending)")
    ax.set_xticks([i + width / 2 for i in range(len(labels))], labels, rotation=20)
    ax.set_title("PSNR (dB)")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def _report(results) -> str:
  lines = ["# Cascade evaluation", "", f"Cascade: `{results['cascade']}`", ""]
  if results["alignment"]:
    lines += ["## Text alignment (moving_shapes, judged from pixels)", "",
              "| prompts | n | " + " | ".join(ATTRS) + " |",
              "|---|---|" + "---|" * len(ATTRS)]
    for name, r in results["alignment"].items():
      lines.append(f"| {name} | {r['count']} | " +
                   " | ".join(f"{r[a]:.3f}" for a in ATTRS) + " |")
    lines.append("")
    for name, r in results["alignment"].items():
      errors = ", ".join(f"{k} {v}" for k, v in r.get("direction_errors", {}).items())
      lines.append(f"Direction errors, {name}: {errors}.  ")
    lines.append("")
  if results["stages"]:
    lines += ["## Stage quality (PSNR dB / SSIM against the ground truth)", "",
              "| stage on data | n | stage PSNR | baseline PSNR | stage SSIM | baseline SSIM |",
              "|---|---|---|---|---|---|"]
    for key, r in results["stages"].items():
      for b in ("bicubic", "bicubic_consistent", "blend"):
        if "psnr_" + b in r:
          lines.append(f"| {key} | {r['n']} | {r['psnr']:.2f} | {r['psnr_' + b]:.2f} ({b}) | "
                       f"{r['ssim']:.4f} | {r['ssim_' + b]:.4f} |")
    lines += ["", "TSR is measured on the frames it generates (given frames are copied); "
              "bicubic_consistent is bicubic made consistent with the low-resolution input "
              "(`conditioning.project_to_low_res`).", ""]
  lines += ["![report](report.png)", ""]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  enable_compilation_cache()
  from videojax.cascade.chain import Cascade
  from videojax.eval import cascade_eval as E
  from videojax.io.video import write_video

  os.makedirs(_OUT_DIR.value, exist_ok=True)
  cascade = Cascade.load(_CASCADE.value)
  results = {"cascade": str(_CASCADE.value.order), "alignment": {}, "stages": {}}
  splits = (("validation", "validation"), ("held-out pairs", "test"))
  for name, split in splits if "alignment" in _PARTS.value else ():
    caps = E.prompts(split, _NUM_PROMPTS.value, seed=_SEED.value)
    r = E.text_alignment(cascade.sample, caps, _BATCH.value, seed=_SEED.value)
    for i in range(min(4, len(caps))):
      write_video(os.path.join(_OUT_DIR.value, f"{split}_{i}.gif"), r["videos"][i],
                  cascade.stages[-1].output[3], overwrite=True)
    results["alignment"][name] = ({a: float(r[a]) for a in ATTRS} | {"count": len(caps)}
                                  | {"direction_errors": r["direction_errors"]})
    print(name, results["alignment"][name], flush=True)
  n = _NUM_CLIPS.value
  for stage in cascade.stages:
    if stage.kind == "base" or "stages" not in _PARTS.value:
      continue
    frames, size = stage.output[0], stage.output[1]
    run = lambda v, c, s=stage.name: cascade.sample_stage(s, c, v, seed=_SEED.value)  # noqa
    measure = E.ssr_quality if stage.kind == "ssr" else E.tsr_quality
    factor = (stage.config.data.spatial_factor if stage.kind == "ssr"
              else stage.config.data.temporal_factor)
    sets = {"moving_shapes": E.moving_shapes_clips("validation", n, frames, size, _SEED.value),
            "real mp4": (E.real_clips(frames, size), None)}
    for data, (clips, caps) in sets.items():
      if not len(clips):
        continue
      caps = caps or [""] * len(clips)
      r = {}
      for start in range(0, len(clips), _BATCH.value):
        part = measure(run, clips[start:start + _BATCH.value], caps[start:start + _BATCH.value],
                       factor)
        for k, v in part.items():
          r.setdefault(k, []).append(v)
      results["stages"][f"{stage.name} on {data}"] = (
          {k: float(sum(v) / len(v)) for k, v in r.items()} | {"n": len(clips)})
      print(stage.name, data, results["stages"][f"{stage.name} on {data}"], flush=True)
  with open(os.path.join(_OUT_DIR.value, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  _plot(results, os.path.join(_OUT_DIR.value, "report.png"))
  with open(os.path.join(_OUT_DIR.value, "report.md"), "w") as f:
    f.write(_report(results))
  print(_report(results))


if __name__ == "__main__":
  app.run(main)
