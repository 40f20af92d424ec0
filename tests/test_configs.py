"""Stage configs: every variant loads, its stage kind and data view fit its network, and
the command line refuses fields that do not exist."""

import importlib
import os
import subprocess
import sys

import pytest

from configs import common, unet3d
from videojax.cascade.sampling import SampleSettings
from videojax.nn.denoisers import build
from videojax.nn.stage import StageNetwork
from videojax.train.trainer import _view

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("base", "tsr", "ssr", "interpolation")
# Every variant of every stage: the shared ones, plus Imagen Video's later SR stages.
STAGE_VARIANTS = [(s, v) for s in STAGES for v in common.VARIANTS] + [
    (s, v) for s in ("tsr", "ssr") for v in ("imagen_video2", "imagen_video3")]


@pytest.mark.parametrize("stage, variant", STAGE_VARIANTS)
def test_stage_config_is_consistent(stage, variant):
  c = importlib.import_module(f"configs.{stage}").get_config(variant)
  view = _view(c.data)  # validates the view (factors divide the sizes)
  network = StageNetwork.from_config(c)
  expected = {"base": "base", "tsr": "tsr", "ssr": "ssr", "interpolation": "tsr"}[stage]
  assert network.kind == view.kind == expected
  # The network's down-sampling divides the view (and the crop it trains on).
  f = 2 ** (len(c.model.channel_mult) - 1)
  assert c.data.height % f == 0 and c.data.width % f == 0 and (c.data.crop or f) % f == 0
  if view.kind == "ssr":
    # The view checks the training crop; sampling takes whole frames, whose low-resolution
    # input must be whole pixels too, and the crop must fit in the frame.
    sf = c.data.spatial_factor
    assert c.data.height % sf == 0 and c.data.width % sf == 0, (c.data.height, c.data.width, sf)
    assert c.data.crop <= min(c.data.height, c.data.width), (c.data.crop, c.data.height)
  if not variant.startswith("imagen_video"):  # the paper variants train on the user's own videos
    assert c.data.dataset == "moving_shapes"
  SampleSettings.from_config(c.sample)
  assert (c.optim.total_steps or c.train.num_steps) > c.optim.warmup_steps
  assert c.model.text_dim == {"t5": unet3d.T5_XXL_DIM, "minilm": 384}[c.text.encoder]


def test_demo_stages_chain():
  """base -> TSR -> SSR: each stage's input is the previous one's output."""
  base, tsr, ssr = (importlib.import_module(f"configs.{s}").get_config("demo")
                    for s in ("base", "tsr", "ssr"))
  tsr_in = (_view(tsr.data).input_frames, tsr.data.height, tsr.data.width)
  assert tsr_in == (base.data.frames, base.data.height, base.data.width)
  assert tsr.data.fps == base.data.fps * tsr.data.temporal_factor
  assert ssr.data.frames == tsr.data.frames and ssr.data.fps == tsr.data.fps
  sf = ssr.data.spatial_factor
  assert (ssr.data.height, ssr.data.width) == (sf * tsr.data.height, sf * tsr.data.width)


def test_unknown_variant_and_dtype():
  with pytest.raises(ValueError, match="Unknown ssr variant 'huge'"):
    importlib.import_module("configs.ssr").get_config("huge")
  c = importlib.import_module("configs.base").get_config("tiny")
  c.model.dtype = "bfloat17"
  with pytest.raises(ValueError, match="model.dtype 'bfloat17' is not a dtype name"):
    build(c.model)
  c.model.dtype, c.model.name = "float32", "unet4d"
  with pytest.raises(ValueError, match=r"Unknown denoiser model.name='unet4d'; registered: "
                                       r"\['unet3d'"):
    build(c.model)


def test_cli_rejects_unknown_config_field(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config", "configs/base.py:tiny",
       "--workdir", str(tmp_path), "--config.train.num_stepz=5"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "num_stepz" in out.stderr
  assert not os.listdir(tmp_path)  # refused before anything was written
