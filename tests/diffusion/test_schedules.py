"""Schedules: closed forms, monotonicity, endpoints, the shift law, step grids."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.diffusion import schedules as S

T_INTERIOR = np.linspace(0.02, 0.98, 49)


@pytest.mark.parametrize("logsnr", [-30.0, -20.0, -3.0, 0.0, 2.5, 20.0, 30.0])
def test_alpha_sigma_unit_norm(logsnr):
  a, s = S.alpha_sigma(jnp.float32(logsnr))
  np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.log(a**2) - np.log(s**2), logsnr, atol=1e-4)


def test_alpha_sigma_exact_at_clean_and_noise_ends():
  a, s = S.alpha_sigma(jnp.array([jnp.inf, -jnp.inf]))
  np.testing.assert_array_equal(a, [1.0, 0.0])
  np.testing.assert_array_equal(s, [0.0, 1.0])


@pytest.mark.parametrize("name,kw", [
    ("cosine", {}),
    ("cosine", dict(logsnr_min=-8.0, logsnr_max=12.0)),
    ("shifted_cosine", dict(base_resolution=64, resolution=256)),
    ("shifted_cosine", dict(base_resolution=64, resolution=16)),
    ("linear", {}),
])
def test_schedule_monotone_with_configured_endpoints(name, kw):
  sched = S.get_schedule(name, **kw)
  t = jnp.linspace(0.0, 1.0, 1001)
  logsnr = np.asarray(sched(t))
  assert np.all(np.diff(logsnr) < 0), "log-SNR must fall with t"
  lmin, lmax = kw.get("logsnr_min", -20.0), kw.get("logsnr_max", 20.0)
  np.testing.assert_allclose(logsnr[0], lmax, atol=1e-3)
  if name == "linear":
    # DDPM's linear betas never get below log-SNR -log(expm1(10.05)) ~ -10.05.
    np.testing.assert_allclose(logsnr[-1], -math.log(math.expm1(10.05)), atol=1e-3)
  else:
    np.testing.assert_allclose(logsnr[-1], lmin, atol=2e-2)  # float32 tan near pi/2


@pytest.mark.parametrize("name", S.SCHEDULES)
def test_inverse_round_trips(name):
  kw = dict(base_resolution=64, resolution=128) if name == "shifted_cosine" else {}
  sched = S.get_schedule(name, **kw)
  np.testing.assert_allclose(sched.inverse(sched(T_INTERIOR)), T_INTERIOR, atol=1e-4)


def test_unclipped_cosine_is_imagen_closed_form():
  sched = S.get_schedule("cosine", logsnr_min=-math.inf, logsnr_max=math.inf)
  a, s = sched.alpha_sigma(T_INTERIOR)
  np.testing.assert_allclose(a, np.cos(0.5 * np.pi * T_INTERIOR), atol=1e-6)
  np.testing.assert_allclose(s, np.sin(0.5 * np.pi * T_INTERIOR), atol=1e-6)


@pytest.mark.parametrize("base,res", [(64, 256), (64, 512), (128, 32)])
def test_shifted_cosine_shift_law(base, res):
  # Unclipped, the shifted schedule is the cosine plus 2 * log(base / res) at every t.
  inf = math.inf
  cos = S.get_schedule("cosine", logsnr_min=-inf, logsnr_max=inf)
  shifted = S.get_schedule("shifted_cosine", logsnr_min=-inf, logsnr_max=inf,
                           base_resolution=base, resolution=res)
  np.testing.assert_allclose(shifted(T_INTERIOR) - cos(T_INTERIOR),
                             2 * math.log(base / res), atol=1e-4)
  # Clipped, it still spans exactly the configured range.
  clipped = S.get_schedule("shifted_cosine", base_resolution=base, resolution=res)
  np.testing.assert_allclose([clipped(0.0), clipped(1.0)], [20.0, -20.0], atol=2e-2)


def test_linear_matches_ddpm_discrete_betas():
  # The continuous linear schedule is DDPM's beta_i = 1e-4 ... 0.02 over 1000 steps.
  betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
  alphas_cumprod = np.cumprod(1.0 - betas)
  t = np.arange(1, 1001) / 1000.0
  a, _ = S.get_schedule("linear").alpha_sigma(t)
  # log(prod(1 - beta)) = -sum(beta) + O(beta^2), and the sum is the integral up to
  # half a step: agreement to 1% (or 1e-3 absolute, near t = 0) in log alpha^2.
  np.testing.assert_allclose(2 * np.log(np.asarray(a, np.float64)), np.log(alphas_cumprod),
                             rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("spacing", S.SPACINGS)
def test_step_grid_shape_order_and_ends(spacing):
  sched = S.get_schedule("cosine")
  grid = np.asarray(S.step_grid(sched, 10, spacing))
  assert grid.shape == (11,)
  assert np.isposinf(grid[-1]), "the last point is clean data"
  assert np.all(np.diff(grid[:-1]) > 0)
  np.testing.assert_allclose(grid[0], sched(1.0), atol=1e-5)


def test_step_grid_spacings_closed_forms():
  sched = S.get_schedule("cosine", logsnr_min=-10.0, logsnr_max=10.0)
  n = 8
  uniform = S.step_grid(sched, n, "uniform")
  np.testing.assert_allclose(uniform[:-1], sched(1.0 - np.arange(n) / n), atol=1e-5)
  np.testing.assert_allclose(np.diff(S.step_grid(sched, n, "logsnr")[:-1]), 20.0 / n,
                             atol=1e-4)
  sig_root = np.exp(-0.5 * np.asarray(S.step_grid(sched, n, "karras")[:-1]))**(1 / 7)
  np.testing.assert_allclose(np.diff(sig_root), np.diff(sig_root)[0], rtol=1e-3)


def test_sample_logsnr_low_discrepancy_is_stratified():
  sched = S.get_schedule("cosine")
  b = 16
  logsnr = S.sample_logsnr(jax.random.PRNGKey(3), b, sched)
  t = np.sort(np.asarray(sched.inverse(logsnr)))
  np.testing.assert_allclose(np.diff(t), 1.0 / b, atol=1e-4)
  assert np.all((logsnr >= -20.0) & (logsnr <= 20.0))


def test_shifted_training_levels_move_the_median_and_keep_the_range():
  base = S.get_schedule("cosine")
  sched = S.shifted(base, -4.0)
  assert float(sched(0.0)) == pytest.approx(20.0, abs=1e-3)
  assert float(sched(1.0)) == pytest.approx(-20.0, abs=1e-3)
  # cosine's log-SNR is 0 at mid-time, so the shifted one is -4 there
  assert float(sched(0.5)) == pytest.approx(-4.0, abs=1e-2)
  logsnr = np.asarray(S.sample_logsnr(jax.random.PRNGKey(0), 1024, sched))
  below = lambda ls: float(np.mean(ls < -4.0))  # noqa: E731
  assert below(logsnr) == pytest.approx(0.5, abs=2e-3)
  # unshifted: t > 2 / pi * atan(e^2) = 0.914 of the times
  base_ls = np.asarray(S.sample_logsnr(jax.random.PRNGKey(0), 1024, base))
  assert below(base_ls) == pytest.approx(1 - 2 / math.pi * math.atan(math.exp(2)), abs=2e-3)
  # shifts add up
  assert float(S.shifted(sched, 1.5)(0.5)) == pytest.approx(-2.5, abs=1e-2)
  with pytest.raises(ValueError, match="log-SNR shift needs a 'cosine'.*train_logsnr_shift=0"):
    S.shifted(S.get_schedule("linear"), -4.0)


def test_bad_schedule_inputs():
  with pytest.raises(ValueError, match=r"Unknown schedule 'sigmoid'.*cosine"):
    S.get_schedule("sigmoid")
  with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
    S.get_schedule("cosine", logsnr_min=5.0, logsnr_max=-5.0)
  with pytest.raises(ValueError, match="base_resolution and resolution"):
    S.get_schedule("shifted_cosine")
  with pytest.raises(ValueError, match="only apply to 'shifted_cosine'"):
    S.get_schedule("cosine", resolution=128)
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
      S.step_grid(S.get_schedule(), bad)
  with pytest.raises(ValueError, match=r"Unknown step spacing 'cubic'"):
    S.step_grid(S.get_schedule(), 4, "cubic")
