"""Exact denoisers of known data distributions, to check samplers against closed forms.

For data x ~ N(mu, diag(std^2)) the posterior mean E[x | z] at log-SNR l is
  mu + alpha std^2 / (alpha^2 std^2 + sigma^2) (z - alpha mu),
and the probability-flow ODE has a closed-form solution: in x = z / alpha and
sigma_e = sigma / alpha, x(sigma_e) - mu scales as sqrt(std^2 + sigma_e^2). A point
mass x* has the denoiser E[x | z] = x*. Used by the tests and benchmarks/.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from videojax.diffusion.parameterization import convert, expand_to
from videojax.diffusion.schedules import alpha_sigma

Array = jax.Array


def gaussian_denoiser(mu: Array | float, std: Array | float,
                      parameterization: str = "x0") -> Callable[[Array, Array], Array]:
  """denoise_fn(z [B, D], logsnr [B]) of N(mu, diag(std^2)), in `parameterization`."""

  def denoise(z: Array, logsnr: Array) -> Array:
    a, s = alpha_sigma(expand_to(logsnr, z))
    x0 = mu + a * std**2 / (a**2 * std**2 + s**2) * (z - a * mu)
    return convert(x0, "x0", parameterization, z, logsnr)

  return denoise


def gaussian_ode_solution(z: Array, logsnr: Array | float, mu: Array | float,
                          std: Array | float) -> Array:
  """Where the probability-flow ODE carries z (at log-SNR `logsnr`) at clean data."""
  a, s = alpha_sigma(jnp.asarray(logsnr))
  return mu + (z / a - mu) * std / jnp.sqrt(std**2 + (s / a)**2)


def point_mass_denoiser(point: Array, parameterization: str = "x0"
                        ) -> Callable[[Array, Array], Array]:
  """denoise_fn of the data distribution that is all at `point` (broadcast to z)."""

  def denoise(z: Array, logsnr: Array) -> Array:
    return convert(jnp.broadcast_to(point, z.shape), "x0", parameterization, z, logsnr)

  return denoise
