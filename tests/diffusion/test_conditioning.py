"""Noise-conditioning augmentation of super-resolution inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.diffusion import conditioning as C
from videojax.diffusion import schedules as S

SCHED = S.get_schedule("cosine")
VIDEO = jnp.linspace(-1.0, 1.0, 2 * 3 * 4 * 4 * 3).reshape(2, 3, 4, 4, 3)


def test_level_zero_is_identity_and_reports_logsnr_max():
  out, logsnr = C.augment(jax.random.PRNGKey(0), VIDEO, schedule=SCHED, level=0.0)
  np.testing.assert_array_equal(out, VIDEO)
  np.testing.assert_allclose(logsnr, [20.0, 20.0], atol=1e-3)
  out, _ = C.augment(jax.random.PRNGKey(0), VIDEO, schedule=SCHED, logsnr=jnp.inf)
  np.testing.assert_array_equal(out, VIDEO)


def test_corruption_statistics_follow_the_forward_process():
  # A constant video c corrupted at level t: mean alpha_t c, std sigma_t.
  c, levels = 0.6, jnp.array([0.2, 0.5, 0.9])
  video = jnp.full((3, 8, 32, 32, 3), c)
  out, logsnr = C.augment(jax.random.PRNGKey(1), video, schedule=SCHED, level=levels)
  np.testing.assert_allclose(logsnr, SCHED(levels), rtol=1e-6)
  alpha, sigma = S.alpha_sigma(logsnr)
  flat = np.asarray(out).reshape(3, -1)
  n = flat.shape[1]
  assert np.all(np.abs(flat.mean(1) - alpha * c) < 4 * sigma / np.sqrt(n))
  np.testing.assert_allclose(flat.std(1), sigma, rtol=4 * np.sqrt(0.5 / n))


def test_per_example_levels_and_determinism():
  levels = jnp.array([0.0, 0.7])
  a, _ = C.augment(jax.random.PRNGKey(2), VIDEO, schedule=SCHED, level=levels)
  b, _ = C.augment(jax.random.PRNGKey(2), VIDEO, schedule=SCHED, level=levels)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[0], VIDEO[0])
  assert not np.allclose(a[1], VIDEO[1])


def test_sample_level_range():
  lv = C.sample_level(jax.random.PRNGKey(0), 1000, 0.3)
  assert lv.shape == (1000,) and float(lv.min()) >= 0.0 and float(lv.max()) <= 0.3
  assert float(lv.max()) > 0.25  # it does spread over the range


def test_bad_augmentation_inputs():
  with pytest.raises(ValueError, match="exactly one of level="):
    C.augment(jax.random.PRNGKey(0), VIDEO, schedule=SCHED)
  with pytest.raises(ValueError, match="exactly one of level="):
    C.augment(jax.random.PRNGKey(0), VIDEO, schedule=SCHED, level=0.1, logsnr=1.0)
  with pytest.raises(ValueError, match=r"level must be in \[0, 1\], got 1.5"):
    C.augment(jax.random.PRNGKey(0), VIDEO, schedule=SCHED, level=1.5)
  with pytest.raises(ValueError, match=r"max_level must be in \[0, 1\]"):
    C.sample_level(jax.random.PRNGKey(0), 4, -0.1)
