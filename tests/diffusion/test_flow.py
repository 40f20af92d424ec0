"""Flow matching against closed forms: the exact velocity field of Gaussian data.

For x ~ N(mu, s^2 I) and the path z_t = a x + b eps (a = 1 - t, b = t), z_t is
N(a mu, V I) with V = a^2 s^2 + b^2, Cov(x, z) = a s^2 and Cov(eps, z) = b, so by
Gaussian conditioning
  E[x | z]   = mu + (a s^2 / V) (z - a mu),   E[eps | z] = (b / V) (z - a mu),
  E[v | z]   = E[eps - x | z] = -mu + k (z - a mu),   k = (b - a s^2) / V.
The ODE dz/dt = E[v | z] is solved by z(t) = a mu + sqrt(V) n: its derivative is
-mu + (dV/dt) / (2 sqrt V) n with dV/dt = 2 (b - a s^2), which is -mu + k sqrt(V) n,
the field at z(t). At t = 1 (V = 1) z = n, and at t = 0 (V = s^2) z = mu + s n: the
sampler must carry noise n to mu + s n (the optimal-transport map between the two
Gaussians). V >= s^2 / (1 + s^2) > 0 on all of [0, 1], so the field is smooth up to
and including t = 0, and the default grid 1 -> 0 needs no special handling.

The conditional variance of the target eps - x given z is
  Var(eps - x) - Cov(eps - x, z)^2 / V = 1 + s^2 - (b - a s^2)^2 / V = s^2 / V
(the numerator V (1 + s^2) - (b - a s^2)^2 collapses to s^2 (a + b)^2 = s^2): the
least loss any velocity network can reach at time t.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax import diffusion
from videojax.diffusion import flow
from videojax.diffusion.guidance import classifier_free_guidance, static_threshold

MU = jnp.array([0.8, -0.5, 0.3, 0.0])
S = 0.4


def gaussian_velocity(s=S):
  """E[v | z] of N(mu, s^2 I), as a denoise fn(z [B, D], logsnr [B], *, mu [D] or [B, D])."""

  def fn(z, logsnr, *, mu=MU):
    t = flow.time_from_logsnr(logsnr)[:, None]
    a, b = 1.0 - t, t
    return -mu + (b - a * s**2) / (a**2 * s**2 + b**2) * (z - a * mu)

  return fn


def loss_floor(t, s=S):
  """The least expected flow loss at time t for N(mu, s^2 I) data: s^2 / V."""
  return s**2 / ((1.0 - t)**2 * s**2 + t**2)


def observed_order(sampler, steps=(8, 16, 32, 64)):
  noise = jax.random.normal(jax.random.PRNGKey(0), (256, 4))
  exact = MU + S * noise
  errors = []
  for n in steps:
    x = flow.sample(gaussian_velocity(), noise, sampler=sampler, num_steps=n)
    errors.append(float(jnp.sqrt(jnp.mean((x - exact)**2))))
  return -np.polyfit(np.log(steps), np.log(errors), 1)[0], errors


@pytest.mark.parametrize("sampler,lo,hi", [("euler", 0.8, 1.2), ("heun", 1.7, 2.3)])
def test_samplers_converge_to_the_ot_map_at_their_order(sampler, lo, hi):
  # Measured: Euler 0.96, Heun 2.08 (errors 0.074 -> 0.0099 and 0.018 -> 0.00023).
  # The only departure from the exact field is the log-SNR clip at t = 1 (the field
  # is read at t = sigmoid(10) = 1 - 4.5e-5), a 1e-6 error, far below these.
  order, errors = observed_order(sampler)
  assert lo < order < hi, f"{sampler}: observed order {order:.2f}, errors {errors}"
  assert errors[-1] < (1e-2 if sampler == "euler" else 3e-4)


def test_heun_trajectory_follows_the_closed_form_path():
  noise = jax.random.normal(jax.random.PRNGKey(1), (64, 4))
  x, traj = flow.sample(gaussian_velocity(), noise, sampler="heun", num_steps=64,
                        return_trajectory=True)
  t = flow.time_grid(64)[:, None, None]
  want = (1.0 - t) * MU + jnp.sqrt((1.0 - t)**2 * S**2 + t**2) * noise
  assert traj.shape == (65, 64, 4)
  np.testing.assert_array_equal(traj[0], noise)
  np.testing.assert_array_equal(traj[-1], x)
  np.testing.assert_allclose(traj, want, atol=2e-3)


def test_loss_of_the_exact_velocity_is_the_conditional_variance():
  # Per example the loss is the mean over D dims of squared Gaussian residuals of
  # variance L = s^2 / V, so M examples estimate L with standard error L sqrt(2 / (D M)).
  times = jnp.array([0.05, 0.3, 0.5, 0.7, 0.95])
  m, d = 4096, 8
  mu = jnp.linspace(-1.0, 1.0, d)
  kx, ke = jax.random.split(jax.random.PRNGKey(2))
  t = jnp.repeat(times, m)  # [5 M]
  x = mu + S * jax.random.normal(kx, (t.shape[0], d))
  eps = jax.random.normal(ke, x.shape)
  z = flow.diffuse(x, eps, t)
  pred = gaussian_velocity()(z, flow.logsnr_from_time(t), mu=mu)
  per_t = flow.flow_loss(pred, x, eps).reshape(len(times), m).mean(axis=1)
  want = loss_floor(times)
  se = want * np.sqrt(2.0 / (d * m))
  assert np.all(np.abs(per_t - want) < 4 * se), (per_t, want)
  # The ends: the whole noise (variance 1) at t = 0, the whole data spread at t = 1.
  np.testing.assert_allclose(loss_floor(jnp.array([0.0, 1.0])), [1.0, S**2], rtol=1e-6)


def test_flow_loss_frame_mask_counts_only_masked_in_frames():
  x = jnp.zeros((2, 3, 2, 2, 1))
  eps = jnp.ones_like(x)
  pred = jnp.ones_like(x).at[:, 0].set(101.0)  # exact but for frame 0: error 100
  mask = jnp.array([[0, 1, 1], [1, 1, 1]])
  loss = flow.flow_loss(pred, x, eps, frame_mask=mask)
  np.testing.assert_allclose(loss, [0.0, 100.0**2 / 3], rtol=1e-6)
  with pytest.raises(ValueError, match="one shape"):
    flow.flow_loss(pred[:, :2], x, eps)


def test_conversions_are_exact_inverses():
  k = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(k[0], (3, 2, 4, 4, 3))  # [B, T, H, W, C]
  eps = jax.random.normal(k[1], x.shape)
  t = jnp.array([0.1, 0.5, 0.9])
  z = flow.diffuse(x, eps, t)
  v = flow.x0_eps_to_velocity(x, eps)
  np.testing.assert_allclose(flow.velocity_to_x0(z, v, t), x, atol=1e-5)
  np.testing.assert_allclose(flow.velocity_to_eps(z, v, t), eps, atol=1e-5)
  # Any velocity at any z: its two ends rebuild z and give the velocity back.
  w = jax.random.normal(k[2], x.shape)
  x0, e = flow.velocity_to_x0(z, w, t), flow.velocity_to_eps(z, w, t)
  np.testing.assert_allclose(flow.x0_eps_to_velocity(x0, e), w, atol=1e-5)
  np.testing.assert_allclose(flow.diffuse(x0, e, t), z, atol=1e-5)
  # A scalar t is per-batch broadcast too.
  np.testing.assert_allclose(flow.diffuse(x, eps, 0.25), 0.75 * x + 0.25 * eps, atol=1e-6)


def test_logsnr_and_time_are_inverse_and_clipped():
  t = jnp.linspace(0.01, 0.99, 99)
  np.testing.assert_allclose(flow.time_from_logsnr(flow.logsnr_from_time(t)), t, atol=1e-6)
  ls = jnp.linspace(-15.0, 15.0, 61)
  np.testing.assert_allclose(flow.logsnr_from_time(flow.time_from_logsnr(ls)), ls, atol=1e-3)
  np.testing.assert_allclose(flow.logsnr_from_time(jnp.array([0.0, 0.5, 1.0])),
                             [20.0, 0.0, -20.0])
  np.testing.assert_allclose(flow.logsnr_from_time(jnp.array([0.0, 1.0]), -5.0, 7.0),
                             [7.0, -5.0])
  # Signal (1 - t), noise t: the log-SNR is that of the VP z at the same noise level.
  np.testing.assert_allclose(flow.logsnr_from_time(0.2), 2 * np.log(0.8 / 0.2), rtol=1e-6)


def test_shift_time_is_a_monotone_log_snr_offset():
  t = jnp.linspace(0.0, 1.0, 101)
  np.testing.assert_array_equal(flow.shift_time(t, 1.0), t)
  for shift in (0.5, 3.0):
    u = flow.shift_time(t, shift)
    assert u[0] == 0.0 and u[-1] == 1.0
    assert np.all(np.diff(u) > 0)
    inner = t[1:-1]
    np.testing.assert_allclose(flow.logsnr_from_time(flow.shift_time(inner, shift)),
                               flow.logsnr_from_time(inner) - 2 * np.log(shift), atol=1e-4)
  assert np.all(flow.shift_time(t[1:-1], 3.0) > t[1:-1])  # toward noise
  assert flow.resolution_shift(4096) == 1.0
  assert flow.resolution_shift(4 * 4096) == 2.0  # twice the side: SD3's shift 2


def test_sample_time_distributions():
  n = 20000
  key = jax.random.PRNGKey(4)
  t = flow.sample_time(key, n, distribution="logit_normal", mean=0.5, std=0.8)
  logit = np.log(t) - np.log1p(-t)
  assert abs(logit.mean() - 0.5) < 4 * 0.8 / np.sqrt(n)
  assert abs(logit.std() - 0.8) < 4 * 0.8 / np.sqrt(2 * n)
  u = flow.sample_time(key, n)
  assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
  assert u.min() >= 1e-5 and u.max() <= 1 - 1e-5
  # The shift acts on the drawn times: same key, same draws, shifted.
  np.testing.assert_allclose(flow.sample_time(key, n, shift=3.0),
                             jnp.clip(flow.shift_time(u, 3.0), 1e-5, 1 - 1e-5), atol=1e-6)
  with pytest.raises(ValueError, match="Unknown time distribution 'normal'"):
    flow.sample_time(key, 4, distribution="normal")


def test_point_mass_paths_are_straight_so_euler_is_exact():
  # For data all at x*, E[v | z] = (z - x*) / t: every path is the straight line
  # (1 - t) x* + t n, which one Euler step follows exactly. The field reads t back
  # from the log-SNR, whose default clip at -20 would read t = 1 as 1 - 4.5e-5 (an
  # error of 4.5e-5 |n|); a clip at -40 reads it as 1 in float32.
  point = jnp.array([0.7, -0.2, 0.0])
  fn = lambda z, logsnr: (z - point) / flow.time_from_logsnr(logsnr)[:, None]  # noqa: E731
  noise = jax.random.normal(jax.random.PRNGKey(5), (5, 3))
  for sampler, steps in (("euler", 1), ("euler", 6), ("heun", 6)):
    x, traj = flow.sample(fn, noise, sampler=sampler, num_steps=steps,
                          return_trajectory=True, logsnr_min=-40.0, logsnr_max=40.0)
    t = flow.time_grid(steps)[:, None, None]
    np.testing.assert_allclose(traj, (1 - t) * point + t * noise, atol=2e-6)
    np.testing.assert_allclose(x, jnp.broadcast_to(point, x.shape), atol=2e-6)


def test_classifier_free_guidance_over_velocities():
  # Scale 1 is the conditional run. The Gaussian field is affine in mu, so a guided
  # field with means mu_c, mu_u is the field of mean mu_u + w (mu_c - mu_u).
  noise = jax.random.normal(jax.random.PRNGKey(6), (8, 4))
  mu_c = jnp.broadcast_to(MU, (8, 4))
  null = {"mu": jnp.zeros((8, 4))}
  fn = gaussian_velocity()
  run = functools.partial(flow.sample, noise=noise, sampler="heun", num_steps=64,
                          cond={"mu": mu_c})
  np.testing.assert_allclose(run(classifier_free_guidance(fn, null, 1.0)), run(fn),
                             rtol=1e-6, atol=1e-6)
  guided = run(classifier_free_guidance(fn, null, 3.0))
  np.testing.assert_allclose(guided, 3.0 * MU + S * noise, atol=1.5e-3)


def test_explicit_grid_equals_the_default_bitwise():
  fn = gaussian_velocity()
  noise = jax.random.normal(jax.random.PRNGKey(7), (4, 4))
  for sampler in flow.SAMPLERS:
    default = flow.sample(fn, noise, sampler=sampler, num_steps=6, shift=3.0)
    grid = flow.time_grid(6, 3.0)
    np.testing.assert_array_equal(flow.sample(fn, noise, sampler=sampler, grid=grid), default)
    np.testing.assert_array_equal(
        flow.sample(fn, noise, sampler=sampler, grid=np.asarray(grid), num_steps=6), default)


@pytest.mark.parametrize("grid,kw,match", [
    ([[1.0, 0.0]], {}, r"1-D array .* got shape \(1, 2\)"),
    ([1.0], {}, r"1-D array of N \+ 1 >= 2"),
    ([0.0, 0.5, 1.0], {}, "strictly decreasing"),
    ([1.0, 0.5, 0.1], {}, r"grid\[-1\] = 0"),
    ([1.5, 0.5, 0.0], {}, r"grid\[0\] in \(0, 1\]"),
    ([1.0, float("nan"), 0.0], {}, "strictly decreasing"),
    ([1.0, 0.5, 0.0], {"num_steps": 3}, r"num_steps=3 disagrees with the grid of 3 times"),
    ([1.0, 0.5, 0.0], {"shift": 3.0}, r"flow.shift_time\(grid, shift\)"),
])
def test_bad_grids_raise_before_compute(grid, kw, match):
  def never(z, logsnr):
    raise AssertionError("the network must not be traced for a bad grid")
  with pytest.raises(ValueError, match=match):
    flow.sample(never, jnp.zeros((2, 4)), grid=jnp.asarray(grid), **kw)


def test_bad_sampler_inputs():
  with pytest.raises(ValueError, match=r"Unknown flow sampler 'ddim'"):
    flow.sample(gaussian_velocity(), jnp.zeros((2, 4)), sampler="ddim")
  with pytest.raises(ValueError, match=r"velocity of the input's shape \(2, 4\), got \(2, 3\)"):
    flow.sample(lambda z, logsnr: z[:, :3], jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="num_steps must be a positive int"):
    flow.sample(gaussian_velocity(), jnp.zeros((2, 4)), num_steps=0)


def test_sampler_jits_with_static_num_steps_and_traced_grid():
  fn = gaussian_velocity()
  noise = jax.random.normal(jax.random.PRNGKey(8), (4, 4))
  eager = flow.sample(fn, noise, sampler="heun", num_steps=5)
  jitted = jax.jit(flow.sample, static_argnums=0, static_argnames=("sampler", "num_steps"))
  np.testing.assert_allclose(jitted(fn, noise, sampler="heun", num_steps=5), eager, atol=1e-6)
  on_grid = jax.jit(lambda n, g: flow.sample(fn, n, sampler="heun", grid=g))
  np.testing.assert_allclose(on_grid(noise, flow.time_grid(5)), eager, atol=1e-6)


@pytest.mark.parametrize("sampler", flow.SAMPLERS)
def test_network_calls_counts_the_denoiser_calls_of_a_run(sampler):
  calls = []

  def fn(z, logsnr):
    jax.experimental.io_callback(lambda: calls.append(1), None, ordered=True)
    return gaussian_velocity()(z, logsnr)

  jax.block_until_ready(flow.sample(fn, jnp.ones((2, 4)), sampler=sampler, num_steps=5))
  assert len(calls) == flow.network_calls(sampler, 5)


@pytest.mark.parametrize("sampler", flow.SAMPLERS)
def test_x0_transform_acts_on_every_velocity(sampler):
  def overshoot(z, logsnr):  # implies x0 = z - t v = -3 sign(z): outside [-1, 1]
    t = flow.time_from_logsnr(logsnr)[:, None]
    return (z + 3.0 * jnp.sign(z)) / t
  noise = jax.random.normal(jax.random.PRNGKey(9), (16, 8))
  assert np.abs(flow.sample(overshoot, noise, sampler=sampler, num_steps=5)).max() > 2.0
  clipped = flow.sample(overshoot, noise, sampler=sampler, num_steps=5,
                        x0_transform=static_threshold)
  assert np.abs(clipped).max() <= 1.0 + 1e-6


def test_flow_is_a_submodule_beside_the_vp_names():
  assert diffusion.flow is flow
  assert diffusion.sample is not flow.sample and diffusion.diffuse is not flow.diffuse
