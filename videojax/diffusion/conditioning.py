"""Noise-conditioning augmentation for the inputs of super-resolution stages.

Imagen and Imagen Video corrupt the low-resolution (or low-frame-rate) conditioning
video with the forward process at a random level during training and tell the model
that level; at sampling time the previous stage's output is corrupted at one fixed
level. This makes a stage robust to the artefacts of the stage before it.

A level is a time in [0, 1] of the augmentation schedule (0 = no corruption at all,
exactly), or directly a log-SNR.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from videojax.diffusion.parameterization import diffuse, expand_to
from videojax.diffusion.schedules import Schedule

Array = jax.Array


def augment(rng: Array, cond: Array, *, schedule: Schedule,
            level: Array | float | None = None,
            logsnr: Array | float | None = None) -> tuple[Array, Array]:
  """Corrupts a conditioning video at a given augmentation level.

  Args:
    rng: PRNG key for the noise.
    cond: the conditioning video [B, T, H, W, C] (any [B, ...]) in [-1, 1].
    schedule: maps a level (time) to log-SNR.
    level: scalar or [B] in [0, 1]; exactly one of `level` and `logsnr`.
    logsnr: scalar or [B] log-SNR of the corruption.

  Returns:
    (corrupted [B, ...], aug_logsnr [B]): the input the model sees and the level it
    is told. Where level == 0 the input is returned unchanged and the model is told
    the schedule's logsnr_max.
  """
  if (level is None) == (logsnr is None):
    raise ValueError("Pass exactly one of level= (in [0, 1]) and logsnr=.")
  batch = cond.shape[0]
  if level is not None:
    if isinstance(level, (int, float)) and not 0.0 <= level <= 1.0:
      raise ValueError(f"Augmentation level must be in [0, 1], got {level}.")
    level = jnp.broadcast_to(jnp.asarray(level, jnp.float32), (batch,))
    aug_logsnr = schedule(level)
    clean = level <= 0.0
  else:
    aug_logsnr = jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), (batch,))
    clean = jnp.isposinf(aug_logsnr)
  noise = jax.random.normal(rng, cond.shape, jnp.float32)
  corrupted = diffuse(cond.astype(jnp.float32), noise, aug_logsnr)
  corrupted = jnp.where(expand_to(clean, cond), cond.astype(jnp.float32), corrupted)
  return corrupted.astype(cond.dtype), aug_logsnr


def sample_level(rng: Array, batch_size: int, max_level: float) -> Array:
  """Training-time augmentation levels, uniform in [0, max_level], per example [B]."""
  if not 0.0 <= max_level <= 1.0:
    raise ValueError(f"max_level must be in [0, 1], got {max_level}.")
  return jax.random.uniform(rng, (batch_size,), maxval=max_level)
