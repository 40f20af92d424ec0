"""Flow matching (rectified flow): straight paths from data to noise, and their ODE.

The path and the regression target (Lipman et al. 2023, Liu et al. 2023; the
formulation of Stable Diffusion 3, Open-Sora and Wan):
  z_t = (1 - t) * x + t * eps,   t in [0, 1] (t = 0 data, t = 1 noise),
  v   = dz_t / dt = eps - x.
A network regresses v from z_t; sampling integrates dz/dt = v(z, t) from t = 1 to
t = 0. Given (z, t), a velocity determines both ends of the straight line through z:
  x0 = z - t * v,   eps = z + (1 - t) * v.

The network is given the log-SNR of z_t, never t, so every denoiser of the library
sees one noise-level convention whatever its formulation: with signal (1 - t) and
noise t, logsnr = 2 * log((1 - t) / t) and t = sigmoid(-logsnr / 2). A flow z_t is the
variance-preserving z at the same log-SNR times sqrt((1 - t)^2 + t^2). Denoise
functions here are `fn(z, logsnr, **cond) -> velocity`, the signature of the VP
samplers' `denoise_fn`, so `guidance.classifier_free_guidance` wraps them unchanged (it
mixes predictions linearly, and for a fixed z the velocity is affine in x0 and eps).

Times `t` are per example ([B] or scalar) and broadcast over the trailing axes of
`z` ([B, ...], any rank). Everything here is pure jnp: jit and vmap it freely.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from videojax.diffusion.losses import masked_mean
from videojax.diffusion.parameterization import expand_to
from videojax.diffusion.samplers import check_output_shape

Array = jax.Array

SAMPLERS = ("euler", "heun")
TIME_DISTRIBUTIONS = ("uniform", "logit_normal")

# The VP schedules' default log-SNR range: both formulations condition the network
# on the same interval of noise levels.
LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0


def logsnr_from_time(t: Array, logsnr_min: float = LOGSNR_MIN,
                     logsnr_max: float = LOGSNR_MAX) -> Array:
  """The log-SNR 2 * log((1 - t) / t) of z_t, clipped to [logsnr_min, logsnr_max].

  The clip keeps it finite at the ends (t = 0 is +inf, t = 1 is -inf), so the
  network is always fed a number from the range it was trained on.

  Args:
    t: times in [0, 1], any shape.
    logsnr_min, logsnr_max: the clip range.

  Returns:
    float32 log-SNRs of t's shape.
  """
  t = jnp.asarray(t, jnp.float32)
  # log1p(-t) keeps precision near t = 0, where (1 - t) rounds to 1
  return jnp.clip(2.0 * (jnp.log1p(-t) - jnp.log(t)), logsnr_min, logsnr_max)


def time_from_logsnr(logsnr: Array) -> Array:
  """The inverse of `logsnr_from_time` (inside its clip range): t = sigmoid(-logsnr / 2)."""
  return jax.nn.sigmoid(-0.5 * jnp.asarray(logsnr, jnp.float32))


def diffuse(x: Array, eps: Array, t: Array) -> Array:
  """The path: z_t = (1 - t) * x + t * eps, for x, eps [B, ...] and t [B] or scalar."""
  if x.shape != eps.shape:
    raise ValueError(f"x and eps must have the same shape, got {x.shape} and {eps.shape}.")
  t = expand_to(t, x)
  return (1.0 - t) * x + t * eps


def x0_eps_to_velocity(x0: Array, eps: Array) -> Array:
  """The velocity of the straight path from x0 to eps: v = eps - x0 (any t)."""
  return eps - x0


def velocity_to_x0(z: Array, v: Array, t: Array) -> Array:
  """The data end of the line through z_t with velocity v: x0 = z - t * v."""
  return z - expand_to(t, z) * v


def velocity_to_eps(z: Array, v: Array, t: Array) -> Array:
  """The noise end of the line through z_t with velocity v: eps = z + (1 - t) * v."""
  return z + (1.0 - expand_to(t, z)) * v


def shift_time(t: Array, shift: float | Array) -> Array:
  """Moves times toward the noise end: t' = shift * t / (1 + (shift - 1) * t).

  Monotone, with 0 -> 0 and 1 -> 1; shift = 1 is the identity and shift > 1 spends
  more of the steps (or training examples) at high noise. In log-SNR it is a plain
  offset, logsnr(t') = logsnr(t) - 2 * log(shift): the flow counterpart of the VP
  'shifted_cosine' schedule.
  """
  t = jnp.asarray(t, jnp.float32)
  return shift * t / (1.0 + (shift - 1.0) * t)


def resolution_shift(num_tokens: int, base_tokens: int = 4096) -> float:
  """The time shift for a larger input: sqrt(num_tokens / base_tokens).

  This is Stable Diffusion 3's timestep shift for higher resolutions (Esser et al.
  2024, "Scaling rectified flow transformers"), also used by Open-Sora and Wan: an
  input with m tokens (pixels or latent patches) instead of n keeps the same signal at
  a given level if its log-SNR is lowered by log(m / n), which is `shift_time` with
  shift sqrt(m / n). For video count every token, frames included.

  Args:
    num_tokens: tokens (or pixels) per example being trained or sampled.
    base_tokens: the count the unshifted time distribution was tuned for.

  Returns:
    The shift, a Python float (1.0 at the base size).
  """
  if num_tokens <= 0 or base_tokens <= 0:
    raise ValueError(f"num_tokens and base_tokens must be positive, got {num_tokens} "
                     f"and {base_tokens}.")
  return math.sqrt(num_tokens / base_tokens)


def sample_time(rng: Array, batch_size: int, *, distribution: str = "uniform",
                mean: float = 0.0, std: float = 1.0, shift: float = 1.0,
                t_min: float = 1e-5) -> Array:
  """Training times: t ~ `distribution`, then shifted, then clipped away from 0 and 1.

  Args:
    rng: PRNG key.
    batch_size: number of examples B.
    distribution: 'uniform' on [0, 1], or 'logit_normal': t = sigmoid(mean + std * n)
      with n ~ N(0, 1) (SD3's default, mean 0, std 1: more weight mid-path). In
      log-SNR, logit-normal t is a normal log-SNR of mean -2 * mean and std 2 * std.
    mean, std: the logit-normal's parameters (ignored for 'uniform').
    shift: `shift_time`'s shift (see `resolution_shift`); 1 leaves t as drawn.
    t_min: t is clipped to [t_min, 1 - t_min], where the log-SNR is finite and the
      conversions through 1 / t stay well conditioned.

  Returns:
    float32 [B] times.
  """
  if distribution not in TIME_DISTRIBUTIONS:
    raise ValueError(f"Unknown time distribution {distribution!r}; expected one of "
                     f"{TIME_DISTRIBUTIONS}.")
  if std <= 0 or shift <= 0 or not 0.0 < t_min < 0.5:
    raise ValueError(f"Need std > 0, shift > 0 and 0 < t_min < 0.5, got std={std}, "
                     f"shift={shift}, t_min={t_min}.")
  if distribution == "uniform":
    t = jax.random.uniform(rng, (batch_size,))
  else:
    t = jax.nn.sigmoid(mean + std * jax.random.normal(rng, (batch_size,)))
  return jnp.clip(shift_time(t, shift), t_min, 1.0 - t_min)


def flow_loss(pred_v: Array, x: Array, eps: Array, *,
              frame_mask: Array | None = None) -> Array:
  """Flow-matching loss per example: the mean squared error of pred_v to eps - x.

  Args:
    pred_v: the network's velocity for z = diffuse(x, eps, t), [B, ...].
    x: clean data, [B, ...].
    eps: the noise that made z, [B, ...].
    frame_mask: optional [B, T]; frames with 0 (conditioning frames) do not count,
      as in `losses.diffusion_loss`.

  Returns:
    float32 [B] losses; take the mean for the batch loss.
  """
  if not pred_v.shape == x.shape == eps.shape:
    raise ValueError(f"pred_v, x and eps must have one shape, got {pred_v.shape}, "
                     f"{x.shape}, {eps.shape}.")
  target = x0_eps_to_velocity(x.astype(jnp.float32), eps.astype(jnp.float32))
  return masked_mean(jnp.square(pred_v.astype(jnp.float32) - target), frame_mask)


def time_grid(num_steps: int, shift: float = 1.0) -> Array:
  """The default sampling grid: uniform in t from 1 to 0, then `shift_time`-ed.

  Args:
    num_steps: number of steps N >= 1.
    shift: see `shift_time`; > 1 puts more steps at high noise.

  Returns:
    float32 [N + 1], decreasing, grid[0] = 1 (pure noise) and grid[-1] = 0 (data).
  """
  if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
  if shift <= 0:
    raise ValueError(f"shift must be > 0, got {shift}.")
  grid = shift_time(jnp.linspace(1.0, 0.0, num_steps + 1), shift)
  return grid.at[0].set(1.0).at[-1].set(0.0).astype(jnp.float32)


def network_calls(sampler: str, num_steps: int) -> int:
  """How many times `sample` calls the network for one run of `num_steps` steps."""
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown flow sampler {sampler!r}; expected one of {SAMPLERS}.")
  return 2 * num_steps - 1 if sampler == "heun" else num_steps


def _check_grid(grid: Any) -> Array:
  """A user's time grid as float32 [N + 1], or a ValueError saying what is wrong."""
  grid = jnp.asarray(grid, jnp.float32)
  if grid.ndim != 1 or grid.shape[0] < 2:
    raise ValueError(f"grid must be a 1-D array of N + 1 >= 2 times, got shape {grid.shape}.")
  try:
    values = np.asarray(grid)
  except jax.errors.TracerArrayConversionError:
    return grid  # traced under jit: only its shape can be checked
  ok = (np.all(np.isfinite(values)) and np.all(np.diff(values) < 0)
        and 0.0 < values[0] <= 1.0 and values[-1] == 0.0)
  if not ok:
    raise ValueError(
        "grid must be the times to visit, strictly decreasing from grid[0] in (0, 1] "
        f"(1 = pure noise) to grid[-1] = 0 (data), e.g. flow.time_grid(N); got {values}.")
  return grid


def sample(denoise_fn: Callable[..., Array], noise: Array, *, sampler: str = "euler",
           num_steps: int | None = None, grid: Array | None = None, shift: float = 1.0,
           x0_transform: Callable[[Array], Array] | None = None,
           cond: dict[str, Any] | None = None, return_trajectory: bool = False,
           logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX
           ) -> Array | tuple[Array, Array]:
  """Draws samples by integrating dz/dt = v(z, t) from t = grid[0] down to t = 0.

  Euler takes z_s = z_t + (s - t) * v(z_t, t). Heun adds the trapezoidal correction
  z_s = z_t + (s - t) * (v(z_t, t) + v(z_e, s)) / 2 at the Euler point z_e, on every
  interval except the last, which ends at t = 0 (EDM's practice: an Euler step there,
  which lands on the x0 the last velocity implies). One `lax.scan` walks the grid;
  Heun's correction sits in a `lax.cond`, so the compiled program holds two copies of
  the network rather than three.

  Args:
    denoise_fn: the network, called as denoise_fn(z [B, ...], logsnr [B], **cond);
      returns a velocity of z's shape.
    noise: [B, ...], the starting z at t = grid[0]: standard normal for the default
      grid (t = 1). To start part-way (SDEdit-style), pass a grid starting at t < 1
      and z = diffuse(x_ref, noise, t).
    sampler: 'euler' or 'heun'.
    num_steps: number of steps N >= 1 (a Python int: it fixes the loop length);
      50 when neither it nor `grid` is given. With `grid` it may be omitted, and if
      given must equal len(grid) - 1.
    grid: None for `time_grid(num_steps, shift)`, or an explicit [N + 1] array of
      times, strictly decreasing from grid[0] in (0, 1] to grid[-1] = 0 (from any
      external scheduler). It is used as given, so `shift` must be left at 1.
    shift: `shift_time`'s shift of the default grid (see `resolution_shift`).
    x0_transform: applied to the x0 = z - t * v implied by every velocity
      (thresholding, see `guidance.py`), the velocity then recomputed from the
      transformed x0 as v = (z - x0') / t; or None.
    cond: keyword conditioning passed through to denoise_fn.
    return_trajectory: also return z at every grid point.
    logsnr_min, logsnr_max: the range the network's log-SNR input is clipped to
      (`logsnr_from_time`); match the range it was trained on.

  Returns:
    Samples [B, ...] (float32), or (samples, trajectory [N + 1, B, ...]) where
    trajectory[0] is `noise` and trajectory[-1] the samples.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown flow sampler {sampler!r}; expected one of {SAMPLERS}.")
  if noise.ndim < 1:
    raise ValueError(f"noise must have a leading batch axis [B, ...], got shape {noise.shape}.")
  if grid is None:
    grid = time_grid(50 if num_steps is None else num_steps, shift)
  else:
    if shift != 1.0:
      raise ValueError(f"shift={shift} reshapes the default grid only; an explicit grid is "
                       "used as given: pass flow.shift_time(grid, shift) instead.")
    grid = _check_grid(grid)
    if num_steps is not None and num_steps != grid.shape[0] - 1:
      raise ValueError(f"num_steps={num_steps} disagrees with the grid of {grid.shape[0]} "
                       f"times ({grid.shape[0] - 1} steps); omit num_steps with a grid.")
  z0 = noise.astype(jnp.float32)
  cond = dict(cond or {})
  batch = noise.shape[0]

  def call(z, t):
    logsnr = logsnr_from_time(t, logsnr_min, logsnr_max)
    return denoise_fn(z, jnp.broadcast_to(logsnr, (batch,)), **cond)

  check_output_shape(call, z0, grid[0], "a velocity")

  def velocity(z, t):  # only called at t > 0, where x0 -> v divides by t
    v = call(z, t).astype(jnp.float32)
    if x0_transform is None:
      return v
    return (z - x0_transform(velocity_to_x0(z, v, t))) / t

  def body(z, ts):
    t, s = ts
    v = velocity(z, t)
    z_euler = z + (s - t) * v
    if sampler == "heun":
      # the corrector needs v at s, undefined at s = 0 (the last interval): Euler there
      z_euler = jax.lax.cond(s > 0, lambda: z + (s - t) * 0.5 * (v + velocity(z_euler, s)),
                             lambda: z_euler)
    return z_euler, z_euler if return_trajectory else None

  x, traj = jax.lax.scan(body, z0, (grid[:-1], grid[1:]))
  if not return_trajectory:
    return x
  return x, jnp.concatenate([z0[None], traj], axis=0)
