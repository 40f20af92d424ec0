"""Resume: a training process killed with SIGKILL while a checkpoint is being written,
resumed, stopped by SIGTERM (preemption), and resumed again ends with bitwise the same
parameters as a run that was never interrupted; a checkpoint resumes on another mesh; a checkpoint of
another model is refused, naming the keys.

The tests share one uninterrupted run (a module fixture). Resuming on another mesh
through the trainer is marked `slow` (run it with `-m slow`) to keep the default run
under CI's 10 minutes."""

import os
import shutil
import signal
import subprocess
import sys
import time

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train.conftest import tiny_config
from videojax.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12


def _config(data_dir, checkpoint_every=3):
  c = tiny_config(data_dir, STEPS, one_level=True)
  c.train.checkpoint_every = checkpoint_every
  c.train.keep_checkpoints = 2
  c.train.eval_every = 1000
  return c


def _start(workdir, data_dir):
  """experiments.train in a subprocess, with the same config as `_config`."""
  env = dict(os.environ, VIDEOJAX_JAX_CACHE=jax.config.jax_compilation_cache_dir or "")
  cmd = [sys.executable, "-m", "experiments.train", "--config", "configs/base.py:tiny",
         "--workdir", workdir]
  cmd += [f"--config.{k}={v}" for k, v in _flat(_config(data_dir).to_dict())
          if k.split(".")[0] in ("data", "train", "optim", "mesh", "model")]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _flat(d):
  """(dotted key, flag value) of a config dict: scalars, and flat tuples of numbers."""
  for k, v in flax.traverse_util.flatten_dict(d, sep=".").items():
    if isinstance(v, (tuple, list)):  # levels, noise levels (not the nested mesh rules)
      if all(isinstance(e, (int, float)) for e in v):
        yield k, repr(tuple(v))
    elif v is not None and v != "":  # None: the config's default (cannot be a flag)
      yield k, v


def _entries(ckpt_dir):
  return os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []


def _kill_when(proc, ckpt_dir, predicate, timeout=300):
  """Polls the checkpoint directory; SIGKILLs `proc` as soon as `predicate(entries)`."""
  t0 = time.time()
  while time.time() - t0 < timeout:
    entries = _entries(ckpt_dir)
    if predicate(entries):
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return entries
    if proc.poll() is not None:
      return None
    time.sleep(0.002)
  raise TimeoutError(f"Nothing matched in {ckpt_dir}: {_entries(ckpt_dir)}")


def _params(workdir, step=STEPS):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  return ocp.PyTreeCheckpointer().restore(path)["params"]


@pytest.fixture(scope="module")
def straight(tiny_data_dir, tmp_path_factory):
  """(workdir, final metrics) of the uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  # Saving does not change training; two saves (6, 12) instead of four.
  return workdir, trainer.train_and_evaluate(_config(tiny_data_dir, checkpoint_every=6), workdir)


def test_resume_after_sigkill_and_sigterm_is_bitwise_exact(tiny_data_dir, tmp_path, straight):
  straight, _ = straight

  work = str(tmp_path / "killed")
  ckpt = os.path.join(work, "checkpoints")
  # 1. Kill while a checkpoint is being written: orbax writes into a temporary
  #    directory and renames it when complete. Saves come every 3 steps and take
  #    seconds; try until a kill lands inside one.
  during_save = None
  for _ in range(5):
    proc = _start(work, tiny_data_dir)
    during_save = _kill_when(proc, ckpt, lambda es: any("tmp" in e for e in es))
    if during_save is not None:
      break
  assert during_save is not None, "no kill landed during a save"
  assert any("tmp" in e for e in _entries(ckpt)), "the partial save should remain on disk"
  # 2. Resume, then SIGTERM (preemption) once step 6 is saved: the run saves the step
  #    it is at and exits 0.
  proc = _start(work, tiny_data_dir)
  t0 = time.time()
  while "6" not in _entries(ckpt) and proc.poll() is None and time.time() - t0 < 300:
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0 and "Stopped by signal at step" in err, err[-2000:]
  stopped_at = int(err.split("Stopped by signal at step ")[1].split()[0].rstrip(";."))
  assert 6 <= stopped_at < STEPS and str(stopped_at) in _entries(ckpt)
  # 3. Resume to the end (in this process: a fresh process resumed in 2).
  trainer.train_and_evaluate(_config(tiny_data_dir), work)

  a, b = _params(straight), _params(work)
  leaves_a = jax.tree_util.tree_flatten_with_path(a)[0]
  leaves_b = jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for (path, x), y in zip(leaves_a, leaves_b):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)
  # The partial save never became a checkpoint: only finalized step directories remain.
  assert sorted(e for e in _entries(ckpt) if e.isdigit()) == ["12", "9"]


@pytest.mark.slow
def test_resume_on_another_mesh(tiny_data_dir, tmp_path, straight):
  """End to end through the trainer (about a minute: a second program to compile); its
  parts are in the default run: tests/train/test_checkpoint.py restores onto other
  meshes bitwise, tests/train/test_step.py checks the sharded step."""
  straight, straight_metrics = straight
  # A checkpoint written on one device resumes on a 2-device fsdp mesh: from step 6 to
  # 12 it computes the same as the uninterrupted run, up to float reassociation.
  other = str(tmp_path / "other_mesh")
  shutil.copytree(straight, other)
  shutil.rmtree(os.path.join(other, "checkpoints", str(STEPS)))
  c = _config(tiny_data_dir)
  c.mesh.num_devices, c.mesh.data, c.mesh.fsdp = 2, 1, 2
  metrics = trainer.train_and_evaluate(c, other)
  np.testing.assert_allclose(metrics["loss"], straight_metrics["loss"], rtol=1e-3)


def test_refuse_another_model_and_export(tiny_data_dir, tmp_path, straight):
  straight, _ = straight
  # A checkpoint of another model is refused before anything is written.
  c = _config(tiny_data_dir)
  c.model.base_channels = 8
  with pytest.raises(ValueError,
                     match=r"(?s)does not match the target state; \d+ differing key.*params"):
    trainer.train_and_evaluate(c, straight)
  assert sorted(e for e in _entries(os.path.join(straight, "checkpoints")) if e.isdigit()) == \
      ["12", "6"]

  # Export for sampling: float16 EMA weights + config; never over an existing export.
  from videojax.cascade import weights
  out = str(tmp_path / "export")
  weights.export(straight, out)
  exported, config = weights.load(out)
  direct, _ = weights.load(straight)  # a training workdir loads too (float32, exact)
  ema = ocp.PyTreeCheckpointer().restore(
      os.path.join(straight, "checkpoints", str(STEPS), "state"))["ema_params"]
  for a, b, c in zip(jax.tree.leaves(exported), jax.tree.leaves(direct), jax.tree.leaves(ema)):
    np.testing.assert_array_equal(b, np.asarray(c))
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # float16 storage
  assert config.model.base_channels == _config(tiny_data_dir).model.base_channels
  # The config alone (no arrays read) is the same from the export and the workdir.
  assert weights.load_config(out).to_dict() == weights.load_config(straight).to_dict() == \
      config.to_dict()
  with pytest.raises(FileExistsError, match="exists; export into a new directory"):
    weights.export(straight, out)
