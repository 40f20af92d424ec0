"""Guidance at sampling time: classifier-free guidance and x0 thresholding.

Classifier-free guidance (Ho & Salimans 2022) mixes a conditional and an
unconditional prediction, pred = uncond + scale * (cond - uncond). For a fixed z the
eps, x0 and v parameterizations are affine in one another, so the mix is the same in
any of them. Both halves go through the network in one batched call.

Time-reversal guidance (`time_reversal_guidance`) contrasts a video prediction with the
prediction for the same video played backwards, which differs in the motion alone.

Thresholding (Imagen) acts on the x0 prediction inside every sampler (see
`samplers.sample(..., x0_transform=...)`): static clipping to [-1, 1], or dynamic
thresholding: per example, s = max(1, percentile_p(|x0|)); clip to [-s, s], divide by s.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from videojax.diffusion.parameterization import expand_to

Array = jax.Array
DenoiseFn = Callable[..., Array]

THRESHOLDS = ("none", "static", "dynamic")


def guided_prediction(cond_pred: Array, uncond_pred: Array, scale: Array | float) -> Array:
  """uncond + scale * (cond - uncond); scale is a scalar or per-example [B].

  scale = 1 is the conditional prediction, 0 the unconditional one, > 1 guides.
  """
  scale = expand_to(scale, cond_pred)
  return uncond_pred + scale * (cond_pred - uncond_pred)


def classifier_free_guidance(denoise_fn: DenoiseFn, null_cond: dict[str, Any],
                             guidance_scale: Array | float) -> DenoiseFn:
  """Wraps `denoise_fn(z, logsnr, **cond)` into a guided one with the same signature.

  Args:
    denoise_fn: the network, called as denoise_fn(z, logsnr, **cond).
    null_cond: the unconditional inputs, a dict with the same keys, shapes and dtypes
      as the `cond` the sampler passes (e.g. the null text embedding, broadcast to the
      batch); keys absent from it (a conditioning video, say) are shared by both halves.
    guidance_scale: scalar or [B]; may be a traced value, so one compiled sampler
      serves every scale. Or a function of the log-SNR [B] -> scale [B], for a scale
      that depends on the noise level (`noisy_end_guidance`).

  Returns:
    guided(z, logsnr, **cond) that calls denoise_fn once on a batch of 2B
    (conditional first, then unconditional) and mixes the halves.
  """

  def guided(z: Array, logsnr: Array, **cond: Any) -> Array:
    unknown = set(null_cond) - set(cond)
    if unknown:
      raise ValueError(
          f"null_cond has keys {sorted(unknown)} that the sampler does not pass as "
          f"conditioning (it passes {sorted(cond)}).")
    uncond = {**cond, **null_cond}
    for key in null_cond:
      a, b = jnp.shape(cond[key]), jnp.shape(uncond[key])
      if a != b:
        raise ValueError(
            f"Conditioning {key!r} has shape {a} but its null version has shape {b}; "
            "broadcast the null input to the batch.")
    both = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), cond, uncond)
    batch = z.shape[0]
    logsnr2 = jnp.broadcast_to(jnp.asarray(logsnr), (batch,))
    pred = denoise_fn(jnp.concatenate([z, z], axis=0),
                      jnp.concatenate([logsnr2, logsnr2], axis=0), **both)
    scale = guidance_scale(logsnr2) if callable(guidance_scale) else guidance_scale
    return guided_prediction(pred[:batch], pred[batch:], scale)

  return guided


def noisy_end_guidance(scale: float, noisy_scale: float, below_logsnr: float
                       ) -> Callable[[Array], Array]:
  """A guidance scale of the log-SNR: `noisy_scale` below `below_logsnr`, else `scale`.

  A base decides the layout and the motion in its first, noisiest steps and the
  colours' saturation in its later ones; a strong scale only at the noisy end pushes
  the caption where the video is decided without over-saturating what comes after
  (guidance limited to an interval of noise levels: Kynkaanniemi et al. 2024).
  """
  return lambda logsnr: jnp.where(logsnr < below_logsnr, noisy_scale, scale)


def time_reversal_guidance(denoise_fn: DenoiseFn, scale: float,
                           below_logsnr: float = float("inf")) -> DenoiseFn:
  """Guidance away from the video played backwards, for videos [B, T, ...].

  guided(z) = pred(z) + scale * (pred(z) - R pred(R z)), with R the reversal of the
  frame axis, at log-SNRs below `below_logsnr` (elsewhere pred(z)). Time reversal keeps
  what a caption says about a still scene and flips its motion, so R pred(R z)
  predicts the scene moving the other way, without naming the other way: for a model
  of data that is reversal-symmetric up to the motion words, it is the prediction for
  the caption with its motion words opposite. The difference is the motion's direction
  alone, so this pushes the sign of the motion where classifier-free guidance pushes
  everything the caption says. `denoise_fn` may be a classifier-free-guided function.
  Steps at or above `below_logsnr` skip the backward call (`lax.cond`).
  """

  def contrasted(z, logsnr, cond):
    batch = z.shape[0]
    flip = lambda x: jnp.flip(x, axis=1)  # noqa: E731 (the frame axis)
    both = jax.tree.map(lambda c: jnp.concatenate([c, c], axis=0), cond)
    pred = denoise_fn(jnp.concatenate([z, flip(z)], axis=0),
                      jnp.concatenate([logsnr, logsnr], axis=0), **both)
    forward, backward = pred[:batch], flip(pred[batch:])
    s = expand_to(noisy_end_guidance(0.0, scale, below_logsnr)(logsnr), forward)
    return forward + s * (forward - backward)

  def guided(z: Array, logsnr: Array, **cond: Any) -> Array:
    logsnr = jnp.broadcast_to(jnp.asarray(logsnr), (z.shape[0],))
    if below_logsnr == float("inf"):
      return contrasted(z, logsnr, cond)
    return jax.lax.cond(jnp.any(logsnr < below_logsnr), contrasted,
                        lambda z, l, c: denoise_fn(z, l, **c), z, logsnr, cond)

  return guided


def static_threshold(x0: Array) -> Array:
  """Clips an x0 prediction to the data range [-1, 1]."""
  return jnp.clip(x0, -1.0, 1.0)


def dynamic_threshold(x0: Array, percentile: float = 0.995) -> Array:
  """Imagen's dynamic thresholding of an x0 prediction [B, ...].

  Per example, s = max(1, quantile_p(|x0|)); x0 is clipped to [-s, s] and divided by
  s. The result lies in [-1, 1], and an x0 already inside [-1, 1] is unchanged.
  """
  if not 0.0 < percentile <= 1.0:
    raise ValueError(f"percentile must be in (0, 1], got {percentile}.")
  b = x0.shape[0]
  s = jnp.quantile(jnp.abs(x0).reshape(b, -1), percentile, axis=1)
  s = expand_to(jnp.maximum(s, 1.0), x0)
  return jnp.clip(x0, -s, s) / s


def make_x0_transform(kind: str = "none", percentile: float = 0.995
                      ) -> Callable[[Array], Array] | None:
  """The x0 post-processing a sampler applies at every step, by name."""
  if kind not in THRESHOLDS:
    raise ValueError(f"Unknown thresholding {kind!r}; expected one of {THRESHOLDS}.")
  if kind == "static":
    return static_threshold
  if kind == "dynamic":
    if not 0.0 < percentile <= 1.0:
      raise ValueError(f"percentile must be in (0, 1], got {percentile}.")
    return lambda x0: dynamic_threshold(x0, percentile)
  return None
