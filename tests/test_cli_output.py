"""What the sample command prints: one line per stage, then the file written; no
library noise (JAX's platform probing) and no unsafe-fork warning from the video writer."""

import os
import re
import subprocess
import sys

import jax

from videojax.io.video import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a red circle moving left on a black background"


def test_sample_command_prints_stages_and_the_file_it_wrote(tmp_path):
  env = dict(os.environ, VIDEOJAX_JAX_CACHE=jax.config.jax_compilation_cache_dir or "")
  # With no platform configured JAX probes every installed backend (e.g. a TPU plugin
  # without a TPU), which is where "Unable to initialize backend" comes from.
  env.pop("JAX_PLATFORMS", None)
  out = str(tmp_path / "video.mp4")
  run = subprocess.run(
      [sys.executable, "-m", "experiments.sample", "--cascade", "configs/cascades/tiny.py",
       "--prompt", PROMPT, "--out", out], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  both = run.stdout + run.stderr
  assert "os.fork()" not in both
  assert "Unable to initialize backend" not in both
  assert "\r" not in both  # no progress bars redrawn in place
  # One line per stage, in order, with its video, steps and time (configs/cascades/tiny.py).
  stages = re.findall(r"^ *(\w+): (\d+) frames (\d+)x(\d+) at ([\d.]+) fps, (\d+) ddim steps"
                      r"[^,]*, [\d.]+ s$", run.stderr, re.M)
  assert stages == [("base", "4", "8", "8", "4", "4"), ("tsr", "8", "8", "8", "8", "2"),
                    ("ssr", "8", "16", "16", "8", "2")]
  assert "per chunk of 4 frames" in run.stderr  # the tiny SSR stage samples 4 frames at a time
  lines = run.stdout.strip().splitlines()
  assert len(lines) == 1
  assert re.fullmatch(re.escape(f"Wrote {out}: 8 frames, 16x16, 8 fps in ") + r"[\d.]+ s",
                      lines[-1]), lines[-1]
  video, fps = read_video(out)
  assert video.shape == (8, 16, 16, 3) and fps == 8.0
