"""Samplers against exact denoisers: distributions, point masses, convergence orders."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.diffusion import parameterization as P
from videojax.diffusion import reference as R
from videojax.diffusion import samplers as SM
from videojax.diffusion import schedules as S
from videojax.diffusion.guidance import static_threshold

MU = jnp.array([0.3, -0.5, 0.0, 0.8])
STD = jnp.array([0.5, 0.25, 1.0, 0.1])
# EDM's noise range, sigma / alpha in [0.002, 80], as a clipped cosine schedule.
EDM_RANGE = S.get_schedule("cosine", logsnr_min=-2 * math.log(80.0),
                           logsnr_max=-2 * math.log(0.002))


def gaussian_denoiser(kind="v", mu=MU, std=STD):
  return R.gaussian_denoiser(mu, std, kind)


def point_mass_denoiser(point, kind):
  return R.point_mass_denoiser(point, kind)


@pytest.mark.parametrize("sampler,steps,spacing", [
    ("ddim", 1000, "uniform"), ("dpm_solver_pp", 50, "logsnr"), ("heun", 50, "karras"),
    ("ddpm", 1000, "uniform")])
def test_samples_match_gaussian_data_distribution(sampler, steps, spacing):
  # Steps enough that the discretisation bias (first order for DDIM and DDPM) is
  # small against the sampling error of n samples; the tolerance is 4 standard errors.
  n = 8192
  noise = jax.random.normal(jax.random.PRNGKey(1), (n, 4))
  x = SM.sample(gaussian_denoiser("v"), noise, schedule=EDM_RANGE, sampler=sampler,
                num_steps=steps, spacing=spacing, rng=jax.random.PRNGKey(2))
  mean, var = np.mean(x, axis=0), np.var(x, axis=0)
  se_mean = np.asarray(STD) / np.sqrt(n)
  se_var = np.asarray(STD)**2 * np.sqrt(2.0 / n)
  assert np.all(np.abs(mean - MU) < 4 * se_mean), (mean, MU)
  assert np.all(np.abs(var - STD**2) < 4 * se_var), (var, STD**2)


@pytest.mark.parametrize("sampler", SM.SAMPLERS)
@pytest.mark.parametrize("kind", P.PARAMETERIZATIONS)
def test_point_mass_is_returned_exactly(sampler, kind):
  point = jnp.array([0.7, -0.2, 0.0])
  noise = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  x = SM.sample(point_mass_denoiser(point, kind), noise, schedule=S.get_schedule("cosine"),
                sampler=sampler, num_steps=4, parameterization=kind, rng=jax.random.PRNGKey(1))
  np.testing.assert_allclose(x, jnp.broadcast_to(point, x.shape), atol=1e-5)


def observed_order(sampler, steps=(32, 64, 128)):
  """Slope of log error against log steps, against the exact probability-flow ODE."""
  mu, std = 0.3, 0.5
  sched = S.get_schedule("cosine", logsnr_min=-6.0, logsnr_max=20.0)
  noise = jax.random.normal(jax.random.PRNGKey(0), (256, 1))
  exact = R.gaussian_ode_solution(noise, S.step_grid(sched, 1, "logsnr")[0], mu, std)
  errors = []
  for n in steps:
    x = SM.sample(R.gaussian_denoiser(mu, std), noise, schedule=sched, sampler=sampler,
                  num_steps=n, spacing="logsnr", parameterization="x0")
    errors.append(float(jnp.sqrt(jnp.mean((x - exact)**2))))
  return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("sampler,lo,hi", [("ddim", 0.85, 1.15),
                                           ("dpm_solver_pp", 1.8, 2.2),
                                           ("heun", 1.8, 2.3)])
def test_convergence_order(sampler, lo, hi):
  order = observed_order(sampler)
  assert lo < order < hi, f"{sampler}: observed order {order:.2f}"


def test_ddim_trajectory_closed_form_for_point_mass():
  # With the exact point-mass denoiser, deterministic DDIM keeps eps fixed:
  # z_i = alpha_i x* + sigma_i eps_0 at every grid point.
  point = jnp.array([0.5, -0.5])
  noise = jax.random.normal(jax.random.PRNGKey(3), (3, 2))
  sched = S.get_schedule("cosine", logsnr_min=-8.0)
  x, traj = SM.sample(point_mass_denoiser(point, "eps"), noise, schedule=sched,
                      num_steps=6, parameterization="eps", return_trajectory=True)
  grid = S.step_grid(sched, 6)
  assert traj.shape == (7, 3, 2)
  np.testing.assert_array_equal(traj[0], noise)
  np.testing.assert_array_equal(traj[-1], x)
  a, s = S.alpha_sigma(grid[:-1])
  eps0 = (noise - a[0] * point) / s[0]
  want = a[:, None, None] * point + s[:, None, None] * eps0
  np.testing.assert_allclose(traj[:-1], want, atol=1e-5)


def test_truncated_start_trajectory_and_full_range_equivalence():
  # start_logsnr: z starts as sigma_start * noise (x = 0 diffused) and the grid spans
  # [start, max] of the same curve; the point mass is still returned exactly, along
  # DDIM's closed-form path. Starting at the schedule's own minimum is the default run.
  point = jnp.array([0.5, -0.5])
  noise = jax.random.normal(jax.random.PRNGKey(3), (3, 2))
  sched = S.get_schedule("cosine")
  den = point_mass_denoiser(point, "eps")
  x, traj = SM.sample(den, noise, schedule=sched, num_steps=5, parameterization="eps",
                      return_trajectory=True, start_logsnr=-2.0)
  a0, s0 = S.alpha_sigma(jnp.float32(-2.0))
  np.testing.assert_allclose(traj[0], s0 * noise, rtol=1e-6)
  np.testing.assert_allclose(x, jnp.broadcast_to(point, x.shape), atol=1e-5)
  grid = S.step_grid(S.get_schedule("cosine", logsnr_min=-2.0), 5)
  np.testing.assert_allclose(grid[0], -2.0, atol=1e-4)
  a, s = S.alpha_sigma(grid[:-1])
  eps0 = (traj[0] - a0 * point) / s0
  np.testing.assert_allclose(traj[:-1], a[:, None, None] * point + s[:, None, None] * eps0,
                             atol=1e-5)
  gauss = gaussian_denoiser("v")
  full = SM.sample(gauss, jnp.ones((2, 4)), schedule=sched, num_steps=4)
  same = SM.sample(gauss, jnp.ones((2, 4)), schedule=sched, num_steps=4, start_logsnr=-20.0)
  np.testing.assert_allclose(same, full, atol=1e-5)
  for bad in (-25.0, 20.0):
    with pytest.raises(ValueError, match=r"start_logsnr must lie in the schedule's range"):
      SM.sample(gauss, jnp.ones((2, 4)), schedule=sched, num_steps=4, start_logsnr=bad)


def test_jit_and_vmap_agree_with_eager():
  sched = S.get_schedule("cosine")
  run = functools.partial(SM.sample, gaussian_denoiser("v"), schedule=sched, sampler="ddpm",
                          num_steps=8)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  noise = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 4))
  batched = jax.jit(jax.vmap(lambda n, k: run(n, rng=k)))(noise, keys)
  for i in range(3):
    np.testing.assert_allclose(batched[i], run(noise[i], rng=keys[i]), atol=1e-5)
  # Stochastic: different keys give different samples from the same noise.
  assert not np.allclose(run(noise[0], rng=keys[0]), run(noise[0], rng=keys[1]))


@pytest.mark.parametrize("sampler", SM.SAMPLERS)
def test_x0_transform_acts_inside_every_sampler(sampler):
  def overshoot(z, logsnr):  # an x0 prediction far outside the data range
    return 3.0 * jnp.sign(z) + z
  noise = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
  kw = dict(schedule=S.get_schedule("cosine"), sampler=sampler, num_steps=5,
            parameterization="x0", rng=jax.random.PRNGKey(1))
  assert np.abs(SM.sample(overshoot, noise, **kw)).max() > 1.0
  clipped = SM.sample(overshoot, noise, x0_transform=static_threshold, **kw)
  assert np.abs(clipped).max() <= 1.0


def test_conditioning_is_passed_to_the_network():
  def denoise(z, logsnr, *, target):
    return target
  noise = jnp.zeros((2, 3))
  target = jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]])
  x = SM.sample(denoise, noise, schedule=S.get_schedule(), parameterization="x0",
                num_steps=3, cond={"target": target})
  np.testing.assert_allclose(x, target, atol=1e-6)


def test_bad_sampler_inputs():
  den = gaussian_denoiser("v")
  noise = jnp.zeros((2, 4))
  sched = S.get_schedule()
  with pytest.raises(ValueError, match=r"Unknown sampler 'euler'.*'ddpm', 'ddim'"):
    SM.sample(den, noise, schedule=sched, sampler="euler")
  for bad in (0, -1, 2.5):
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
      SM.sample(den, noise, schedule=sched, num_steps=bad)
  with pytest.raises(ValueError, match=r"prediction of the input's shape \(2, 4\), got \(2, 3\)"):
    SM.sample(lambda z, l: z[:, :3], noise, schedule=sched)
  with pytest.raises(ValueError, match="stochastic: pass rng="):
    SM.sample(den, noise, schedule=sched, sampler="ddpm")
  with pytest.raises(ValueError, match="eta must be >= 0"):
    SM.sample(den, noise, schedule=sched, eta=-0.5, rng=jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="Unknown parameterization 'score'"):
    SM.sample(den, noise, schedule=sched, parameterization="score")


@pytest.mark.parametrize("sampler", SM.SAMPLERS)
def test_network_calls_counts_the_denoiser_calls_of_a_run(sampler):
  calls = []

  def denoise(z, logsnr):
    jax.experimental.io_callback(lambda: calls.append(1), None, ordered=True)
    return gaussian_denoiser("v")(z, logsnr)

  kw = dict(rng=jax.random.PRNGKey(1)) if sampler == "ddpm" else {}
  jax.block_until_ready(SM.sample(denoise, jax.random.normal(jax.random.PRNGKey(0), (2, 4)),
                                  schedule=S.get_schedule("cosine"), sampler=sampler,
                                  num_steps=5, parameterization="v", **kw))
  assert len(calls) == SM.network_calls(sampler, 5)



@pytest.mark.parametrize("sampler", SM.SAMPLERS)
def test_gradients_through_a_run_are_finite(sampler):
  """Differentiable end to end (e.g. for distillation): the last step's update to
  log-SNR +inf lets no inf / NaN into unused branches."""
  kw = dict(rng=jax.random.PRNGKey(1)) if sampler == "ddpm" else {}

  def total(noise):
    return SM.sample(gaussian_denoiser("v"), noise, schedule=S.get_schedule("cosine"),
                     sampler=sampler, num_steps=4, parameterization="v", **kw).sum()

  grad = jax.grad(total)(jax.random.normal(jax.random.PRNGKey(0), (2, 4)))
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize("sampler,spacing", [("ddim", "uniform"), ("dpm_solver_pp", "logsnr"),
                                             ("heun", "karras"), ("ddpm", "uniform")])
def test_explicit_grid_equals_the_default_bitwise(sampler, spacing):
  sched = S.get_schedule("cosine")
  noise = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
  kw = dict(sampler=sampler, parameterization="v", rng=jax.random.PRNGKey(1))
  default = SM.sample(gaussian_denoiser("v"), noise, schedule=sched, num_steps=6,
                      spacing=spacing, **kw)
  grid = S.step_grid(sched, 6, spacing)
  # The schedule is not needed with a grid; num_steps may be given if it agrees.
  np.testing.assert_array_equal(SM.sample(gaussian_denoiser("v"), noise, grid=grid, **kw),
                                default)
  np.testing.assert_array_equal(
      SM.sample(gaussian_denoiser("v"), noise, schedule=sched, num_steps=6,
                grid=np.asarray(grid), **kw), default)


def test_explicit_grid_from_another_scheduler_runs_under_jit():
  # EDM's own grid (Karras et al. 2022, eq. 5): N sigmas from 80 down to 0.002, then
  # sigma = 0, given as log-SNRs; traced as a jit argument (its shape is still checked,
  # its values cannot be). Heun on it solves the probability-flow ODE of the Gaussian
  # (max error measured: 0.15, 0.033, 0.0077 at 16, 32, 64 steps: second order).
  n = 32
  ramp = np.linspace(0.0, 1.0, n)
  sigmas = np.append((80**(1 / 7) + ramp * (0.002**(1 / 7) - 80**(1 / 7)))**7, 0.0)
  with np.errstate(divide="ignore"):
    grid = -2.0 * np.log(sigmas)  # sigma = 0 -> +inf
  noise = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
  run = jax.jit(lambda z, g: SM.sample(gaussian_denoiser("v"), z, grid=g, sampler="heun"))
  x = run(noise, grid)
  np.testing.assert_allclose(x, SM.sample(gaussian_denoiser("v"), noise, grid=grid,
                                          sampler="heun"), atol=1e-6)
  exact = R.gaussian_ode_solution(noise, jnp.float32(grid[0]), MU, STD)
  np.testing.assert_allclose(x, exact, atol=0.05)


@pytest.mark.parametrize("grid,kw,match", [
    ([[-5.0, np.inf]], {}, r"1-D array .* got shape \(1, 2\)"),
    ([np.inf], {}, r"1-D array of N \+ 1 >= 2"),
    ([5.0, -5.0, np.inf], {}, "strictly increasing"),
    ([-5.0, 0.0, 5.0], {}, r"must be \+inf \(clean data\)"),
    ([-np.inf, 0.0, np.inf], {}, r"finite except the last entry"),
    ([-5.0, np.nan, np.inf], {}, "strictly increasing"),
    ([-5.0, 0.0, np.inf], {"num_steps": 5}, r"num_steps=5 disagrees with the grid of 3 log-SNRs"),
    ([-5.0, 0.0, np.inf], {"spacing": "karras"}, "an explicit grid is used as given"),
    ([-5.0, 0.0, np.inf], {"start_logsnr": -2.0}, "an explicit grid is used as given"),
])
def test_bad_grids_raise_before_compute(grid, kw, match):
  def never(z, logsnr):
    raise AssertionError("the network must not be traced for a bad grid")
  with pytest.raises(ValueError, match=match):
    SM.sample(never, jnp.zeros((2, 4)), grid=jnp.asarray(grid), **kw)


def test_a_schedule_or_a_grid_is_required():
  with pytest.raises(ValueError, match=r"Pass schedule= .* or an explicit grid="):
    SM.sample(gaussian_denoiser("v"), jnp.zeros((2, 4)))
