"""eps / x0 / v conversions: exact round trips and agreement with the definitions."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.diffusion import parameterization as P
from videojax.diffusion.schedules import alpha_sigma

KINDS = P.PARAMETERIZATIONS


def _example(shape=(4, 3, 5, 5, 2), seed=0):
  kx, ke = jax.random.split(jax.random.PRNGKey(seed))
  x = jax.random.uniform(kx, shape, minval=-1.0, maxval=1.0)
  eps = jax.random.normal(ke, shape)
  logsnr = jnp.array([-4.0, -0.5, 1.5, 5.0])
  return x, eps, logsnr, P.diffuse(x, eps, logsnr)


def test_diffuse_is_the_forward_process():
  x, eps, logsnr, z = _example()
  a, s = alpha_sigma(logsnr)
  np.testing.assert_allclose(z, a[:, None, None, None, None] * x
                             + s[:, None, None, None, None] * eps, rtol=1e-6)


@pytest.mark.parametrize("src,dst", list(itertools.product(KINDS, KINDS)))
def test_convert_maps_exact_targets_onto_each_other(src, dst):
  x, eps, logsnr, z = _example()
  got = P.convert(P.regression_target(src, x, eps, logsnr), src, dst, z, logsnr)
  np.testing.assert_allclose(got, P.regression_target(dst, x, eps, logsnr), atol=2e-5)


@pytest.mark.parametrize("src,dst", list(itertools.permutations(KINDS, 2)))
def test_convert_round_trips_any_prediction(src, dst):
  # Not only exact targets: an arbitrary (wrong) prediction survives src -> dst -> src.
  _, _, logsnr, z = _example()
  pred = jax.random.normal(jax.random.PRNGKey(7), z.shape)
  back = P.convert(P.convert(pred, src, dst, z, logsnr), dst, src, z, logsnr)
  np.testing.assert_allclose(back, pred, atol=5e-5)


def test_v_definition_and_scalar_logsnr():
  x, eps, _, _ = _example()
  logsnr = jnp.float32(0.0)  # alpha = sigma = sqrt(1/2)
  z = P.diffuse(x, eps, logsnr)
  v = P.convert(x, "x0", "v", z, logsnr)
  np.testing.assert_allclose(v, np.sqrt(0.5) * (eps - x), atol=1e-6)


def test_bad_inputs_are_named():
  _, _, logsnr, z = _example()
  with pytest.raises(ValueError, match=r"Unknown parameterization 'score'.*'eps', 'x0', 'v'"):
    P.convert(z, "score", "x0", z, logsnr)
  with pytest.raises(ValueError, match="shape of z"):
    P.convert(z[:, :2], "eps", "x0", z, logsnr)
  with pytest.raises(ValueError, match=r"per-example \[B\] array with B = 4"):
    P.convert(z, "eps", "x0", z, jnp.zeros(3))
  with pytest.raises(ValueError, match="same shape"):
    P.diffuse(z, z[:2], logsnr)
