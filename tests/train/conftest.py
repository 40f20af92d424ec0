"""Shared trainer-test setup: one built moving_shapes 'tiny' dataset (and its MiniLM
caption cache) per test worker, and the tiny base config that trains on it."""

import pytest

from configs import base as base_config


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A tfds data dir; the trainer builds the dataset and text cache there on first use."""
  return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(data_dir: str, steps: int, one_level: bool = False):
  """The tiny base config on one device, logging and checkpointing often.

  `one_level`: the U-Net cut to its first level, without spatial attention, for tests
  of the training loop rather than of the model: a smaller tree traces, compiles and
  saves faster (orbax costs ~2 ms per array here), and those tests share its programs.
  """
  c = base_config.get_config("tiny")
  if one_level:
    c.model.update(channel_mult=(1,), temporal_conv_levels=(0,), spatial_attn_levels=(),
                   temporal_attn_levels=(0,), cross_attn_levels=(0,), temporal_downsample=())
  c.data.data_dir = data_dir
  c.train.num_steps = steps
  c.mesh.num_devices = 1  # the loop, not sharding (tests/train/test_step.py does that)
  c.optim.total_steps = 40
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.eval_every = 20
  c.train.preview_every = 0
  return c
