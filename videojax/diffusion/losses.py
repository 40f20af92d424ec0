"""Training objectives: MSE in eps, x0 or v space, with SNR-based weightings.

For a fixed z, the errors of the three spaces are proportional:
  |eps - eps_hat|^2 = SNR * |x - x_hat|^2,   |v - v_hat|^2 = (1 + SNR) * |x - x_hat|^2.
A weighting is therefore defined once, as a weight w_x0(SNR) on the x0-space error,
and expressed in the chosen loss space by dividing by that space's factor, so the
same weighting gives the same loss whichever space it is computed in:
  'uniform'        plain MSE in the loss space (the only space-relative choice)
  'snr'            w_x0 = SNR          (= plain eps-space MSE, DDPM's "simple" loss)
  'min_snr'        w_x0 = min(SNR, gamma)      (Hang et al. 2023, Min-SNR-gamma)
  'truncated_snr'  w_x0 = max(SNR, 1)          (Salimans & Ho 2022)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from videojax.diffusion.parameterization import (check_parameterization, convert, diffuse,
                                                  regression_target)

Array = jax.Array

WEIGHTINGS = ("uniform", "snr", "min_snr", "truncated_snr")


def loss_weight(logsnr: Array, weighting: str, loss_space: str,
                gamma: float = 5.0) -> Array:
  """Per-example weight on the MSE in `loss_space` ([B] or scalar, like logsnr)."""
  check_parameterization(loss_space)
  if weighting not in WEIGHTINGS:
    raise ValueError(f"Unknown loss weighting {weighting!r}; expected one of {WEIGHTINGS}.")
  logsnr = jnp.asarray(logsnr, jnp.float32)
  if weighting == "uniform":
    return jnp.ones_like(logsnr)
  snr = jnp.exp(logsnr)
  w_x0 = {"snr": snr,
          "min_snr": jnp.minimum(snr, gamma),
          "truncated_snr": jnp.maximum(snr, 1.0)}[weighting]
  # Divide by the space's factor; for eps write SNR-ratios as exp(-logsnr) products
  # so that a huge SNR does not overflow into inf / inf.
  if loss_space == "x0":
    return w_x0
  if loss_space == "eps":
    return {"snr": jnp.ones_like(snr),
            "min_snr": jnp.minimum(1.0, gamma * jnp.exp(-logsnr)),
            "truncated_snr": jnp.maximum(1.0, jnp.exp(-logsnr))}[weighting]
  return w_x0 * jax.nn.sigmoid(-logsnr)  # v: 1 / (1 + SNR) = sigmoid(-logsnr)


def masked_mean(sq_err: Array, frame_mask: Array | None) -> Array:
  """Mean of a squared error [B, T, ...] per example, over the frames that count.

  Args:
    sq_err: [B, ...]; for video [B, T, H, W, C].
    frame_mask: None, or [B, T] with 1 for frames that count and 0 for frames given
      as conditioning (TSR, interpolation, extension). An example with no frame
      that counts has loss 0.

  Returns:
    [B] per-example means.
  """
  b = sq_err.shape[0]
  if frame_mask is None:
    return jnp.mean(sq_err.reshape(b, -1), axis=1)
  if sq_err.ndim < 2 or frame_mask.shape != sq_err.shape[:2]:
    raise ValueError(
        f"frame_mask must have shape [B, T] = {sq_err.shape[:2]} to match the "
        f"video {sq_err.shape}, got {frame_mask.shape}.")
  mask = frame_mask.astype(sq_err.dtype).reshape(frame_mask.shape + (1,) * (sq_err.ndim - 2))
  per_frame = sq_err[0, 0].size
  total = jnp.sum((sq_err * mask).reshape(b, -1), axis=1)
  count = jnp.sum(frame_mask.astype(sq_err.dtype), axis=1) * per_frame
  return total / jnp.maximum(count, 1.0)


def diffusion_loss(pred: Array, x: Array, eps: Array, logsnr: Array, *,
                   parameterization: str = "v", loss_space: str | None = None,
                   weighting: str = "uniform", gamma: float = 5.0,
                   frame_mask: Array | None = None) -> Array:
  """Weighted denoising loss per example.

  Args:
    pred: the network output for z = diffuse(x, eps, logsnr), [B, ...].
    x: clean data, [B, ...].
    eps: the noise that made z, [B, ...].
    logsnr: [B] noise levels.
    parameterization: what `pred` is: 'eps', 'x0' or 'v'.
    loss_space: where the MSE is taken; defaults to `parameterization`.
    weighting: one of WEIGHTINGS (see the module docstring).
    gamma: the Min-SNR-gamma cap.
    frame_mask: optional [B, T]; frames with 0 (conditioning frames) do not count.

  Returns:
    float32 [B] losses; take the mean for the batch loss.
  """
  check_parameterization(parameterization)
  loss_space = check_parameterization(loss_space or parameterization)
  if not pred.shape == x.shape == eps.shape:
    raise ValueError(
        f"pred, x and eps must have one shape, got {pred.shape}, {x.shape}, {eps.shape}.")
  z = diffuse(x, eps, logsnr)
  pred = convert(pred.astype(jnp.float32), parameterization, loss_space, z, logsnr)
  target = regression_target(loss_space, x.astype(jnp.float32), eps.astype(jnp.float32),
                             logsnr)
  per_example = masked_mean(jnp.square(pred - target), frame_mask)
  return loss_weight(logsnr, weighting, loss_space, gamma) * per_example
