"""The evaluation harness: baselines are exact where they should be, and the evaluate
CLI writes its report for the tiny random cascade."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from videojax.eval import cascade_eval as E

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_perfect_stages_beat_baselines_and_identity_does_not():
  clips, caps = E.moving_shapes_clips("validation", 3, 8, 32)
  assert clips.shape == (3, 8, 32, 32, 3) and len(caps) == 3
  perfect = E.ssr_quality(lambda low, c: clips, clips, caps, 2)
  assert perfect["psnr"] == np.inf and perfect["ssim"] == 1.0
  assert np.isfinite(perfect["psnr_bicubic"]) and perfect["ssim_bicubic"] < 1.0
  # Bicubic projected onto the input-consistent videos comes closer to the truth.
  assert perfect["psnr_bicubic"] < perfect["psnr_bicubic_consistent"] < np.inf
  # A TSR stage that returns the linear blend scores exactly the blending baseline.
  from videojax.eval import quality
  blend = lambda given, c: np.stack([quality.blend_frames(g, 2, 8) for g in given])  # noqa
  r = E.tsr_quality(blend, clips, caps, 2)
  assert r["psnr"] == r["psnr_blend"] and r["ssim"] == r["ssim_blend"]
  small, _ = E.moving_shapes_clips("validation", 2, 4, 8)  # rendered at 16, downsampled
  assert small.shape == (2, 4, 8, 8, 3)


def test_held_out_prompts_are_held_out_pairs():
  test = E.prompts("test", 20)
  assert all(any(p in c for p in ("red triangle", "blue circle", "yellow square"))
             for c in test)
  assert not any("red triangle" in c for c in E.prompts("validation", 50))


def _evaluate(out_dir, *flags):
  env = dict(os.environ, VIDEOJAX_JAX_CACHE=jax.config.jax_compilation_cache_dir or "")
  run = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--cascade", "configs/cascades/tiny.py",
       "--out_dir", str(out_dir), "--num_clips", "2", *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  return json.load(open(out_dir / "results.json")), open(out_dir / "report.md").read()


def test_evaluate_cli_on_tiny_cascade(tmp_path):
  """Each part on its own (--parts picks what is measured; the default is both, whose
  report joins the two sections, checked below without sampling anything twice)."""
  from experiments import evaluate

  align, report = _evaluate(tmp_path / "alignment", "--num_prompts", "2", "--parts", "alignment")
  assert set(align["alignment"]) == {"validation", "held-out pairs"} and align["stages"] == {}
  assert all(0.0 <= r["all_correct"] <= 1.0 for r in align["alignment"].values())
  wrong = [sum(r["direction_errors"].values()) for r in align["alignment"].values()]
  assert wrong == [round(2 * (1 - r["direction"])) for r in align["alignment"].values()]
  assert "Direction errors, validation: opposite" in report
  assert "| validation | 2 |" in report and "Stage quality" not in report
  assert os.path.exists(tmp_path / "alignment" / "report.png")
  stages, report = _evaluate(tmp_path / "stages", "--parts", "stages")
  assert stages["alignment"] == {}  # stage quality alone samples no prompts
  assert "tsr on moving_shapes" in stages["stages"] and "ssr on moving_shapes" in stages["stages"]
  assert "| ssr on moving_shapes | 2 |" in report and "Text alignment" not in report
  assert "(bicubic_consistent)" in report
  assert os.path.exists(tmp_path / "stages" / "report.png")
  both = evaluate._report(dict(align, stages=stages["stages"]))
  assert "| validation | 2 |" in both and "| ssr on moving_shapes | 2 |" in both


def test_direction_errors_name_how_the_motion_went_wrong():
  from videojax.data import moving_shapes as ms
  from videojax.eval import alignment

  scenes = [ms.sample_example("validation", i) for i in range(6)]
  videos = [ms.render(s, 8, 32, 32) for s in scenes]
  caps = [s.caption for s in scenes]
  played = videos + [v[::-1] for v in videos] + [np.repeat(v[:1], 8, axis=0) for v in videos]
  records = alignment.score(played, caps * 3)["records"]
  assert all(r["correct"]["direction"] for r in records[:6])  # the ground truth reads right
  assert E.direction_errors(records) == {"opposite": 6, "other axis": 0, "still": 6,
                                         "no object": 0}
  turned = [np.rot90(v, axes=(1, 2)).copy() for v in videos]  # left <-> down, up <-> left
  assert E.direction_errors(alignment.score(turned, caps)["records"])["other axis"] == 6
