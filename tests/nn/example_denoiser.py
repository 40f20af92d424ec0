"""A small denoiser written against the denoiser contract (`videojax.nn.denoisers`) only.

It shows what adding a denoiser takes: one module with the contract's call, its fields
`in_channels`, `out_channels` and `text_dim`, and its class attributes, plus one
`denoisers.register(name, cls)`. The stage network, the train set-up and the samplers
then run it unchanged (tests/nn/test_denoiser_contract.py checks that, and the contract).

The network: a conditioning vector from the noise level (sinusoidal features), the
augmentation level of `cond` when it is given, and the text mean-pooled over its mask;
`cond` concatenated to z on channels; spatial 1x3x3 convolutions modulated by FiLM from
that vector, one residual temporal 3x1x1 convolution, and a zero-initialised output
convolution. It supports `is_image`: the temporal convolution is the only layer that
mixes frames, and it is skipped for examples so flagged.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_AXES = ("conv_t", "conv_h", "conv_w", "conv_in", "conv_out")


def _sinusoid(x: jax.Array, dim: int) -> jax.Array:
  """[B] -> [B, dim] sin / cos features at geometric frequencies 1 ... 1 / 1000."""
  freqs = jnp.exp(-math.log(1000.0) * jnp.arange(dim // 2) / (dim // 2))
  args = x.astype(jnp.float32)[:, None] * freqs
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ExampleConvDenoiser(nn.Module):
  """A few FiLM-modulated 3-D convolutions on channels-last video [B, T, H, W, C].

  Attributes:
    in_channels, out_channels: channels of z and of the prediction.
    text_dim: width of the text embeddings (0: no text).
    features: width of the hidden convolutions.
    emb_dim: width of the conditioning vector.
    dtype: compute dtype (parameters are float32).
  """

  RUN_FIELDS = ("dtype",)
  SUPPORTS_IMAGES = True

  in_channels: int = 3
  out_channels: int = 3
  text_dim: int = 0
  features: int = 16
  emb_dim: int = 32
  dtype: jnp.dtype = jnp.float32

  def _conv(self, features, kernel, axes=CONV_AXES, zero_init=False, name=None):
    init = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
    return nn.Conv(features, kernel, padding="SAME", dtype=self.dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(init, axes),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                          axes[-1:]))

  def _dense(self, features, axes=("embed", "mlp")):
    return nn.Dense(features, dtype=self.dtype,
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                             axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           axes[-1:]))

  def _film(self, h, emb):  # h [B, T, H, W, F], emb [B, E]
    scale, shift = jnp.split(self._dense(2 * h.shape[-1])(emb), 2, axis=-1)
    return h * (1.0 + scale[:, None, None, None]) + shift[:, None, None, None]

  @nn.compact
  def __call__(self, z, logsnr, *, text=None, text_mask=None, cond=None, aug_logsnr=None,
               is_image=None, train=False):
    """The prediction [B, T, H, W, out_channels] float32 (the contract's arguments;
    `train` changes nothing: there is no dropout)."""
    if self.text_dim and (text is None or text_mask is None):
      raise ValueError(f"This denoiser reads text (text_dim={self.text_dim}): pass text "
                       f"[B, L, {self.text_dim}] and text_mask [B, L].")
    emb = _sinusoid(logsnr * 50.0, self.emb_dim)  # [B, E]
    if cond is not None:
      emb = emb + self._dense(self.emb_dim)(_sinusoid(aug_logsnr * 50.0, self.emb_dim))
    if self.text_dim:
      m = text_mask.astype(jnp.float32)[..., None]  # [B, L, 1]: padding gets no weight
      pooled = (text.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
      emb = emb + self._dense(self.emb_dim)(pooled)
    emb = self._dense(self.emb_dim, ("mlp", "embed"))(nn.silu(self._dense(self.emb_dim)(emb)))
    x = z if cond is None else jnp.concatenate([z, cond.astype(z.dtype)], axis=-1)
    stem_axes = ("conv_t", "conv_h", "conv_w", "image_channels", "conv_out")
    h = self._conv(self.features, (1, 3, 3), stem_axes)(x.astype(self.dtype))
    h = nn.silu(self._film(h, emb))
    mix = self._conv(self.features, (3, 1, 1))(h)  # the only layer across frames
    if is_image is not None:
      mix = jnp.where(jnp.asarray(is_image, bool)[:, None, None, None, None], 0.0, mix)
    h = h + mix
    h = nn.silu(self._film(self._conv(self.features, (1, 3, 3))(h), emb))
    out_axes = ("conv_t", "conv_h", "conv_w", "conv_in", "image_channels")
    out = self._conv(self.out_channels, (1, 3, 3), out_axes, zero_init=True, name="out")(h)
    return out.astype(jnp.float32)
