"""The trainer end to end on moving_shapes (tiny): loss, evaluation, checkpoints, resume."""

import os

import numpy as np
import pytest

from configs import base as base_config
from videojax.train import trainer


def _config(tmp, steps):
  c = base_config.get_config("tiny")
  c.data.data_dir = str(tmp / "tfds")
  c.train.num_steps = steps
  c.mesh.num_devices = 1  # the loop, not sharding (tests/train/test_step.py does that)
  c.optim.total_steps = 40
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.eval_every = 20
  return c


def test_train_resume_equals_uninterrupted(tmp_path):
  straight = trainer.train_and_evaluate(_config(tmp_path, 20), str(tmp_path / "a"))
  assert np.isfinite(straight["loss"]) and "eval_loss_logsnr0" in straight
  assert os.listdir(tmp_path / "a" / "tensorboard")
  # Stop at 10, then resume to 20 in the same workdir: the same parameters as straight.
  trainer.train_and_evaluate(_config(tmp_path, 10), str(tmp_path / "b"))
  resumed = trainer.train_and_evaluate(_config(tmp_path, 20), str(tmp_path / "b"))
  assert resumed["loss"] == straight["loss"]
  from videojax.train.checkpoint import Checkpointer
  a = Checkpointer(str(tmp_path / "a" / "checkpoints"), save_every=10, keep=3)
  b = Checkpointer(str(tmp_path / "b" / "checkpoints"), save_every=10, keep=3)
  assert a.latest_step() == b.latest_step() == 20


def test_non_finite_loss_stops_and_writes_nothing_after(tmp_path):
  c = _config(tmp_path, 20)
  c.train.checkpoint_every = 1
  c.optim.learning_rate = float("nan")  # the first update makes every parameter NaN
  with pytest.raises(FloatingPointError,
                     match=r"Non-finite loss nan at step 2; last good checkpoint: step 1"):
    trainer.train_and_evaluate(c, str(tmp_path / "nan"))
  from videojax.train.checkpoint import Checkpointer
  assert Checkpointer(str(tmp_path / "nan" / "checkpoints"), save_every=1,
                      keep=3).all_steps() == [1]
