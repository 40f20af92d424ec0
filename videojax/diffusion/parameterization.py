"""What the network predicts: eps, x0 or v, and exact conversions between them.

With z = alpha * x + sigma * eps (alpha^2 + sigma^2 = 1) and
v = alpha * eps - sigma * x (Salimans & Ho; what Imagen Video predicts):
  x   = (z - sigma * eps) / alpha   = alpha * z - sigma * v
  eps = (z - alpha * x) / sigma     = sigma * z + alpha * v
  v   = (eps - sigma * z) / alpha   = (alpha * z - x) / sigma
Given (z, logsnr), each conversion is an affine map of the prediction.

`alpha` and `sigma` here are per example ([B] or scalar) and are broadcast over the
trailing axes of `z` ([B, ...]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from videojax.diffusion.schedules import alpha_sigma

Array = jax.Array

PARAMETERIZATIONS = ("eps", "x0", "v")


def check_parameterization(kind: str) -> str:
  if kind not in PARAMETERIZATIONS:
    raise ValueError(
        f"Unknown parameterization {kind!r}; expected one of {PARAMETERIZATIONS}.")
  return kind


def expand_to(a: Array, x: Array) -> Array:
  """Reshapes a per-example [B] (or scalar) array to broadcast against x [B, ...]."""
  a = jnp.asarray(a, dtype=jnp.result_type(x.dtype, jnp.float32))
  if a.ndim == 0:
    return a
  if a.ndim != 1 or a.shape[0] != x.shape[0]:
    raise ValueError(
        f"Expected a scalar or a per-example [B] array with B = {x.shape[0]} "
        f"(x has shape {x.shape}), got shape {a.shape}.")
  return a.reshape(a.shape + (1,) * (x.ndim - 1))


def diffuse(x: Array, eps: Array, logsnr: Array) -> Array:
  """The forward process: z = alpha * x + sigma * eps at the given log-SNR."""
  if x.shape != eps.shape:
    raise ValueError(f"x and eps must have the same shape, got {x.shape} and {eps.shape}.")
  alpha, sigma = alpha_sigma(expand_to(logsnr, x))
  return alpha * x + sigma * eps


def convert(pred: Array, src: str, dst: str, z: Array, logsnr: Array) -> Array:
  """Converts a prediction from parameterization `src` to `dst`.

  Args:
    pred: the prediction, same shape as z.
    src, dst: 'eps', 'x0' or 'v'.
    z: the noisy input the prediction was made from, [B, ...].
    logsnr: its log-SNR, scalar or [B].

  Returns:
    The same quantity in parameterization `dst`. Conversions to x0 from eps divide
    by alpha (ill-conditioned at very low log-SNR), and to eps from x0 divide by
    sigma (ill-conditioned at very high log-SNR): that is why v is the usual choice.
  """
  check_parameterization(src)
  check_parameterization(dst)
  if pred.shape != z.shape:
    raise ValueError(
        f"The prediction must have the shape of z {z.shape}, got {pred.shape}.")
  if src == dst:
    return pred
  alpha, sigma = alpha_sigma(expand_to(logsnr, z))
  # Go through x0, except where a direct formula avoids a division.
  if (src, dst) == ("v", "eps"):
    return sigma * z + alpha * pred
  if (src, dst) == ("eps", "v"):
    return (pred - sigma * z) / alpha
  if src == "x0":
    x = pred
  elif src == "eps":
    x = (z - sigma * pred) / alpha
  else:  # v
    x = alpha * z - sigma * pred
  if dst == "x0":
    return x
  if dst == "eps":
    return (z - alpha * x) / sigma
  return (alpha * z - x) / sigma  # v


def regression_target(kind: str, x: Array, eps: Array, logsnr: Array) -> Array:
  """The exact eps, x0 or v of a training example made from known (x, eps)."""
  check_parameterization(kind)
  if kind == "x0":
    return x
  if kind == "eps":
    return eps
  alpha, sigma = alpha_sigma(expand_to(logsnr, x))
  return alpha * eps - sigma * x
