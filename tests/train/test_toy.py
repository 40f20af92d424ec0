"""The toy end-to-end job: a tiny trained denoiser sampled through the real samplers."""

import json
import os

import pytest

from configs import toy2d as toy_config
from videojax.train import toy


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  config = toy_config.get_config("tiny")
  workdir = str(tmp_path_factory.mktemp("toy"))
  return config, workdir, toy.train_and_evaluate(config, workdir)


def test_tiny_training_learns_the_data_and_its_classes(tiny_run):
  _, workdir, metrics = tiny_run
  assert os.path.getsize(os.path.join(workdir, "samples.png")) > 10_000
  assert json.load(open(os.path.join(workdir, "metrics.json")))["samplers"].keys() == \
      set(toy.diffusion.SAMPLERS)
  noise = metrics["swd_gaussian_noise"]
  for name, m in metrics["samplers"].items():
    # Far closer to the data than the starting noise, and on the asked-for class.
    assert m["swd"] < 0.25 * noise, (name, m["swd"], noise)
    assert m["class_accuracy"] > 0.9, (name, m)


def test_training_repeats_exactly(tiny_run):
  config, _, metrics = tiny_run
  config = config.copy_and_resolve_references()
  config.train.num_steps = 2 * config.train.log_every
  model, schedule, tx = toy.build(config)
  import jax.numpy as jnp
  from videojax.data.toy2d import sample_points
  pts, lbl = sample_points(config.dataset, 1000)
  losses = []
  for _ in range(2):
    chunk = toy.make_train_chunk(model, schedule, tx, config, jnp.asarray(pts), jnp.asarray(lbl))
    state, loss = chunk(toy.init_state(model, tx, config.seed))
    losses.append(float(loss))
  assert losses[0] == losses[1]


def test_bad_config_names_fail_before_training():
  config = toy_config.get_config("tiny")
  config.sample.samplers = ("ddim", "euler_a")
  with pytest.raises(ValueError, match=r"Unknown sampler 'euler_a' in config.sample.samplers"):
    toy.build(config)
  config.sample.samplers = ("ddim",)
  config.train.warmup_steps = config.train.num_steps
  with pytest.raises(ValueError, match=r"warmup_steps \(300\) must be in \[0, num_steps = 300\)"):
    toy.build(config)
  with pytest.raises(ValueError, match="Unknown toy2d variant 'huge'"):
    toy_config.get_config("huge")
