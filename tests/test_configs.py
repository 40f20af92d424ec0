"""Stage configs: every variant loads, its data view matches its U-Net, and the command
line refuses fields that do not exist."""

import importlib
import os
import subprocess
import sys

import pytest

from configs import common, unet3d
from videojax.cascade.sampling import SampleSettings
from videojax.nn.unet3d import from_config
from videojax.train.trainer import _view

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("base", "tsr", "ssr", "interpolation")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("variant", common.VARIANTS)
def test_stage_config_is_consistent(stage, variant):
  c = importlib.import_module(f"configs.{stage}").get_config(variant)
  view = _view(c.data)  # validates the view (factors divide the sizes)
  model = from_config(c.model)
  expected = {"base": "none", "tsr": "tsr", "ssr": "ssr", "interpolation": "tsr"}[stage]
  assert model.cond == expected and view.kind == {"none": "base"}.get(expected, expected)
  # The network's down-sampling divides the view (and the crop it trains on).
  f = 2 ** (len(c.model.channel_mult) - 1)
  assert c.data.height % f == 0 and c.data.width % f == 0 and (c.data.crop or f) % f == 0
  if view.kind == "ssr":
    assert (c.data.crop or c.data.height) // c.data.spatial_factor % 1 == 0
  if variant != "imagen_video":  # the paper variants train on the user's own videos
    assert c.data.dataset == "moving_shapes"
  SampleSettings.from_config(c.sample)
  assert (c.optim.total_steps or c.train.num_steps) > c.optim.warmup_steps
  assert c.model.text_dim == {"t5": unet3d.T5_XXL_DIM, "minilm": 384}[c.text.encoder]


def test_demo_stages_chain():
  """base -> TSR -> SSR: each stage's input is the previous one's output."""
  base, tsr, ssr = (importlib.import_module(f"configs.{s}").get_config("demo")
                    for s in ("base", "tsr", "ssr"))
  assert (_view(tsr.data).input_frames, tsr.data.height) == (base.data.frames, base.data.height)
  assert tsr.data.fps == base.data.fps * tsr.data.temporal_factor
  assert ssr.data.frames == tsr.data.frames and ssr.data.fps == tsr.data.fps
  assert ssr.data.height // ssr.data.spatial_factor == tsr.data.height


def test_unknown_variant_and_dtype():
  with pytest.raises(ValueError, match="Unknown ssr variant 'huge'"):
    importlib.import_module("configs.ssr").get_config("huge")
  c = importlib.import_module("configs.base").get_config("tiny")
  c.model.dtype = "bfloat17"
  with pytest.raises(ValueError, match="model.dtype 'bfloat17' is not a dtype name"):
    from_config(c.model)


def test_cli_rejects_unknown_config_field(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config", "configs/base.py:tiny",
       "--workdir", str(tmp_path), "--config.train.num_stepz=5"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "num_stepz" in out.stderr
  assert not os.listdir(tmp_path)  # refused before anything was written
