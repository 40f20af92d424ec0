"""Samplers: DDPM (ancestral), DDIM, DPM-Solver++(2M) and Heun (EDM), as `lax.scan` loops.

Every sampler is driven by `denoise_fn(z, logsnr, **cond) -> prediction`, where the
prediction is in any parameterization ('eps', 'x0' or 'v') and `logsnr` is per example
[B]. Internally each step works with the x0 prediction, after the optional
`x0_transform` (static or dynamic thresholding, see `guidance.py`), and the eps
consistent with it, so thresholding acts inside every sampler.

A run of N steps walks the grid of `schedules.step_grid` (N + 1 log-SNRs, the last being
clean data), or an explicit grid of that form from any other scheduler (`grid=`). The
final step to clean data is, for every sampler here, the x0 prediction at the last
finite point (DDIM / DDPM with sigma_s = 0; DPM-Solver++ taken at first order, its
"lower order at the last step"; Heun's final Euler step to sigma = 0). DDPM, DDIM and
DPM-Solver++ take all N steps inside one `lax.scan` (the last one's update reduces to
that x0 exactly), so a compiled sampler holds a single copy of the network: half the
program to compile or load from a cache. Heun takes N - 1 steps in the scan, then the
final one. Network calls: N for DDPM, DDIM and DPM-Solver++, 2N - 1 for Heun.

The functions are pure: jit them (with the static arguments fixed, e.g. by
functools.partial) and vmap them over noise and keys as you like.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from videojax.diffusion.parameterization import check_parameterization, convert
from videojax.diffusion.schedules import Schedule, alpha_sigma, step_grid

Array = jax.Array

SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp", "heun")


def network_calls(sampler: str, num_steps: int) -> int:
  """How many times `sample` calls the network for one run of `num_steps` steps."""
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown sampler {sampler!r}; expected one of {SAMPLERS}.")
  return 2 * num_steps - 1 if sampler == "heun" else num_steps


def _ddim_step(z, x0, lt, ls, eta, noise):
  """DDIM from log-SNR lt to ls > lt given x0; eta = 1 is ancestral DDPM.

  eps is re-derived from the (possibly thresholded) x0, and the stochastic part has
  variance eta^2 times the DDPM posterior variance (1 - SNR_t / SNR_s) * sigma_s^2.
  """
  a_t, s_t = alpha_sigma(lt)
  a_s, s_s = alpha_sigma(ls)
  eps = (z - a_t * x0) / s_t
  var = eta**2 * -jnp.expm1(lt - ls) * s_s**2
  return a_s * x0 + jnp.sqrt(jnp.maximum(s_s**2 - var, 0.0)) * eps + jnp.sqrt(var) * noise


def _validate(sampler, parameterization, eta, rng, noise):
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown sampler {sampler!r}; expected one of {SAMPLERS}.")
  check_parameterization(parameterization)
  if noise.ndim < 1:
    raise ValueError(f"noise must have a leading batch axis [B, ...], got shape {noise.shape}.")
  static_eta = isinstance(eta, (int, float))
  if static_eta and eta < 0:
    raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM), got {eta}.")
  stochastic = sampler == "ddpm" or (sampler == "ddim" and not (static_eta and eta == 0))
  if stochastic and rng is None:
    raise ValueError(f"Sampler {sampler!r} with eta={eta} is stochastic: pass rng=.")


def _check_grid(grid: Any, num_steps: int | None, spacing: str | None,
                start_logsnr: float | None) -> Array:
  """A user's log-SNR grid as float32 [N + 1], or a ValueError saying what is wrong.

  Checked before anything is traced or compiled; a grid that is itself traced (a jit
  argument) can only have its shape checked.
  """
  if spacing is not None or start_logsnr is not None:
    raise ValueError(
        "spacing and start_logsnr build the grid from the schedule; an explicit grid is "
        "used as given: drop them (for a truncated start, pass a grid starting at that "
        "log-SNR and noise scaled to it, sigma * noise).")
  grid = jnp.asarray(grid, jnp.float32)
  if grid.ndim != 1 or grid.shape[0] < 2:
    raise ValueError(f"grid must be a 1-D array of N + 1 >= 2 log-SNRs, got shape {grid.shape}.")
  if num_steps is not None and num_steps != grid.shape[0] - 1:
    raise ValueError(f"num_steps={num_steps} disagrees with the grid of {grid.shape[0]} "
                     f"log-SNRs ({grid.shape[0] - 1} steps); omit num_steps with a grid.")
  try:
    values = np.asarray(grid)
  except jax.errors.TracerArrayConversionError:
    return grid
  # The same form as step_grid's: increasing log-SNR (decreasing noise), finite but
  # for the last entry, +inf, which is clean data (alpha = 1, sigma = 0): the final
  # step of every sampler lands there on an x0 prediction.
  ok = (np.all(np.isfinite(values[:-1])) and values[-1] == np.inf
        and np.all(np.diff(values) > 0))
  if not ok:
    raise ValueError(
        "grid must be the log-SNRs to visit from noise to data, strictly increasing, "
        "finite except the last entry, which must be +inf (clean data), as "
        f"schedules.step_grid makes them; got {values}.")
  return grid


def check_output_shape(call: Callable[[Array, Array], Any], z0: Array, level: Array,
                       what: str = "a prediction") -> None:
  """ValueError unless `call(z0, level)` returns an array of z0's shape (checked on
  abstract shapes: before anything is compiled)."""
  out = jax.eval_shape(call, z0, level)
  if getattr(out, "shape", None) != z0.shape:
    raise ValueError(
        f"denoise_fn must return {what} of the input's shape {z0.shape}, got "
        f"{getattr(out, 'shape', type(out).__name__)}; check the model's output channels "
        "and the conditioning shapes.")


def sample(denoise_fn: Callable[..., Array], noise: Array, *,
           schedule: Schedule | None = None, sampler: str = "ddim",
           num_steps: int | None = None, spacing: str | None = None,
           parameterization: str = "v", eta: float = 0.0,
           x0_transform: Callable[[Array], Array] | None = None,
           rng: Array | None = None, cond: dict[str, Any] | None = None,
           return_trajectory: bool = False, start_logsnr: float | None = None,
           grid: Array | None = None) -> Array | tuple[Array, Array]:
  """Draws samples by integrating from noise to data.

  Args:
    denoise_fn: network, called as denoise_fn(z [B, ...], logsnr [B], **cond); returns
      a prediction of z's shape in `parameterization`.
    noise: [B, ...] standard normal; the starting point z at the noisiest grid point.
    schedule: the log-SNR schedule the grid spans; required unless `grid` is given,
      and unused when it is.
    sampler: 'ddpm', 'ddim', 'dpm_solver_pp' or 'heun'.
    num_steps: number of steps N >= 1 (a Python int: it fixes the loop length); 50
      when neither it nor `grid` is given. With `grid` it may be omitted, and if
      given must equal len(grid) - 1.
    spacing: step-grid spacing ('uniform' in t, the default, 'logsnr', 'karras');
      must be omitted with `grid`.
    parameterization: what denoise_fn predicts: 'eps', 'x0' or 'v'.
    eta: DDIM's stochasticity (0 deterministic, 1 = ancestral).
    x0_transform: applied to every x0 prediction (thresholding), or None.
    rng: PRNG key; required by 'ddpm' and by 'ddim' with eta > 0.
    cond: keyword conditioning passed through to denoise_fn (text embeddings,
      conditioning video, ...).
    return_trajectory: also return z at every grid point.
    start_logsnr: None (default) to start from pure noise at the schedule's noisiest
      point; or a log-SNR inside the schedule's range to start there, from
      z = sigma * noise, i.e. the diffused version of x = 0 (SDEdit-style truncated
      sampling): the grid spans [start_logsnr, logsnr_max] of the same curve. Meant for
      residual super-resolution stages, whose x = 0 is their reference (bicubic
      upsampling / frame blending), so that sampling refines the reference instead of
      drawing the whole residual from noise. Must be omitted with `grid`.
    grid: None to build the grid with `schedules.step_grid(schedule, num_steps,
      spacing)`; or an explicit [N + 1] array of that form, from any scheduler:
      log-SNRs strictly increasing from grid[0] (where `noise` is taken as z) and
      finite, but for grid[-1] = +inf, clean data (an EDM sigma grid ending at 0 is
      -2 * log(sigma)). Validated before any compute.

  Returns:
    Samples [B, ...] (float32), or (samples, trajectory [N + 1, B, ...]) where
    trajectory[0] is the starting z (`noise`; sigma * noise with `start_logsnr`) and
    trajectory[-1] the samples.
  """
  _validate(sampler, parameterization, eta, rng, noise)
  z0 = noise.astype(jnp.float32)
  if grid is not None:
    grid = _check_grid(grid, num_steps, spacing, start_logsnr)  # [N + 1], grid[-1] = +inf
    num_steps = grid.shape[0] - 1
  else:
    if schedule is None:
      raise ValueError("Pass schedule= (the grid is built from it) or an explicit grid=.")
    num_steps = 50 if num_steps is None else num_steps
    if start_logsnr is not None:
      if not schedule.logsnr_min <= start_logsnr < schedule.logsnr_max:
        raise ValueError(f"start_logsnr must lie in the schedule's range "
                         f"[{schedule.logsnr_min}, {schedule.logsnr_max}), got {start_logsnr}.")
      schedule = dataclasses.replace(schedule, logsnr_min=float(start_logsnr))
      z0 = alpha_sigma(jnp.float32(start_logsnr))[1] * z0
    spacing = "uniform" if spacing is None else spacing
    grid = step_grid(schedule, num_steps, spacing)  # [N + 1], grid[-1] = +inf
  cond = dict(cond or {})
  batch = noise.shape[0]

  def call(z, logsnr):
    return denoise_fn(z, jnp.broadcast_to(logsnr, (batch,)), **cond)

  check_output_shape(call, z0, grid[0])

  def predict_x0(z, logsnr):
    x0 = convert(call(z, logsnr).astype(jnp.float32), parameterization, "x0", z, logsnr)
    return x0 if x0_transform is None else x0_transform(x0)

  rng = jax.random.PRNGKey(0) if rng is None else rng  # unused when deterministic
  steps = jnp.arange(num_steps)
  lts, lss = grid[:-1], grid[1:]  # all N steps; the last lands on ls = +inf

  if sampler in ("ddpm", "ddim"):
    eta_ = 1.0 if sampler == "ddpm" else eta

    def body(z, xs):  # at ls = +inf (alpha 1, sigma 0, no noise) the step returns x0
      i, lt, ls = xs
      noise_i = jax.random.normal(jax.random.fold_in(rng, i), z.shape, z.dtype)
      z = _ddim_step(z, predict_x0(z, lt), lt, ls, eta_, noise_i)
      return z, z if return_trajectory else None

    x, traj = jax.lax.scan(body, z0, (steps, lts, lss))

  elif sampler == "dpm_solver_pp":
    # Lu et al. 2022, multistep second order in lambda = logsnr / 2, data prediction.
    def body(carry, xs):
      z, x0_prev, h_prev = carry
      i, lt, ls = xs
      x0 = predict_x0(z, lt)
      h = 0.5 * (ls - lt)
      # first order at the first step (no history yet) and at the last (h = inf, where
      # the update below is exactly x0: sigma_s = 0, alpha_s = 1, expm1(-h) = -1); r is
      # kept finite there so that no inf / NaN enters the unused branch
      first_order = (i == 0) | (i == num_steps - 1)
      r = jnp.where(first_order, 1.0, h_prev / h)
      d2 = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
      d = jnp.where(first_order, x0, d2)
      _, s_t = alpha_sigma(lt)
      a_s, s_s = alpha_sigma(ls)
      z = (s_s / s_t) * z - a_s * jnp.expm1(-h) * d
      return (z, x0, h), z if return_trajectory else None

    h0 = jnp.float32(1.0)  # any finite value: only read where i > 0
    (x, _, _), traj = jax.lax.scan(body, (z0, jnp.zeros_like(z0), h0), (steps, lts, lss))

  else:  # heun: EDM's 2nd order in x = z / alpha, sigma_e = sigma / alpha
    def body(z, xs):
      _, lt, ls = xs
      a_t, _ = alpha_sigma(lt)
      a_s, _ = alpha_sigma(ls)
      sig_t, sig_s = jnp.exp(-0.5 * lt), jnp.exp(-0.5 * ls)
      x = z / a_t
      d = (x - predict_x0(z, lt)) / sig_t
      x_euler = x + (sig_s - sig_t) * d
      d_s = (x_euler - predict_x0(a_s * x_euler, ls)) / sig_s
      z = a_s * (x + (sig_s - sig_t) * 0.5 * (d + d_s))
      return z, z if return_trajectory else None

    z, traj = jax.lax.scan(body, z0, (steps[:-1], lts[:-1], lss[:-1]))
    x = predict_x0(z, grid[-2])  # final step to clean data
    traj = jnp.concatenate([traj, x[None]]) if return_trajectory else None

  if not return_trajectory:
    return x
  return x, jnp.concatenate([z0[None], traj], axis=0)
