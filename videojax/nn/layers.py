"""Building blocks shared by every network: embeddings and logically-partitioned Dense.

Every parameter carries logical axis names (`nn.with_logical_partitioning`); the mesh
axes they map to are chosen in `videojax/parallel/` and the configs, never here.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from videojax.nn import chunks

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


def frame_time_features(num_frames: int, dim: int) -> Array:
  """sin / cos features [T, dim] of the centred frame index t - (T - 1) / 2: the same for
  frame t counted from either end up to sign, so neither end of a clip is special."""
  return sinusoidal_embedding(jnp.arange(num_frames) - (num_frames - 1) / 2, dim,
                              max_period=100.0)


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


# ---------------------------------------------------------------------------
# Factorized space-time layers on channels-last video [B, T, H, W, C].

CONV_AXES = ("conv_t", "conv_h", "conv_w", "conv_in", "conv_out")
VIDEO_AXES = ("batch", "frames", "height", "width", "embed")  # activations [B, T, H, W, C]


def constrain_video(x: Array) -> Array:
  """Logical sharding constraint on a block-boundary activation [B, T, H, W, C]."""
  return nn.with_logical_constraint(x, VIDEO_AXES)


class Conv(nn.Module):
  """A 3-D convolution over (T, H, W) of channels-last video [B, T, H, W, C].

  The kernel is stored as [kt, kh, kw, in, out] whatever its shape, but the factorized
  kernels of a space-time U-Net run as 2-D convolutions, which XLA's CPU and GPU
  backends execute far faster than 3-D ones (2.5x for a 1x3x3 conv's forward and
  backward on CPU): a spatial 1 x kh x kw conv on frames [B*T, H, W, C], a temporal
  kt x 1 x 1 conv on [B, T, H*W, C]. Others (a strided 3x3x3) use the 3-D op.
  Parameter names ('kernel', 'bias') and shapes are those of `flax.linen.Conv`.
  """

  features: int
  kernel_size: tuple[int, int, int]
  strides: tuple[int, int, int] = (1, 1, 1)
  padding: Any = "SAME"
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:  # [B, T, H, W, C] -> [B, T', H', W', features]
    kt, kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kt, kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    pad = self.padding
    if isinstance(pad, str):
      pad = pad.upper()
      if pad not in ("SAME", "VALID"):
        raise ValueError(f"Unknown padding {self.padding!r}; use 'SAME', 'VALID' or pairs.")
    else:
      pad = tuple(tuple(p) for p in pad)
    b, t, h, w, c = x.shape
    st = tuple(self.strides)
    if kt == 1 and st[0] == 1 and (isinstance(pad, str) or pad[0] == (0, 0)):
      y = lax.conv_general_dilated(  # spatial: frames as a batch of images
          x.reshape(b * t, h, w, c), kernel[0], st[1:],
          pad if isinstance(pad, str) else pad[1:], dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = y.reshape((b, t) + y.shape[1:])
    elif kh == kw == 1 and st[1:] == (1, 1) and (isinstance(pad, str) or pad[1:] == ((0, 0),
                                                                                    (0, 0))):
      y = lax.conv_general_dilated(  # temporal: pixels along the width axis of an image
          x.reshape(b, t, h * w, c), kernel[:, 0], (st[0], 1),
          pad if isinstance(pad, str) else (pad[0], (0, 0)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = y.reshape((b, y.shape[1], h, w, self.features))
    else:
      y = lax.conv_general_dilated(x, kernel, st, pad,
                                   dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + bias.astype(self.dtype)


def conv3d(features: int, kernel: tuple[int, int, int], *, strides=(1, 1, 1),
           padding="SAME", zero_init: bool = False, axes: tuple[str, ...] = CONV_AXES,
           dtype=jnp.float32, param_dtype=jnp.float32, name: str | None = None) -> Conv:
  """A 3-D convolution over (T, H, W) with logically named kernel axes.

  `axes` names the kernel's (t, h, w, in, out) dimensions; the stem and the output
  conv name their RGB side 'image_channels' so that it is never sharded.
  """
  init = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
  return Conv(features, tuple(kernel), strides=tuple(strides), padding=padding, dtype=dtype,
              param_dtype=param_dtype, name=name,
              kernel_init=nn.with_logical_partitioning(init, axes),
              bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                     axes[-1:]))


def group_norm(num_groups: int = 32, dtype=jnp.float32, param_dtype=jnp.float32,
               name: str | None = None) -> nn.GroupNorm:
  """GroupNorm over channels (statistics per frame: T is folded into the batch)."""
  return nn.GroupNorm(
      num_groups=num_groups, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))


def per_frame(fn, x: Array) -> Array:
  """Applies fn to every frame of x [B, T, H, W, C] as a batch of images [B*T, H, W, C]."""
  b, t = x.shape[:2]
  y = fn(x.reshape((b * t,) + x.shape[2:]))
  return y.reshape((b, t) + y.shape[1:])


class TemporalConv(nn.Module):
  """Residual temporal 3x1x1 convolution, zero-initialised: identity when added.

  Make-A-Video inflates an image model by adding such layers: at initialisation they
  leave the image model's output unchanged. Examples flagged `is_image` bypass the
  layer entirely, so their frames stay independent images (VDM joint training).
  With `layers` > 1 the residual branch is a stack: conv, then (GroupNorm per frame,
  SiLU, conv) `layers` - 1 times, only the last conv zero-initialised (ModelScope's
  and diffusers' TemporalConvLayer has 4 such layers).
  """

  features: int
  kernel_size: int = 3
  causal: bool = False  # pad only on the past side: frame i sees frames <= i
  layers: int = 1
  groups: int = 32
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, is_image: Array | None = None) -> Array:  # [B, T, H, W, C]
    if x.shape[-1] != self.features:
      raise ValueError(f"TemporalConv has {self.features} channels, input has {x.shape[-1]}.")
    if self.layers < 1:
      raise ValueError(f"TemporalConv needs at least one layer, got layers={self.layers}.")
    k = self.kernel_size
    pad = ((k - 1, 0) if self.causal else ((k - 1) // 2, k // 2), (0, 0), (0, 0))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = x
    for i in range(self.layers):
      if i:
        h = nn.silu(per_frame(group_norm(math.gcd(self.groups, self.features), **kw), h))
      h = conv3d(self.features, (k, 1, 1), padding=pad, zero_init=i == self.layers - 1,
                 **kw)(h)
    if is_image is None:
      return x + h
    keep = jnp.logical_not(is_image).reshape((-1,) + (1,) * (x.ndim - 1))
    return x + jnp.where(keep, h, jnp.zeros_like(h))


class FiLM(nn.Module):
  """Feature-wise scale and shift from a conditioning vector: h * (1 + s) + b.

  The vector is [B, E] (one per example) or [B, T, E] (one per frame of a video
  h [B, T, H, W, C]). Zero-initialised, so it starts as the identity.
  """

  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, emb: Array) -> Array:  # [B, ..., C], [B, E] or [B, T, E]
    c = h.shape[-1]
    if emb.ndim == 3 and emb.shape[:2] != h.shape[:2]:
      raise ValueError(f"Per-frame conditioning {emb.shape} does not match the video's "
                       f"[B, T] = {h.shape[:2]}.")
    ss = dense(2 * c, ("embed", "mlp"), zero_init=True, dtype=self.dtype,
               param_dtype=self.param_dtype)(nn.silu(emb))  # [B, (T,) 2C]
    ss = ss.reshape(ss.shape[:-1] + (1,) * (h.ndim - ss.ndim) + (2 * c,))
    scale, shift = jnp.split(ss, 2, axis=-1)
    return h * (1.0 + scale) + shift


class FeedForward(nn.Module):
  """Pre-LayerNorm GEGLU feed-forward on the channels of every token, residual.

  x + W_out (a * gelu(g)) + b_out, a = W_value LN(x) + b_value, g = W_gate LN(x) +
  b_gate, hidden width F = `mult` * C (gelu's tanh form, flax's default): the
  feed-forward of a transformer block (Shazeer 2020; Stable Diffusion's and diffusers'
  `BasicTransformerBlock`). The output projection is zero-initialised, so a fresh
  block is the identity. Acts per token: frames, pixels and examples stay separate.
  On CPU it runs on cache-sized chunks of tokens (`videojax.nn.chunks`); it has two
  projections rather than one of width 2F split in two, whose [.., 2F] buffer costs
  memory traffic too (benchmarks/results/vs_diffusers.md).
  """

  mult: int = 4
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:  # [..., C] -> [..., C]
    c = x.shape[-1]
    f = self.mult * c

    def param(name, init, shape, axes):
      value = self.param(name, nn.with_logical_partitioning(init, axes), shape,
                         self.param_dtype)
      return jnp.asarray(value, self.dtype)

    ones, zeros = nn.initializers.ones_init(), nn.initializers.zeros_init()
    scale, shift = param("norm_scale", ones, (c,), ("embed",)), param("norm_bias", zeros, (c,),
                                                                      ("embed",))
    w_value = param("value_kernel", nn.initializers.lecun_normal(), (c, f), ("embed", "mlp"))
    w_gate = param("gate_kernel", nn.initializers.lecun_normal(), (c, f), ("embed", "mlp"))
    b_value, b_gate = (param(n, zeros, (f,), ("mlp",)) for n in ("value_bias", "gate_bias"))
    w_out = param("out_kernel", zeros, (f, c), ("mlp", "embed"))
    b_out = param("out_bias", zeros, (c,), ("embed",))

    def block(rows: Array) -> Array:  # [R, C] -> [R, C]
      y = rows.astype(self.dtype)
      mean = jnp.mean(y, axis=-1, keepdims=True)
      var = jnp.mean(jnp.square(y - mean), axis=-1, keepdims=True)
      y = (y - mean) * lax.rsqrt(var + 1e-6) * scale + shift
      h = (y @ w_value + b_value) * nn.gelu(y @ w_gate + b_gate)
      return rows + (h @ w_out + b_out).astype(rows.dtype)

    flat = x.reshape(-1, c)  # [tokens, C]
    rows = chunks.rows_per_chunk(f) if chunks.on_cpu() else flat.shape[0]
    return chunks.checkpointed(block, (flat,), rows).reshape(x.shape)
