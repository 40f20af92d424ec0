"""Space-time factorized video U-Net: the denoiser of every pixel-space cascade stage.

A denoiser of the library's contract (`videojax.nn.denoisers`, registered as
'unet3d'): the stage's conditioning tensor (an SSR stage's upsampled input, a TSR
stage's given frames and mask; `nn.conditioning.assemble`) is concatenated to the noisy
input on channels, so one module serves base, SSR, TSR and interpolation stages. With
no temporal layers it is an image model, to be inflated into a video model
(Make-A-Video, see `inflation.py`).

Per resolution level: `num_res_blocks` residual blocks (spatial 1x3x3 conv, optional
zero-initialised temporal 3x1x1 conv, GroupNorm per frame, FiLM from the conditioning
embedding, dropout), each followed by the attention layers that level switches on
(spatial, temporal with relative position bias, cross-attention to text). Levels are
indexed 0 (full resolution) to len(channel_mult) - 1.

Joint image-video training (VDM): examples flagged `is_image` bypass temporal
convolutions and attend only to themselves in temporal attention; GroupNorm works per
frame, so no layer mixes their frames.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from videojax.nn import remat as remat_lib
from videojax.nn.attention import CrossAttention, SpatialAttention, TemporalAttention
from videojax.nn.conditioning import ConditioningEmbedding, FrameConditioning
from videojax.nn.layers import (FeedForward, FiLM, TemporalConv, constrain_video, conv3d,
                                group_norm, per_frame)

Array = jax.Array

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
ATTENTION_IMPLS = (None, "xla", "cudnn")  # jax.nn.dot_product_attention's implementations


class ResBlock(nn.Module):
  """GN-SiLU-conv(1x3x3)[-temporal conv(3x1x1)]-GN-FiLM-SiLU-dropout-conv(1x3x3) + skip."""

  features: int
  temporal: bool
  causal: bool = False
  dropout: float = 0.0
  deterministic: bool = True
  groups: int = 32
  temporal_layers: int = 1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, emb: Array, is_image: Array | None) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = per_frame(group_norm(math.gcd(self.groups, x.shape[-1]), **kw), x)
    h = conv3d(self.features, (1, 3, 3), **kw)(nn.silu(h))
    if self.temporal:
      h = TemporalConv(self.features, causal=self.causal, layers=self.temporal_layers,
                       groups=self.groups, **kw)(h, is_image)
    h = per_frame(group_norm(math.gcd(self.groups, self.features), **kw), h)
    h = FiLM(**kw)(h, emb)
    h = nn.Dropout(self.dropout, broadcast_dims=(2, 3))(nn.silu(h), self.deterministic)
    h = conv3d(self.features, (1, 3, 3), zero_init=True, **kw)(h)
    if x.shape[-1] != self.features:
      x = conv3d(self.features, (1, 1, 1), **kw)(x)
    return constrain_video(x + h)


class Stage(nn.Module):
  """One residual block plus the attention layers its level switches on.

  Order: residual block, spatial attention [+ feed-forward], temporal attention
  [+ feed-forward], cross-attention; the feed-forwards only with `ff_mult` > 0.
  """

  features: int
  temporal_conv: bool
  spatial_attn: bool
  temporal_attn: bool
  cross_attn: bool
  head_dim: int
  causal: bool
  dropout: float
  deterministic: bool
  query_chunk: int = -1
  ff_mult: int = 0
  temporal_conv_layers: int = 1
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, is_image, text, text_mask):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attn_kw = dict(attention_impl=self.attention_impl, **kw)
    heads = max(1, self.features // self.head_dim)
    x = ResBlock(self.features, self.temporal_conv, self.causal, self.dropout,
                 self.deterministic, temporal_layers=self.temporal_conv_layers, name="res",
                 **kw)(x, emb, is_image)
    if self.spatial_attn:
      x = SpatialAttention(num_heads=heads, query_chunk=self.query_chunk, name="spatial_attn",
                           **attn_kw)(x)
      if self.ff_mult:
        x = constrain_video(FeedForward(self.ff_mult, name="spatial_ff", **kw)(x))
    if self.temporal_attn:
      x = TemporalAttention(num_heads=heads, causal=self.causal, name="temporal_attn",
                            **attn_kw)(x, is_image)
      if self.ff_mult:
        x = constrain_video(FeedForward(self.ff_mult, name="temporal_ff", **kw)(x))
    if self.cross_attn:
      x = CrossAttention(num_heads=heads, name="cross_attn", **attn_kw)(x, text, text_mask)
    return constrain_video(x)


class UNet3D(nn.Module):
  """Space-time factorized U-Net on channels-last video [B, T, H, W, C].

  Attributes:
    out_channels: channels of the prediction (3 for RGB, or a latent width).
    in_channels: channels of the noisy input z.
    base_channels: width of level 0; level l has base_channels * channel_mult[l].
    channel_mult: width multiplier per level; its length is the number of levels.
    num_res_blocks: residual blocks per level on the way down (one more on the way up).
    temporal_conv_levels: levels whose residual blocks have a temporal 3x1x1 conv.
    temporal_conv_layers: convolutions in that temporal branch (1: one conv, as in VDM
      and Make-A-Video; ModelScope's and diffusers' UNet3D have 4, with GroupNorm and
      SiLU between them; see `TemporalConv`).
    spatial_attn_levels, temporal_attn_levels, cross_attn_levels: levels with each
      attention layer; the middle block uses those of the last level.
    mid_attn: also give the first of the middle block's two stages every attention
      layer whatever the last level has (residual, attention, residual: the middle
      block of Stable Diffusion and diffusers' UNet3DConditionModel).
    temporal_downsample: per level transition (len(channel_mult) - 1 entries), whether
      it also halves T. Not allowed together with `is_image` inputs.
    head_dim: attention head width (heads = channels // head_dim).
    causal_temporal: causal mask in temporal attention (frame i sees frames <= i).
    text_dim: width of the text embeddings, or 0 for no text conditioning.
    frame_positions: 0 (default) or the most frames T of an input: a learned absolute
      frame-position embedding [T, base_channels] is added after the stem (zero at
      init, so it can be added to a trained model). Temporal attention's bias and the
      temporal convolutions see relative positions only (absolute ones only through
      zero padding at the clip's ends); this gives the network the frame index
      directly. Not added to `is_image` examples.
    frame_conditioning: make the FiLM conditioning vector per frame with
      `FrameConditioning` (an MLP of the clip embedding, the text and the frame's place
      in time; output zero-initialised, so it can be added to a trained model with
      `train.init_from` without changing its function at first). Needs no temporal
      down-sampling.
    frame_field: with frame_conditioning, the same MLP also gives a per-frame map over
      the frame's coordinates, added to the features the output conv reads (zero at
      init): what lets the caption place the object differently in early and late
      frames (see FrameConditioning). It sits at the output rather than after the stem
      because at high noise, where that placement is decided, the network's output
      hardly depends on its input, so a map at the stem gets little gradient. A few
      hundred trainer steps do not teach it the sign of the motion; fitted on the
      frozen stage from cached outputs of thousands of clips (`videojax.train.field`)
      it learns it (benchmarks/results/direction_field.md).
    dropout: dropout rate inside residual blocks (training only).
    remat: 'none', 'full' or 'save_dots': rematerialisation of every stage
      (`videojax.nn.remat.remat`: flax's on GPU / TPU, one that XLA's CPU compiler
      keeps on CPU, so that CPU plans and CPU training see its memory savings).
    attn_query_chunk: spatial attention goes over this many queries at a time in
      frames with more positions (0: never; -1: 128 on CPU, where it is faster, and
      no chunking elsewhere), bounding its memory; same results.
    attn_ff_mult: 0 (default: attention layers alone, as in VDM and Imagen Video) or
      the hidden-width multiple of a GEGLU feed-forward after every spatial and every
      temporal attention layer, which makes them transformer blocks as in Stable
      Diffusion, Video LDM and diffusers' UNet3DConditionModel (zero-initialised: a
      fresh one is the identity, so it can be added to a trained model).
    attention_impl: the kernel of every attention layer, passed to
      `jax.nn.dot_product_attention`: None (default: XLA's attention, and on CPU the
      library's chunked loops), 'xla', or 'cudnn' (cuDNN's fused flash attention: a
      GPU and bfloat16 / float16 compute `dtype`; checked before any compute).
      Parameters do not depend on it, so a checkpoint trained with one loads with any.
    dtype, param_dtype: compute and parameter dtypes.
  """

  # The denoiser contract's class attributes (videojax.nn.denoisers).
  RUN_FIELDS = ("dtype", "param_dtype", "remat", "attn_query_chunk", "attention_impl",
                "dropout")
  SUPPORTS_IMAGES = True

  out_channels: int = 3
  in_channels: int = 3
  base_channels: int = 64
  channel_mult: Sequence[int] = (1, 2, 4)
  num_res_blocks: int = 2
  temporal_conv_levels: Sequence[int] = (0, 1, 2)
  temporal_conv_layers: int = 1
  spatial_attn_levels: Sequence[int] = (2,)
  temporal_attn_levels: Sequence[int] = (2,)
  cross_attn_levels: Sequence[int] = (2,)
  mid_attn: bool = False
  temporal_downsample: Sequence[bool] = (False, False)
  head_dim: int = 64
  causal_temporal: bool = False
  text_dim: int = 0
  frame_positions: int = 0
  frame_conditioning: bool = False
  frame_field: bool = False
  dropout: float = 0.0
  remat: str = "none"
  attn_query_chunk: int = -1
  attn_ff_mult: int = 0
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _check_attention_impl(self):
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"Unknown attention_impl {self.attention_impl!r}; expected one of "
                       f"{ATTENTION_IMPLS}.")
    if self.attention_impl != "cudnn":
      return
    if jnp.dtype(self.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
      raise ValueError(f"attention_impl='cudnn' needs a bfloat16 or float16 compute dtype, "
                       f"got dtype={jnp.dtype(self.dtype).name}; set model.dtype='bfloat16' "
                       "or attention_impl=None.")
    if jax.default_backend() != "gpu":
      raise ValueError(f"attention_impl='cudnn' needs a GPU, but JAX's backend is "
                       f"{jax.default_backend()!r}; use attention_impl=None (or 'xla').")

  def _check_inputs(self, z, logsnr, text, text_mask, cond, aug_logsnr, is_image):
    """Shape and configuration checks, all on static shapes: they run before compute."""
    self._check_attention_impl()
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat policy {self.remat!r}; expected one of "
                       f"{tuple(REMAT_POLICIES)}.")
    if self.temporal_conv_layers < 1:
      raise ValueError(f"temporal_conv_layers must be at least 1, got "
                       f"{self.temporal_conv_layers}.")
    if self.attn_ff_mult < 0:
      raise ValueError(f"attn_ff_mult must be 0 (no feed-forward) or a positive hidden-width "
                       f"multiple, got {self.attn_ff_mult}.")
    levels = len(self.channel_mult)
    if len(self.temporal_downsample) != levels - 1:
      raise ValueError(f"temporal_downsample needs {levels - 1} entries (one per level "
                       f"transition), got {len(self.temporal_downsample)}.")
    if z.ndim != 5 or z.shape[-1] != self.in_channels:
      raise ValueError(f"Expected z of shape [B, T, H, W, {self.in_channels}], got {z.shape}.")
    b, t, h, w, _ = z.shape
    fs, ft = 2**(levels - 1), 2**sum(bool(d) for d in self.temporal_downsample)
    if h % fs or w % fs or t % ft:
      raise ValueError(
          f"Input T, H, W = {t}, {h}, {w} must be divisible by the network's down-sampling "
          f"factors {ft}, {fs}, {fs}; pad or crop the video, or change channel_mult / "
          "temporal_downsample.")
    if jnp.shape(logsnr) != (b,):
      raise ValueError(f"logsnr must have shape [B] = ({b},), got {jnp.shape(logsnr)}.")
    if self.text_dim:
      if text is None or text_mask is None:
        raise ValueError("This U-Net is text-conditioned (text_dim="
                         f"{self.text_dim}): pass text [B, L, {self.text_dim}] and text_mask.")
      if text.ndim != 3 or text.shape[0] != b or text.shape[-1] != self.text_dim:
        raise ValueError(f"Expected text embeddings [{b}, L, {self.text_dim}], got {text.shape}.")
      if text_mask.shape != text.shape[:2]:
        raise ValueError(f"text_mask must have shape {text.shape[:2]}, got {text_mask.shape}.")
    if (cond is None) != (aug_logsnr is None):
      raise ValueError("cond and aug_logsnr come together (a conditioned stage's input and "
                       "its augmentation level); got only one of them.")
    if cond is not None and (cond.ndim != 5 or cond.shape[:4] != (b, t, h, w)):
      raise ValueError(f"Expected cond [{b}, {t}, {h}, {w}, C] on z's grid "
                       f"(nn.conditioning.assemble), got {cond.shape}.")
    if self.frame_positions and t > self.frame_positions:
      raise ValueError(f"This U-Net has frame-position embeddings for at most "
                       f"{self.frame_positions} frames (frame_positions), got T = {t}.")
    if self.frame_field and not self.frame_conditioning:
      raise ValueError("frame_field is part of frame_conditioning: set both.")
    if self.frame_conditioning and any(self.temporal_downsample):
      raise ValueError("frame_conditioning needs a U-Net without temporal down-sampling "
                       "(its per-frame embedding is made for the input's T frames).")
    if self.causal_temporal and any(self.temporal_downsample):
      raise ValueError("causal_temporal needs a U-Net without temporal down-sampling "
                       "(a strided temporal conv would let frame i see frame i + 1).")
    if is_image is not None:
      if jnp.shape(is_image) != (b,):
        raise ValueError(f"is_image must have shape [B] = ({b},), got {jnp.shape(is_image)}.")
      if any(self.temporal_downsample):
        raise ValueError("is_image (joint image-video training) needs a U-Net without "
                         "temporal down-sampling: it would mix an image example's frames.")

  @nn.nowrap
  def frame_conditioning_sizes(self) -> tuple[int, int]:
    """(dim, field_channels) of the `FrameConditioning` this U-Net builds: its
    conditioning width and the level-0 width of its map (0 without `frame_field`)."""
    return (4 * self.base_channels,
            self.base_channels * self.channel_mult[0] if self.frame_field else 0)

  @nn.compact
  def __call__(self, z: Array, logsnr: Array, *, text: Array | None = None,
               text_mask: Array | None = None, cond: Array | None = None,
               aug_logsnr: Array | None = None, is_image: Array | None = None,
               train: bool = False) -> Array:
    """Predicts eps, x0 or v (whatever it is trained for) for z: the denoiser contract
    (`videojax.nn.denoisers`).

    Args:
      z: noisy video [B, T, H, W, in_channels].
      logsnr: [B] noise levels.
      text, text_mask: [B, L, text_dim] embeddings and [B, L] mask (1 = real token).
      cond: [B, T, H, W, C_cond] the stage's conditioning on z's grid
        (`nn.conditioning.assemble`), concatenated to z; None for a base stage.
      aug_logsnr: [B] augmentation level of the conditioning (with `cond`).
      is_image: [B] bool; True makes that example's frames independent images.
      train: enables dropout (needs a 'dropout' rng).

    Returns:
      [B, T, H, W, out_channels] float32.
    """
    self._check_inputs(z, logsnr, text, text_mask, cond, aug_logsnr, is_image)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, t, h, w, _ = z.shape
    emb_dim = 4 * self.base_channels
    emb = ConditioningEmbedding(emb_dim, use_text=bool(self.text_dim),
                                use_aug_level=cond is not None, name="cond_emb", **kw)(
                                    logsnr, text, text_mask, aug_logsnr)  # [B, E]
    field = None
    if self.frame_conditioning:
      emb, field = FrameConditioning(*self.frame_conditioning_sizes(),
                                           name="frame_cond", **kw)(
          emb, t, text if self.text_dim else None, text_mask, is_image, (h, w))
      # emb [B, T, E]; field [B, T, H, W, level-0 width] or None
    x = z if cond is None else jnp.concatenate([z, cond.astype(z.dtype)], axis=-1)
    text = None if not self.text_dim else text.astype(self.dtype)

    policy = REMAT_POLICIES[self.remat]
    stage_cls = Stage if self.remat == "none" else remat_lib.remat(Stage, policy=policy)
    levels = len(self.channel_mult)

    def stage(features, level, name, attn=False):  # attn: every attention layer, any level
      return stage_cls(
          features, temporal_conv=level in self.temporal_conv_levels,
          spatial_attn=attn or level in self.spatial_attn_levels,
          temporal_attn=attn or level in self.temporal_attn_levels,
          cross_attn=bool(self.text_dim) and (attn or level in self.cross_attn_levels),
          head_dim=self.head_dim, causal=self.causal_temporal, dropout=self.dropout,
          deterministic=not train, query_chunk=self.attn_query_chunk,
          ff_mult=self.attn_ff_mult, temporal_conv_layers=self.temporal_conv_layers,
          attention_impl=self.attention_impl, name=name, **kw)

    rgb_in = ("conv_t", "conv_h", "conv_w", "image_channels", "conv_out")
    x = constrain_video(conv3d(self.base_channels, (1, 3, 3), axes=rgb_in, name="stem", **kw)(
        x.astype(self.dtype)))
    if self.frame_positions:
      pos = self.param("frame_pos", nn.with_logical_partitioning(
          nn.initializers.zeros, ("frames", "conv_out")),
          (self.frame_positions, self.base_channels), self.param_dtype)[:t]  # [T, C]
      pos = jnp.asarray(pos, self.dtype)[None, :, None, None, :]  # [1, T, 1, 1, C]
      if is_image is not None:
        pos = pos * (1 - jnp.asarray(is_image, self.dtype))[:, None, None, None, None]
      x = constrain_video(x + pos)
    skips = [x]
    for level, mult in enumerate(self.channel_mult):
      for i in range(self.num_res_blocks):
        x = stage(self.base_channels * mult, level, f"down{level}_{i}")(
            x, emb, is_image, text, text_mask)
        skips.append(x)
      if level < levels - 1:
        tdown = self.temporal_downsample[level]
        x = constrain_video(conv3d(x.shape[-1], (3 if tdown else 1, 3, 3),
                             strides=(2 if tdown else 1, 2, 2), name=f"down{level}_sample",
                             **kw)(x))
        skips.append(x)
    mid = self.base_channels * self.channel_mult[-1]
    x = stage(mid, levels - 1, "mid_0", self.mid_attn)(x, emb, is_image, text, text_mask)
    x = stage(mid, levels - 1, "mid_1")(x, emb, is_image, text, text_mask)
    for level in reversed(range(levels)):
      for i in range(self.num_res_blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        x = stage(self.base_channels * self.channel_mult[level], level, f"up{level}_{i}")(
            x, emb, is_image, text, text_mask)
      if level > 0:
        tup = self.temporal_downsample[level - 1]
        x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        if tup:
          x = jnp.repeat(x, 2, axis=1)
        x = constrain_video(conv3d(x.shape[-1], (1, 3, 3), name=f"up{level}_sample", **kw)(x))
    x = nn.silu(per_frame(group_norm(math.gcd(32, x.shape[-1]), name="out_norm", **kw), x))
    if field is not None:  # [B, T, H, W, C]: right before the output conv, where it acts
      x = x + field.astype(x.dtype)  # on the prediction directly, even at pure noise
    rgb_out = ("conv_t", "conv_h", "conv_w", "conv_in", "image_channels")
    out = conv3d(self.out_channels, (1, 3, 3), zero_init=True, axes=rgb_out, name="out",
                 **kw)(x)
    return out.astype(jnp.float32)
