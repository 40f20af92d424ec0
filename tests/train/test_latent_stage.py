"""Latent stages: a stage that diffuses in an autoencoder's latent space (here the
exactly invertible space-to-depth 'patchify') trains, samples through the cascade, can be
followed by a pixel stage, and is refused what only makes sense on pixels."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.train.conftest import tiny_config
from videojax.cascade import stages as S
from videojax.cascade.chain import Cascade
from videojax.nn.autoencoders import LatentSpace, Patchify
from videojax.nn.stage import StageNetwork
from videojax.train import step as step_lib
from videojax.train import trainer

PROMPT = "a red circle moving left on a black background"


def test_patchify_is_an_exact_inverse_pair_and_checks_shapes():
  video = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 8, 12, 3), minval=-1, maxval=1)
  space = LatentSpace(Patchify(spatial_factor=2, channels=3))
  latents = space.encode(video)
  assert latents.shape == space.latent_shape(video.shape) == (2, 3, 4, 6, 12)
  np.testing.assert_array_equal(space.decode(latents), video)
  # each latent pixel holds its 2x2 patch: the top-left pixel's channels come first
  np.testing.assert_array_equal(latents[:, :, 1, 2, :3], video[:, :, 2, 4])
  np.testing.assert_array_equal(latents[:, :, 1, 2, 3:6], video[:, :, 2, 5])
  with pytest.raises(ValueError, match=r"\(T, H, W\) = \(3, 9, 12\) do not divide"):
    space.latent_shape((1, 3, 9, 12, 3))
  with pytest.raises(ValueError, match="Unknown autoencoder 'vae9'"):
    LatentSpace.from_config({"name": "vae9"})
  assert LatentSpace.from_config({"name": ""}) is None


def test_latent_stage_diffuses_the_latents_of_its_clips():
  config = S.load_config_file("configs/base.py:tiny_latent")
  network = StageNetwork.from_config(config)
  video = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 8, 8, 3), minval=-1, maxval=1)
  target = step_lib.diffusion_target(network, {"video": video}, residual=False)
  np.testing.assert_array_equal(target, Patchify(2, 3).encode(video))
  config.model.in_channels = config.model.out_channels = 3
  with pytest.raises(ValueError, match="must take the autoencoder's 12 latent channels"):
    StageNetwork.from_config(config)


def test_latent_stage_trains_and_a_pixel_stage_follows_it(tiny_data_dir, tmp_path):
  c = tiny_config(tiny_data_dir, 30, one_level=True)
  latent = S.load_config_file("configs/base.py:tiny_latent")
  c.autoencoder, c.sample = latent.autoencoder, latent.sample
  c.model.in_channels = c.model.out_channels = 12
  out = trainer.train_and_evaluate(c, str(tmp_path / "latent"))
  assert np.isfinite(out["loss"]) and all(np.isfinite(out[k]) for k in out
                                          if k.startswith("eval_loss"))

  cascade = S.load_config_file("configs/cascades/tiny.py")
  cascade.order = ("base", "tsr")  # latent base -> pixel TSR (random weights)
  cascade.stages.base.checkpoint = str(tmp_path / "latent")
  cascade.stages.base.config = ""  # the config recorded with the checkpoint
  cascade.stages.base.sample.threshold = "none"
  model = Cascade.load(cascade)
  base = model.sample_stage("base", [PROMPT], seed=0)
  assert base.shape == (1, 4, 8, 8, 3) and base.std() > 5  # decoded: a picture
  video = model.sample([PROMPT], seed=0)
  assert video.shape == (1, 8, 8, 8, 3) and video.dtype == np.uint8

  # Thresholding acts on pixels: a latent stage that asks for it is refused up front.
  cascade.stages.base.sample.threshold = "dynamic"
  with pytest.raises(ValueError, match="Thresholding and sample.consistency act on pixels"):
    Cascade.load(cascade)


def test_chain_checks_a_latent_stage_output_against_its_autoencoder():
  c = S.load_config_file("configs/cascades/tiny.py").to_dict()
  c["stages"]["base"]["config"] = S.load_config_file("configs/base.py:tiny_latent")
  c["stages"]["base"]["config"].autoencoder.spatial_factor = 3  # 8x8 frames: 8 % 3 != 0
  c["stages"]["base"]["config"].model.in_channels = 27
  c["stages"]["base"]["config"].model.out_channels = 27
  with pytest.raises(ValueError, match=r"Stage 'base': Videos of \(T, H, W\) = \(4, 8, 8\) "
                                       r"do not divide"):
    S.stages_from_config(ml_collections.ConfigDict(c))
