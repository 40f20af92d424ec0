"""Building blocks shared by every network: embeddings and logically-partitioned Dense.

Every parameter carries logical axis names (`nn.with_logical_partitioning`); the mesh
axes they map to are chosen in `videojax/parallel/` and the configs, never here.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def sinusoidal_embedding(x: Array, dim: int, max_period: float = 10_000.0) -> Array:
  """Transformer-style sin/cos features of a scalar per example.

  Args:
    x: [B] positions (a noise level scaled to roughly [-1000, 1000], a frame index...).
    dim: even embedding width.
    max_period: the longest wavelength.

  Returns:
    [B, dim] float32: [sin(x * f_k), cos(x * f_k)] with f_k geometric from 1 to
    1 / max_period.
  """
  if dim % 2:
    raise ValueError(f"sinusoidal_embedding needs an even dim, got {dim}.")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(x, jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def dense(features: int, axes: tuple[str, str], *, zero_init: bool = False,
          dtype=jnp.float32, param_dtype=jnp.float32, name: str | None = None) -> nn.Dense:
  """nn.Dense whose kernel carries logical axis names `axes` (input, output)."""
  init = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
  return nn.Dense(
      features, dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=nn.with_logical_partitioning(init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]))


class NoiseLevelEmbedding(nn.Module):
  """log-SNR -> conditioning vector: sinusoidal features, then a 2-layer MLP.

  log-SNR lives in about [-20, 20]; it is scaled by `scale` so that the sinusoid's
  frequencies (1 ... 1 / max_period) resolve it finely.
  """

  dim: int
  scale: float = 50.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, logsnr: Array) -> Array:  # [B] -> [B, dim]
    h = sinusoidal_embedding(logsnr * self.scale, self.dim)
    h = dense(4 * self.dim, ("embed", "mlp"), dtype=self.dtype, param_dtype=self.param_dtype)(h)
    h = dense(self.dim, ("mlp", "embed"), dtype=self.dtype,
              param_dtype=self.param_dtype)(nn.silu(h))
    return h
