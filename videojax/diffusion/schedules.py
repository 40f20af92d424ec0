"""Continuous-time noise schedules: t in [0, 1] -> log-SNR.

Conventions (VDM, Imagen, "simple diffusion"):
  z_t = alpha_t * x + sigma_t * eps,  alpha^2 = sigmoid(logsnr),  sigma^2 = sigmoid(-logsnr).
t = 0 is (almost) clean data, t = 1 is (almost) pure noise; log-SNR falls monotonically
with t. Every schedule is clipped to a log-SNR range [logsnr_min, logsnr_max] by
rescaling time, t -> t(logsnr_max) + (t(logsnr_min) - t(logsnr_max)) * t, using the
schedule's exact inverse, so the clipped schedule is still smooth and monotone and its
endpoints are exactly the configured ones (or the schedule's own end where it never
reaches them, e.g. DDPM's linear betas stop near log-SNR -10).

Everything here is pure jnp and jittable; a `Schedule` is a frozen (hashable) dataclass,
so it can be a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

# Spacings of a sampler's step grid; see `step_grid`.
SPACINGS = ("uniform", "logsnr", "karras")


def alpha_sigma(logsnr: Array) -> tuple[Array, Array]:
  """Returns (alpha, sigma) with alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr).

  Exact at the ends: logsnr = +inf gives (1, 0) (clean data), -inf gives (0, 1).
  """
  logsnr = jnp.asarray(logsnr)
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


# ---------------------------------------------------------------------------
# Unclipped schedules and their exact inverses. Each pair maps t in [0, 1] to
# log-SNR and back; `Schedule` clips them to the configured range.


def _cosine(t: Array) -> Array:
  # Improved DDPM / Imagen: alpha = cos(pi t / 2), so SNR = 1 / tan^2(pi t / 2).
  return -2.0 * jnp.log(jnp.tan(0.5 * jnp.pi * t))


def _cosine_inverse(logsnr: Array) -> Array:
  return jnp.arctan(jnp.exp(-0.5 * logsnr)) / (0.5 * jnp.pi)


# DDPM's betas 1e-4 ... 0.02 over 1000 steps, as the VP-SDE (Song et al. 2021):
# beta(t) = b0 + t (b1 - b0) with b0 = 0.1, b1 = 20, so
# alpha^2(t) = exp(-(b0 t + (b1 - b0) t^2 / 2)) and logsnr = -log(expm1(integral)).
_BETA_MIN, _BETA_MAX = 0.1, 20.0


def _linear(t: Array) -> Array:
  integral = _BETA_MIN * t + 0.5 * (_BETA_MAX - _BETA_MIN) * t**2
  return -jnp.log(jnp.expm1(integral))


def _linear_inverse(logsnr: Array) -> Array:
  integral = jax.nn.softplus(-logsnr)  # log1p(exp(-logsnr)), stable for both signs
  d = _BETA_MAX - _BETA_MIN
  return (-_BETA_MIN + jnp.sqrt(_BETA_MIN**2 + 2.0 * d * integral)) / d


_BASE: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "cosine": (_cosine, _cosine_inverse),
    "shifted_cosine": (_cosine, _cosine_inverse),
    "linear": (_linear, _linear_inverse),
}
SCHEDULES = tuple(_BASE)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A clipped continuous-time log-SNR schedule.

  Attributes:
    name: 'cosine', 'shifted_cosine' or 'linear' (DDPM's linear betas).
    logsnr_min: log-SNR at t = 1 (noisiest point the schedule visits).
    logsnr_max: log-SNR at t = 0 (cleanest point the schedule visits).
    shift: added to log-SNR; for 'shifted_cosine' it is 2 * log(base_res / res)
      ("simple diffusion": a larger image needs more noise for the same signal).
      The cosine underneath is clipped to [min - shift, max - shift], so the
      shifted schedule still spans exactly [logsnr_min, logsnr_max].
  """

  name: str = "cosine"
  logsnr_min: float = -20.0
  logsnr_max: float = 20.0
  shift: float = 0.0

  def __post_init__(self):
    if self.name not in _BASE:
      raise ValueError(
          f"Unknown schedule {self.name!r}; expected one of {SCHEDULES}.")
    if not self.logsnr_min < self.logsnr_max:
      raise ValueError(
          f"Schedule {self.name!r} needs logsnr_min < logsnr_max, got "
          f"[{self.logsnr_min}, {self.logsnr_max}].")
    if self.shift != 0.0 and self.name != "shifted_cosine":
      raise ValueError(
          f"shift={self.shift} is only meaningful for 'shifted_cosine', not "
          f"{self.name!r}.")

  def _time_range(self) -> tuple[Array, Array]:
    """Unclipped times at which the (unshifted) base reaches logsnr_max / _min."""
    _, inverse = _BASE[self.name]
    t0 = jnp.clip(inverse(jnp.float32(self.logsnr_max - self.shift)), 0.0, 1.0)
    t1 = jnp.clip(inverse(jnp.float32(self.logsnr_min - self.shift)), 0.0, 1.0)
    return t0, t1

  def __call__(self, t: Array) -> Array:
    """log-SNR at times t in [0, 1] (any shape)."""
    forward, _ = _BASE[self.name]
    t0, t1 = self._time_range()
    return forward(t0 + (t1 - t0) * jnp.asarray(t, jnp.float32)) + self.shift

  def inverse(self, logsnr: Array) -> Array:
    """Time t in [0, 1] at which the schedule has the given log-SNR."""
    _, inverse = _BASE[self.name]
    t0, t1 = self._time_range()
    t = inverse(jnp.asarray(logsnr, jnp.float32) - self.shift)
    return jnp.clip((t - t0) / (t1 - t0), 0.0, 1.0)

  def alpha_sigma(self, t: Array) -> tuple[Array, Array]:
    """(alpha_t, sigma_t) at times t."""
    return alpha_sigma(self(t))


def get_schedule(name: str = "cosine", *, logsnr_min: float = -20.0,
                 logsnr_max: float = 20.0, base_resolution: int | None = None,
                 resolution: int | None = None) -> Schedule:
  """Builds a schedule by name.

  Args:
    name: one of SCHEDULES.
    logsnr_min, logsnr_max: the clipped log-SNR range.
    base_resolution, resolution: for 'shifted_cosine' only: the resolution the
      unshifted cosine is tuned for (e.g. 64) and the one being trained; the
      log-SNR is shifted by 2 * log(base_resolution / resolution).

  Returns:
    A `Schedule`.
  """
  shift = 0.0
  if name == "shifted_cosine":
    if not base_resolution or not resolution or base_resolution <= 0 or resolution <= 0:
      raise ValueError(
          "'shifted_cosine' needs positive base_resolution and resolution "
          f"(e.g. 64 and 256), got {base_resolution} and {resolution}.")
    shift = 2.0 * math.log(base_resolution / resolution)
  elif base_resolution is not None or resolution is not None:
    raise ValueError(
        f"base_resolution/resolution only apply to 'shifted_cosine', not {name!r}.")
  return Schedule(name, logsnr_min, logsnr_max, shift)


def schedule_from_config(d) -> Schedule:
  """The schedule a config's `diffusion` section names (schedule, logsnr_min, logsnr_max)."""
  return get_schedule(d.schedule, logsnr_min=d.logsnr_min, logsnr_max=d.logsnr_max)


def shifted(schedule: Schedule, shift: float) -> Schedule:
  """A cosine schedule with `shift` added to its log-SNR, over the same clipped range.

  For the *training* noise levels only (`diffusion.train_logsnr_shift`): a negative
  shift puts more examples at high noise (-4: half of them below log-SNR -4 instead of
  8.6%), where a text-to-video model decides the layout and the motion; the network is
  conditioned on log-SNR, so sampling with the unshifted grid is unchanged.
  """
  if schedule.name not in ("cosine", "shifted_cosine"):
    raise ValueError(f"A log-SNR shift needs a 'cosine' or 'shifted_cosine' schedule, got "
                     f"{schedule.name!r}; set diffusion.train_logsnr_shift=0.")
  return Schedule("shifted_cosine", schedule.logsnr_min, schedule.logsnr_max,
                  schedule.shift + float(shift))


def step_grid(schedule: Schedule, num_steps: int, spacing: str = "uniform",
              rho: float = 7.0) -> Array:
  """The log-SNR grid a sampler walks, from noise to clean data.

  Args:
    schedule: the schedule whose range the grid spans.
    num_steps: number of steps N (>= 1); the network is called at the first N points.
    spacing: 'uniform' in t; 'logsnr' uniform in log-SNR (DPM-Solver's default);
      'karras' uniform in sigma_edm^(1/rho), sigma_edm = sigma / alpha (EDM).
    rho: the exponent of the 'karras' spacing.

  Returns:
    float32 [N + 1], increasing: grid[0] = schedule(1), the N + 1 points span the
    schedule's range, and the last one, t = 0, is replaced by +inf: the final step
    lands on clean data (alpha = 1, sigma = 0), so samplers end on an x0 prediction.
  """
  if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
  if spacing not in SPACINGS:
    raise ValueError(f"Unknown step spacing {spacing!r}; expected one of {SPACINGS}.")
  frac = jnp.linspace(0.0, 1.0, num_steps + 1)  # 0 = noise end, 1 = clean end
  lo, hi = schedule(1.0), schedule(0.0)
  if spacing == "uniform":
    grid = schedule(1.0 - frac)
  elif spacing == "logsnr":
    grid = lo + (hi - lo) * frac
  else:  # karras: sigma_edm = exp(-logsnr / 2)
    s_max, s_min = jnp.exp(-0.5 * lo), jnp.exp(-0.5 * hi)
    sig = (s_max**(1 / rho) + frac * (s_min**(1 / rho) - s_max**(1 / rho)))**rho
    grid = -2.0 * jnp.log(sig)
  return grid.at[-1].set(jnp.inf).astype(jnp.float32)


def sample_logsnr(rng: Array, batch_size: int, schedule: Schedule,
                  low_discrepancy: bool = True) -> Array:
  """Training noise levels: t ~ U[0, 1] per example, mapped through the schedule.

  Args:
    rng: PRNG key.
    batch_size: number of examples B.
    schedule: the schedule.
    low_discrepancy: VDM's stratified times (one uniform offset, B evenly spaced
      points), which lowers the variance of the batch loss without bias.

  Returns:
    float32 [B] log-SNRs.
  """
  if low_discrepancy:
    u = jax.random.uniform(rng, ())
    t = jnp.mod(u + jnp.arange(batch_size) / batch_size, 1.0)
  else:
    t = jax.random.uniform(rng, (batch_size,))
  return schedule(t)
