"""What the commands print at the default verbosity.

experiments.sample: one line per stage, then the file written; no library noise (JAX's
platform probing) and no unsafe-fork warning from the video writer.
experiments.train: the parameter overview, one line per logging step, one per
checkpoint, the final metrics once; no Orbax INFO lines.
"""

import os
import re
import subprocess
import sys

import flax
import jax

from tests.train.conftest import tiny_config, tiny_data_dir  # noqa: F401 (a fixture)
from videojax.io.video import read_video
from videojax.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a red circle moving left on a black background"
# absl's prefix: severity, date, time, thread, file:line.
_ABSL = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\] (.*)$")
_TABLE = re.compile(r"^(module +arrays +params +share|\S+ +\d+ +[\d,]+ +[\d.]+%)$")


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


def _flags(config):
  """--config.x=y flags for a config's scalars and flat tuples of numbers."""
  for k, v in flax.traverse_util.flatten_dict(config.to_dict(), sep=".").items():
    if k.split(".")[0] not in ("data", "train", "optim", "mesh", "model"):
      continue
    if isinstance(v, (tuple, list)):
      if all(isinstance(e, (int, float)) for e in v):
        yield f"--config.{k}={tuple(v)!r}"
    elif v is not None and v != "":
      yield f"--config.{k}={v}"


def test_train_command_prints_steps_checkpoints_and_metrics_once(tiny_data_dir,  # noqa: F811
                                                                  tmp_path):
  config = tiny_config(tiny_data_dir, 4, one_level=True)
  config.train.update(log_every=2, checkpoint_every=2, eval_every=4, eval_batches=1)
  trainer.stage_datasets(config)("train", 0)  # dataset and text cache built here, not logged
  env = dict(os.environ, VIDEOJAX_JAX_CACHE=jax.config.jax_compilation_cache_dir or "")
  env.pop("JAX_PLATFORMS", None)  # JAX probes every backend (see the test above)
  workdir = str(tmp_path / "run")
  run = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config", "configs/base.py:tiny",
       "--workdir", workdir, *_flags(config)], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  logged = [_ABSL.match(l) for l in run.stderr.splitlines()]
  infos = [(m.group(2), m.group(3)) for m in logged if m and m.group(1) == "I"]
  # Only our own INFO lines: Orbax's (~50 per save) and JAX's are quieted.
  assert {f for f, _ in infos} == {"trainer.py", "checkpoint.py"}, infos
  steps = [msg for f, msg in infos if msg.startswith("step ")]
  assert [s.split()[1] for s in steps] == ["2/4", "4/4"]
  assert all(re.search(r"loss [\d.]+ .* steps/s ETA \d+s$", s) for s in steps), steps
  saves = [msg for f, msg in infos if f == "checkpoint.py"]
  assert saves == [f"Saving checkpoint step {s} to {workdir}/checkpoints/{s}" for s in (2, 4)]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  # Every other stderr line belongs to the parameter overview's table.
  other = [l for l, m in zip(run.stderr.splitlines(), logged) if not m]
  assert other and all(_TABLE.match(l) for l in other), other
  assert other[-1].startswith("total")
  assert len(infos) == 1 + 2 + 2  # overview header, 2 steps, 2 checkpoints
  # The final metrics, once, on stdout.
  assert (run.stdout + run.stderr).count("final metrics") == 1
  assert (run.stdout + run.stderr).count("eval_loss_logsnr0") == 1  # in no other form either
  assert re.fullmatch(r"final metrics: .*\bloss [\d.e-]+, .*eval_loss_logsnr0 [\d.e-]+.*\n",
                      run.stdout), run.stdout
