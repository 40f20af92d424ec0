"""Losses: closed forms, invariance of weightings across spaces, frame masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.diffusion import losses as L
from videojax.diffusion import parameterization as P

SHAPE = (4, 6, 4, 4, 3)  # [B, T, H, W, C]
LOGSNR = jnp.array([-6.0, -1.0, 2.0, 7.0])


def _data(seed=0):
  kx, ke, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.uniform(kx, SHAPE, minval=-1.0, maxval=1.0)
  eps = jax.random.normal(ke, SHAPE)
  noise = 0.3 * jax.random.normal(kp, SHAPE)  # a network's error, in x0 space
  return x, eps, noise


@pytest.mark.parametrize("kind", P.PARAMETERIZATIONS)
def test_perfect_prediction_has_zero_loss(kind):
  x, eps, _ = _data()
  pred = P.regression_target(kind, x, eps, LOGSNR)
  for weighting in L.WEIGHTINGS:
    loss = L.diffusion_loss(pred, x, eps, LOGSNR, parameterization=kind, weighting=weighting)
    np.testing.assert_allclose(loss, 0.0, atol=1e-9)


def test_uniform_eps_loss_closed_form():
  x, eps, _ = _data()
  loss = L.diffusion_loss(eps + 0.25, x, eps, LOGSNR, parameterization="eps")
  np.testing.assert_allclose(loss, 0.0625, rtol=1e-6)


@pytest.mark.parametrize("weighting", ["snr", "min_snr", "truncated_snr"])
def test_snr_weightings_agree_in_every_loss_space(weighting):
  # One imperfect x0 prediction, expressed as a v-prediction; its weighted loss must
  # not depend on the space the MSE is taken in.
  x, eps, err = _data()
  z = P.diffuse(x, eps, LOGSNR)
  pred_v = P.convert(x + err, "x0", "v", z, LOGSNR)
  losses = [L.diffusion_loss(pred_v, x, eps, LOGSNR, parameterization="v",
                             loss_space=space, weighting=weighting, gamma=5.0)
            for space in P.PARAMETERIZATIONS]
  np.testing.assert_allclose(losses[0], losses[1], rtol=2e-4)
  np.testing.assert_allclose(losses[0], losses[2], rtol=2e-4)
  # and it is the x0-space error times the named x0 weight
  snr = np.exp(np.asarray(LOGSNR))
  w = {"snr": snr, "min_snr": np.minimum(snr, 5.0), "truncated_snr": np.maximum(snr, 1.0)}
  mse_x0 = np.mean(np.square(np.asarray(err)).reshape(4, -1), axis=1)
  np.testing.assert_allclose(losses[1], w[weighting] * mse_x0, rtol=2e-4)


def test_snr_weighting_in_x0_space_is_plain_eps_mse():
  x, eps, err = _data()
  z = P.diffuse(x, eps, LOGSNR)
  pred_eps = P.convert(x + err, "x0", "eps", z, LOGSNR)
  a = L.diffusion_loss(pred_eps, x, eps, LOGSNR, parameterization="eps")
  b = L.diffusion_loss(pred_eps, x, eps, LOGSNR, parameterization="eps", loss_space="x0",
                       weighting="snr")
  np.testing.assert_allclose(a, b, rtol=2e-4)


def test_frame_mask_ignores_conditioning_frames():
  x, eps, _ = _data()
  pred = eps + jax.random.normal(jax.random.PRNGKey(5), SHAPE)
  mask = jnp.array([[1, 0, 1, 0, 1, 0]] * 2 + [[1] * 6] + [[0] * 6], jnp.float32)
  loss = L.diffusion_loss(pred, x, eps, LOGSNR, parameterization="eps", frame_mask=mask)
  # Changing the prediction on masked-out frames changes nothing.
  pred2 = jnp.where(mask[:, :, None, None, None] > 0, pred, 100.0)
  np.testing.assert_allclose(
      L.diffusion_loss(pred2, x, eps, LOGSNR, parameterization="eps", frame_mask=mask), loss)
  # Per example it is the mean over the frames that count (0 when none counts).
  sq = np.square(np.asarray(pred - eps))
  for b in range(4):
    keep = np.asarray(mask[b]) > 0
    want = sq[b][keep].mean() if keep.any() else 0.0
    np.testing.assert_allclose(loss[b], want, rtol=1e-5)


def test_bad_loss_inputs():
  x, eps, _ = _data()
  with pytest.raises(ValueError, match=r"Unknown loss weighting 'p2'"):
    L.diffusion_loss(eps, x, eps, LOGSNR, weighting="p2")
  with pytest.raises(ValueError, match="one shape"):
    L.diffusion_loss(eps[:, :3], x, eps, LOGSNR)
  with pytest.raises(ValueError, match=r"frame_mask must have shape \[B, T\] = \(4, 6\)"):
    L.diffusion_loss(eps, x, eps, LOGSNR, frame_mask=jnp.ones((4, 5)))
  with pytest.raises(ValueError, match="Unknown parameterization 'mu'"):
    L.diffusion_loss(eps, x, eps, LOGSNR, loss_space="mu")
