"""Attention blocks of the space-time factorized video U-Net (VDM, Imagen Video).

Videos are channels-last `[B, T, H, W, C]`. Three blocks, each pre-norm, residual,
with a zero-initialised output projection so that a freshly initialised block is
exactly the identity (the U-Net starts as its convolutional skeleton):

- `SpatialAttention`: the H*W positions of each frame attend to each other; the
  B*T frames are independent.
- `TemporalAttention`: the T frames at each pixel attend to each other (B*H*W
  sequences of length T), with a learned T5-style relative position bias, an
  optional causal mask, and a per-example `is_image` flag that turns the mask
  into the identity so that the frames of that example are independent images
  (VDM's joint image-video training).
- `CrossAttention`: video tokens attend to text embeddings under a key mask.

All of them compute attention with `jax.nn.dot_product_attention`, which picks a
fused kernel where one exists (`attention_impl='cudnn'` on GPUs, bf16/fp16 only).
Elsewhere it materialises the [S, heads, L, L] logits: `SpatialAttention` can go over
`query_chunk` queries at a time (`chunked_attention`), so a 64x64 frame's 4096
positions never hold the whole 4096 x 4096 matrix, in the forward or the backward
pass. On XLA's CPU backend every block works in cache-sized pieces: spatial attention
runs a FlashAttention recurrence per (frame, head) (`_flash`), temporal and cross
attention go over chunks of sequences / queries under `jax.checkpoint`
(`videojax.nn.chunks`); results equal the whole computation's.
Every parameter carries logical axis names; the block outputs carry a logical
constraint (a no-op without a mesh and rules).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from videojax.nn import chunks
from videojax.nn.layers import constrain_video, dense

Array = jax.Array

_ONES_EMBED = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
_ZEROS_EMBED = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",))


def relative_position_bucket(relative_position: Array, *, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> Array:
  """T5's bucketing of relative distances: exact when small, log-spaced when large.

  Args:
    relative_position: int array of `key_position - query_position`.
    bidirectional: if True, half the buckets are for keys before the query and half
      for keys after it (the sign separates them); if False (causal), every key
      after the query falls into bucket 0 together with distance 0.
    num_buckets: number of buckets in total.
    max_distance: distances at or beyond this share the last bucket (of their side).

  Returns:
    int32 array of the same shape, values in [0, num_buckets).
  """
  rel = jnp.asarray(relative_position, jnp.int32)
  n = -rel  # > 0: the key lies before the query
  ret = jnp.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    ret = ret + (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  # log-spaced buckets from max_exact up to max_distance; the maximum keeps log > -inf
  # (those entries are small and take the exact branch anyway).
  scaled = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact) / jnp.log(
      max_distance / max_exact)
  val_if_large = max_exact + (scaled * (num_buckets - max_exact)).astype(jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return ret + jnp.where(is_small, n, val_if_large)


def _resolve_heads(block: str, channels: int, num_heads: int | None,
                   head_dim: int | None) -> int:
  """Number of heads from `num_heads` or `head_dim`; raises if they do not fit C."""
  if num_heads is None and head_dim is None:
    raise ValueError(f"{block}: set num_heads or head_dim (both are None).")
  if num_heads is not None and (num_heads <= 0 or channels % num_heads):
    raise ValueError(f"{block}: channels must be divisible by num_heads; expected a "
                     f"multiple of num_heads={num_heads}, got {channels} channels.")
  if head_dim is not None and (head_dim <= 0 or channels % head_dim):
    raise ValueError(f"{block}: channels must be divisible by head_dim; expected a "
                     f"multiple of head_dim={head_dim}, got {channels} channels.")
  if num_heads is not None and head_dim is not None and num_heads * head_dim != channels:
    raise ValueError(f"{block}: num_heads * head_dim must equal channels; expected "
                     f"{num_heads} * {head_dim} = {num_heads * head_dim}, got {channels}.")
  return num_heads if num_heads is not None else channels // head_dim


def _check_video(block: str, x: Array) -> None:
  if x.ndim != 5:
    raise ValueError(f"{block} expects x of rank 5 [B, T, H, W, C], got shape "
                     f"{tuple(x.shape)} (rank {x.ndim}).")


CPU_QUERY_CHUNK = 128  # SpatialAttention's query chunk on CPU (query_chunk=-1)


def _blocks(x: Array, size: int) -> Array:  # [L, ...] -> [L / size, size, ...]
  return x.reshape(x.shape[0] // size, size, *x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _flash(q: Array, k: Array, v: Array, chunk: int) -> Array:
  """softmax(q k^T) v of one sequence, `chunk` queries at a time: [L, D], [K, D] -> [L, D].

  FlashAttention's recurrences (Dao et al. 2022) over query blocks only: the forward
  keeps each row's log-sum-exp, the backward recomputes one block's probabilities and
  accumulates dK, dV, so no [L, K] buffer ever exists. `q` is already scaled.
  """
  return _flash_fwd(q, k, v, chunk)[0]


def _flash_fwd(q, k, v, chunk):
  def block(qc):  # [c, D]
    s = jnp.dot(qc, k.T, preferred_element_type=jnp.float32)  # [c, K]
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.exp(s - m)
    total = jnp.sum(p, axis=-1, keepdims=True)
    o = jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32) / total
    return o.astype(q.dtype), (m + jnp.log(total))[:, 0]

  o, lse = jax.lax.map(block, _blocks(q, chunk))
  o = o.reshape(q.shape[0], v.shape[1])
  return o, (q, k, v, o, lse.reshape(-1))


def _flash_bwd(chunk, res, do):
  q, k, v, o, lse = res
  delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)  # [L]

  def block(carry, xs):  # keys on the rows: [K, c] blocks need no transposes
    dk, dv = carry
    qc, doc, lse_c, delta_c = xs
    pt = jnp.exp(jnp.dot(k, qc.T, preferred_element_type=jnp.float32) - lse_c[None, :])
    dv = dv + jnp.dot(pt.astype(doc.dtype), doc, preferred_element_type=jnp.float32)
    dpt = jnp.dot(v, doc.T, preferred_element_type=jnp.float32)
    dst = pt * (dpt - delta_c[None, :])  # [K, c]
    dq = jax.lax.dot_general(dst, k.astype(jnp.float32), (((0,), (0,)), ((), ())))
    return (dk + jnp.dot(dst, qc.astype(jnp.float32)), dv), dq.astype(q.dtype)

  zeros = jnp.zeros(k.shape, jnp.float32)
  (dk, dv), dq = jax.lax.scan(block, (zeros, zeros), (
      _blocks(q, chunk), _blocks(do, chunk), _blocks(lse, chunk), _blocks(delta, chunk)))
  return dq.reshape(q.shape), dk.astype(k.dtype), dv.astype(v.dtype)


_flash.defvjp(_flash_fwd, _flash_bwd)


def chunked_attention(q: Array, k: Array, v: Array, query_chunk: int,
                      implementation: str | None = None, mask: Array | None = None) -> Array:
  """Softmax attention of q over (k, v), a chunk of queries at a time.

  Each query's softmax is over all keys, so chunking the queries changes no result
  (the test checks values and gradients against `jax.nn.dot_product_attention`).
  On CPU, without a named `implementation` and a mask, every (example, head) runs
  `_flash`: no [L, K] buffer in the forward or backward pass, and 3-4x faster than
  XLA's attention (benchmarks/results/vs_diffusers.md). Elsewhere the chunks call
  `jax.nn.dot_product_attention` under `jax.checkpoint` (Rabe & Staats 2021, without
  their key chunking): the backward pass holds one chunk's probabilities at a time.

  Args:
    q: [S, L, N, D] queries; k, v: [S, K, N, D].
    query_chunk: queries per chunk (0: `jax.nn.dot_product_attention` whole; -1: on
      CPU 128 without a mask and `chunks.CPU_CHUNK` / (N K) with one, 0 elsewhere). The
      CPU flash path loops over the S x N (example, head) pairs, so a mesh that shards
      S gathers them: on a multi-device mesh pass 0.
    implementation: passed to `jax.nn.dot_product_attention` (None: XLA's choice).
    mask: optional bool key mask broadcastable to [S, N, L, K] whose query axis has
      size 1 (a mask per key, e.g. text padding).

  Returns:
    [S, L, N, D].
  """
  cpu = chunks.on_cpu(implementation)
  s, length, heads, d = q.shape
  if mask is not None and mask.shape[-2] != 1:
    raise ValueError(f"chunked_attention takes a key mask (query axis of size 1), got mask "
                     f"of shape {tuple(mask.shape)}; use jax.nn.dot_product_attention.")
  if mask is not None and implementation == "cudnn":
    # cuDNN takes a mask as a bias with full query and key axes (its layout check).
    mask = jnp.broadcast_to(mask, mask.shape[:-2] + (length, k.shape[1]))
  if query_chunk < 0:
    query_chunk = 0 if not cpu else (
        CPU_QUERY_CHUNK if mask is None else chunks.rows_per_chunk(heads * k.shape[1]))
  if not query_chunk or (length <= query_chunk and (not cpu or mask is not None)):
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
  if cpu and mask is None:
    n, size = chunks.equal_chunks(length, query_chunk)  # the last padded with zero queries
    q = jnp.pad(q, ((0, 0), (0, n * size - length), (0, 0), (0, 0)))
    fold = lambda x: x.transpose(0, 2, 1, 3).reshape(s * heads, x.shape[1], d)  # noqa: E731
    qf = fold(q * jnp.asarray(d**-0.5, q.dtype))
    o = jax.lax.map(lambda a: _flash(*a, size), (qf, fold(k), fold(v)))  # [S*N, L', D]
    return o.reshape(s, heads, n * size, d).transpose(0, 2, 1, 3)[:, :length]
  attend = lambda qc: jax.nn.dot_product_attention(  # noqa: E731  [c, S, N, D] -> same
      qc.swapaxes(0, 1), k, v, mask=mask, implementation=implementation).swapaxes(0, 1)
  return chunks.checkpointed(attend, (q.swapaxes(0, 1),), query_chunk).swapaxes(0, 1)


def _split_heads(x: Array, num_heads: int) -> Array:  # [S, L, C] -> [S, L, N, C / N]
  return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


class SpatialAttention(nn.Module):
  """Self-attention among the H*W positions of each frame.

  Pre-norm is a GroupNorm computed per frame (statistics over H, W and the channels
  of a group), so frames stay independent.

  Attributes:
    num_heads: number of heads; or leave None and set `head_dim`.
    head_dim: width of a head; the number of heads is C // head_dim.
    norm_groups: GroupNorm groups (min(norm_groups, C); must divide C).
    attention_impl: passed to `jax.nn.dot_product_attention` (None, 'xla', 'cudnn').
    query_chunk: queries per chunk when a frame has more positions (0: never chunk;
      -1: 128 on CPU, where it is also faster, none elsewhere); see
      `chunked_attention`. Results do not depend on it.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  num_heads: int | None = None
  head_dim: int | None = None
  norm_groups: int = 32
  attention_impl: str | None = None
  query_chunk: int = -1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Args: x: [B, T, H, W, C]. Returns: x + attention(norm(x)), same shape and dtype."""
    _check_video("SpatialAttention", x)
    b, t, h, w, c = x.shape
    n = _resolve_heads("SpatialAttention", c, self.num_heads, self.head_dim)
    groups = min(self.norm_groups, c)
    if c % groups:
      raise ValueError(f"SpatialAttention: channels must be divisible by norm_groups; "
                       f"expected a multiple of {groups}, got {c} channels.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    y = x.reshape(b * t, h, w, c)  # [B*T, H, W, C]: one GroupNorm per frame
    y = nn.GroupNorm(num_groups=groups, scale_init=_ONES_EMBED, bias_init=_ZEROS_EMBED,
                     name="norm", **kw)(y)
    y = y.reshape(b * t, h * w, c)  # [B*T, H*W, C]
    q = _split_heads(dense(c, ("embed", "heads"), name="query", **kw)(y), n)
    k = _split_heads(dense(c, ("embed", "heads"), name="key", **kw)(y), n)
    v = _split_heads(dense(c, ("embed", "heads"), name="value", **kw)(y), n)
    o = chunked_attention(q, k, v, self.query_chunk, self.attention_impl)
    o = o.reshape(b * t, h * w, c)  # [B*T, H*W, C]
    o = dense(c, ("heads", "embed"), zero_init=True, name="out", **kw)(o)
    out = x + o.reshape(b, t, h, w, c).astype(x.dtype)  # [B, T, H, W, C]
    return constrain_video(out)


class TemporalAttention(nn.Module):
  """Self-attention across the T frames at each pixel, with relative position bias.

  Pre-norm is a per-token LayerNorm, so the causal and `is_image` guarantees hold
  exactly: nothing mixes frames or pixels except the attention itself.

  Attributes:
    num_heads: number of heads; or leave None and set `head_dim`.
    head_dim: width of a head; the number of heads is C // head_dim.
    causal: if True, frame i attends only to frames <= i (and the bias uses the
      one-sided buckets).
    num_buckets: relative position buckets (T5 style); the bias table is
      [num_buckets, num_heads].
    max_distance: frame distances at or beyond this share a bucket.
    attention_impl: passed to `jax.nn.dot_product_attention`.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  num_heads: int | None = None
  head_dim: int | None = None
  causal: bool = False
  num_buckets: int = 32
  max_distance: int = 128
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, is_image: Array | None = None) -> Array:
    """Attend across frames.

    Args:
      x: [B, T, H, W, C] video.
      is_image: optional bool [B]; where True the example's frames are independent
        images: each frame attends only to itself (the block then reduces to a
        per-frame value/out projection).

    Returns:
      [B, T, H, W, C], same dtype as x.
    """
    _check_video("TemporalAttention", x)
    b, t, h, w, c = x.shape
    n = _resolve_heads("TemporalAttention", c, self.num_heads, self.head_dim)
    if is_image is not None and tuple(jnp.shape(is_image)) != (b,):
      raise ValueError(f"TemporalAttention expects is_image of shape [B] = ({b},), got "
                       f"{tuple(jnp.shape(is_image))}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    y = nn.LayerNorm(scale_init=_ONES_EMBED, bias_init=_ZEROS_EMBED, name="norm", **kw)(x)
    y = y.transpose(0, 2, 3, 1, 4).reshape(b * h * w, t, c)  # [B*H*W, T, C]
    q = _split_heads(dense(c, ("embed", "heads"), name="query", **kw)(y), n)
    k = _split_heads(dense(c, ("embed", "heads"), name="key", **kw)(y), n)
    v = _split_heads(dense(c, ("embed", "heads"), name="value", **kw)(y), n)

    # Relative position bias: table[bucket(k - q)] -> [1, N, T, T].
    table = self.param(
        "rel_bias",
        nn.with_logical_partitioning(nn.initializers.normal(0.02), ("relpos_buckets", "heads")),
        (self.num_buckets, n), self.param_dtype)  # [num_buckets, N]
    pos = jnp.arange(t)
    buckets = relative_position_bucket(pos[None, :] - pos[:, None], bidirectional=not self.causal,
                                       num_buckets=self.num_buckets,
                                       max_distance=self.max_distance)  # [T_q, T_k]
    bias = jnp.asarray(table, self.dtype)[buckets].transpose(2, 0, 1)[None]  # [1, N, T, T]

    # Mask: causal (or full), replaced by the identity for image examples.
    base = jnp.tril(jnp.ones((t, t), bool)) if self.causal else jnp.ones((t, t), bool)
    if is_image is None:
      mask = base[None, None]  # [1, 1, T, T]
    else:
      eye = jnp.eye(t, dtype=bool)
      per_example = jnp.where(jnp.asarray(is_image, bool)[:, None, None], eye, base)  # [B, T, T]
      mask = jnp.broadcast_to(per_example[:, None, None], (b, h * w, 1, t, t))
      mask = mask.reshape(b * h * w, 1, t, t)  # [B*H*W, 1, T, T]

    attend = lambda q, k, v, m=mask: jax.nn.dot_product_attention(  # noqa: E731
        q, k, v, bias=bias, mask=m, implementation=self.attention_impl)
    if chunks.on_cpu(self.attention_impl):  # a cache's worth of sequences (and masks)
      xs = (q, k, v, mask) if mask.shape[0] > 1 else (q, k, v)
      o = chunks.checkpointed(attend, xs, chunks.rows_per_chunk(n * t * t))
    else:
      o = attend(q, k, v)
    o = o.reshape(b * h * w, t, c)  # [B*H*W, T, C]
    o = dense(c, ("heads", "embed"), zero_init=True, name="out", **kw)(o)
    o = o.reshape(b, h, w, t, c).transpose(0, 3, 1, 2, 4)  # [B, T, H, W, C]
    out = x + o.astype(x.dtype)
    return constrain_video(out)


class CrossAttention(nn.Module):
  """Video tokens attend to text embeddings.

  Queries are all T*H*W positions of an example as one sequence (per-query softmax
  over the text keys, so this equals attending frame by frame). Keys and values come
  from the (unnormalised) text embeddings; padding tokens are masked out. An example
  with no real token gets nothing added (the block is the identity for it), which
  is also what classifier-free guidance's dropped-text examples want.

  Attributes:
    num_heads: number of heads; or leave None and set `head_dim`.
    head_dim: width of a head; the number of heads is C // head_dim.
    text_dim: expected text width D_text; None accepts any (fixed at init).
    attention_impl: passed to `jax.nn.dot_product_attention`.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  num_heads: int | None = None
  head_dim: int | None = None
  text_dim: int | None = None
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, text: Array, text_mask: Array | None = None) -> Array:
    """Attend from video to text.

    Args:
      x: [B, T, H, W, C] video.
      text: [B, L, D_text] text embeddings.
      text_mask: optional [B, L] bool/int, True/1 for real tokens; None: all real.

    Returns:
      [B, T, H, W, C], same dtype as x.
    """
    _check_video("CrossAttention", x)
    b, t, h, w, c = x.shape
    n = _resolve_heads("CrossAttention", c, self.num_heads, self.head_dim)
    if text.ndim != 3 or text.shape[0] != b:
      raise ValueError(f"CrossAttention expects text of shape [B, L, D_text] with B={b}, "
                       f"got {tuple(text.shape)}.")
    if self.text_dim is not None and text.shape[-1] != self.text_dim:
      raise ValueError(f"CrossAttention expects text of width D_text={self.text_dim}, got "
                       f"{text.shape[-1]} (text shape {tuple(text.shape)}).")
    length = text.shape[1]
    if text_mask is None:
      text_mask = jnp.ones((b, length), bool)
    if tuple(jnp.shape(text_mask)) != (b, length):
      raise ValueError(f"CrossAttention expects text_mask of shape [B, L] = ({b}, {length}), "
                       f"got {tuple(jnp.shape(text_mask))}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    text_mask = jnp.asarray(text_mask).astype(bool)  # [B, L]
    has_text = jnp.any(text_mask, axis=1)  # [B]
    # An all-padding example attends to everything (finite, and its output is
    # discarded below) rather than to nothing (a 0/0 softmax in fused kernels).
    key_mask = text_mask | ~has_text[:, None]  # [B, L]

    y = nn.LayerNorm(scale_init=_ONES_EMBED, bias_init=_ZEROS_EMBED, name="norm", **kw)(x)
    y = y.reshape(b, t * h * w, c)  # [B, T*H*W, C]
    q = _split_heads(dense(c, ("embed", "heads"), name="query", **kw)(y), n)
    k = _split_heads(dense(c, ("embed", "heads"), name="key", **kw)(text), n)  # [B, L, N, Dh]
    v = _split_heads(dense(c, ("embed", "heads"), name="value", **kw)(text), n)
    # On CPU a cache's worth of queries at a time (chunked_attention); whole elsewhere.
    o = chunked_attention(q, k, v, -1, self.attention_impl, mask=key_mask[:, None, None, :])
    o = o.reshape(b, t * h * w, c)  # [B, T*H*W, C]
    o = dense(c, ("heads", "embed"), zero_init=True, name="out", **kw)(o)
    o = jnp.where(has_text[:, None, None], o, 0)
    out = x + o.reshape(b, t, h, w, c).astype(x.dtype)  # [B, T, H, W, C]
    return constrain_video(out)
