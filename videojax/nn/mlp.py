"""A small residual MLP denoiser for low-dimensional data (the toy demo, tests).

It takes points z [B, D], the noise level and optionally a class label (with an
extra "null" label for classifier-free guidance), and returns a prediction [B, D] in
whatever parameterization it is trained for.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from videojax.nn.layers import NoiseLevelEmbedding, dense

Array = jax.Array


class MLPDenoiser(nn.Module):
  """Residual MLP with FiLM-style additive conditioning.

  Attributes:
    features: output width D (the data dimension).
    width: hidden width.
    depth: number of residual blocks.
    emb_dim: width of the noise-level (and label) embedding.
    num_classes: 0 for unconditional; else labels in [0, num_classes], where
      `num_classes` itself is the null label used for classifier-free guidance.
  """

  features: int
  width: int = 256
  depth: int = 3
  emb_dim: int = 64
  num_classes: int = 0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array, logsnr: Array, labels: Array | None = None) -> Array:
    if z.ndim != 2 or z.shape[-1] != self.features:
      raise ValueError(f"MLPDenoiser expects z of shape [B, {self.features}], got {z.shape}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    emb = NoiseLevelEmbedding(self.emb_dim, **kw)(logsnr)  # [B, E]
    if self.num_classes:
      if labels is None:
        raise ValueError("This MLPDenoiser is class-conditional: pass labels "
                         f"(use {self.num_classes} for the unconditional null label).")
      table = nn.Embed(self.num_classes + 1, self.emb_dim, param_dtype=self.param_dtype,
                       embedding_init=nn.with_logical_partitioning(
                           nn.initializers.normal(1.0), ("vocab", "embed")))
      emb = emb + table(labels)
    h = dense(self.width, ("embed", "mlp"), **kw)(z)  # [B, W]
    for _ in range(self.depth):
      r = nn.LayerNorm(**kw)(h)
      r = r + dense(self.width, ("embed", "mlp"), **kw)(nn.silu(emb))
      r = dense(self.width, ("mlp", "mlp"), **kw)(nn.silu(r))
      r = dense(self.width, ("mlp", "mlp"), **kw)(nn.silu(r))
      h = h + r
    h = nn.silu(nn.LayerNorm(**kw)(h))
    return dense(self.features, ("mlp", "embed"), zero_init=True, **kw)(h).astype(jnp.float32)
