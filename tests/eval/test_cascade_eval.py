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


def test_evaluate_cli_on_tiny_cascade(tmp_path):
  env = dict(os.environ, VIDEOJAX_JAX_CACHE=jax.config.jax_compilation_cache_dir or "")
  run = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--cascade", "configs/cascades/tiny.py",
       "--out_dir", str(tmp_path), "--num_prompts", "2", "--num_clips", "2"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.load(open(tmp_path / "results.json"))
  assert set(results["alignment"]) == {"validation", "held-out pairs"}
  assert all(0.0 <= r["all_correct"] <= 1.0 for r in results["alignment"].values())
  assert "tsr on moving_shapes" in results["stages"] and "ssr on moving_shapes" in results[
      "stages"]
  report = open(tmp_path / "report.md").read()
  assert "| validation | 2 |" in report and "| ssr on moving_shapes | 2 |" in report
  assert os.path.exists(tmp_path / "report.png")
  # --parts picks what is measured: stage quality alone samples no prompts.
  run = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--cascade", "configs/cascades/tiny.py",
       "--out_dir", str(tmp_path / "stages"), "--num_clips", "2", "--parts", "stages"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.load(open(tmp_path / "stages" / "results.json"))
  assert results["alignment"] == {} and "ssr on moving_shapes" in results["stages"]
  report = open(tmp_path / "stages" / "report.md").read()  # no empty alignment section
  assert "Text alignment" not in report and "Stage quality" in report
