"""What a denoising network is conditioned on, assembled into network inputs.

A stage's kind fixes what it conditions on besides the text (`STAGE_KINDS`): nothing
(base), a lower-resolution video (ssr) or given frames on its frame grid (tsr: temporal
super-resolution, interpolation, extension). `assemble` turns that into the one
conditioning tensor on the output's grid that every denoiser takes (`nn.denoisers`),
so no denoiser knows about stage kinds.

- `ConditioningEmbedding`: noise level (log-SNR, sinusoidal + MLP) + attention-pooled
  text + the augmentation level of a conditioning video, summed into one vector that
  FiLM-modulates every residual block.
- `FrameConditioning`: that vector made per frame by a function of the text and the
  frame's place in time (for direction words; `UNet3D.frame_conditioning`).
- `assemble`, `cond_video_shape`, `check_residual`: a stage kind's conditioning inputs.
- `upsample_video`: an SSR stage's low-resolution input resized to the output size.
- `place_frames`: a TSR / interpolation / extension stage's given frames placed on the
  output's frame grid, with a mask saying which frames are given.
- `blend_given_frames`, `conditioning_reference`: the deterministic upsampling of a
  stage's conditioning (bicubic resize for SSR, linear blending of the given frames for
  TSR), which a residual stage (`diffusion.residual`) learns to correct.
- `project_to_low_res`: an SSR sample made consistent with its low-resolution input.
The data pipeline and the cascade use the same two functions, so a stage sees at
sampling time exactly what it was trained on.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from videojax.nn.layers import NoiseLevelEmbedding, dense, frame_time_features

Array = jax.Array
STAGE_KINDS = ("base", "tsr", "ssr")


def _check_kind(kind: str) -> None:
  if kind not in STAGE_KINDS:
    raise ValueError(f"Unknown stage kind {kind!r}; expected one of {STAGE_KINDS}.")


def cond_video_shape(kind: str, shape: tuple[int, ...], spatial_factor: int = 1
                     ) -> tuple[int, ...] | None:
  """The conditioning video's shape for a stage of `kind` making videos of `shape`
  [B, T, H, W, C]: None (base), [B, T, H / spatial_factor, W / spatial_factor, C] (ssr)
  or [B, T, H, W, C] with the given frames placed (tsr, with a mask [B, T])."""
  _check_kind(kind)
  b, t, h, w, c = shape
  if kind == "base":
    return None
  if kind == "ssr":
    return (b, t, h // spatial_factor, w // spatial_factor, c)
  return (b, t, h, w, c)


def assemble(kind: str, shape: tuple[int, ...], cond_video: Array | None = None,
             cond_mask: Array | None = None) -> Array | None:
  """A stage's conditioning as one tensor on the output grid, for any denoiser.

  Args:
    kind: the stage kind (`STAGE_KINDS`).
    shape: [B, T, H, W, C] of the stage's output (its noisy input z).
    cond_video: ssr: the (noise-augmented) low-resolution video [B, T, h, w, C'];
      tsr: the given frames on the output grid [B, T, H, W, C'] (`place_frames`).
    cond_mask: tsr only: [B, T], 1 on the given frames.

  Returns:
    None (base); ssr: the input upsampled to H x W [B, T, H, W, C'] float32; tsr: the
    given frames (zero elsewhere) and the mask as one more channel [B, T, H, W, C' + 1].

  Raises:
    ValueError: inputs that do not fit the kind (checked on shapes: before compute).
  """
  _check_kind(kind)
  b, t, h, w = shape[:4]
  if kind == "base":
    if cond_video is not None or cond_mask is not None:
      raise ValueError("A base stage takes no conditioning video; drop cond_video / "
                       "cond_mask or use an 'ssr' / 'tsr' stage.")
    return None
  if cond_video is None or cond_video.ndim != 5 or cond_video.shape[:2] != (b, t):
    raise ValueError(f"A '{kind}' stage needs cond_video [{b}, {t}, h, w, C], got "
                     f"{None if cond_video is None else cond_video.shape}.")
  if kind == "ssr":
    return upsample_video(cond_video, h, w).astype(jnp.float32)
  if cond_video.shape[2:4] != (h, w) or cond_mask is None or cond_mask.shape != (b, t):
    raise ValueError(
        f"A 'tsr' stage needs cond_video [{b}, {t}, {h}, {w}, C] with the given frames "
        f"placed on the output grid and cond_mask [{b}, {t}] (see place_frames); got "
        f"{cond_video.shape} and {None if cond_mask is None else cond_mask.shape}.")
  m = cond_mask.astype(jnp.float32)[:, :, None, None, None]  # [B, T, 1, 1, 1]
  return jnp.concatenate([cond_video.astype(jnp.float32) * m,
                          jnp.broadcast_to(m, (b, t, h, w, 1))], axis=-1)


def upsample_video(video: Array, height: int, width: int, method: str = "bilinear") -> Array:
  """Resizes every frame of [B, T, h, w, C] to [B, T, height, width, C].

  `jax.image.resize` with antialiasing; 'bilinear' or 'bicubic' (Imagen uses bicubic
  upsampling of the SR inputs).
  """
  if video.ndim != 5:
    raise ValueError(f"Expected a video [B, T, H, W, C], got shape {video.shape}.")
  b, t, _, _, c = video.shape
  out = jax.image.resize(video.astype(jnp.float32), (b, t, height, width, c), method=method)
  return out.astype(video.dtype)


def place_frames(video: Array, num_frames: int, stride: int, offset: int = 0
                 ) -> tuple[Array, Array]:
  """Places given frames on a denser frame grid, for temporal super-resolution.

  Args:
    video: [B, t, H, W, C], the frames that are given.
    num_frames: T, frames of the output grid.
    stride: given frame k lands on output frame offset + k * stride.
    offset: the first given frame's position.

  Returns:
    (placed [B, T, H, W, C] with zeros on frames not given,
     mask [B, T] float32, 1 where a frame is given).
  """
  b, t = video.shape[:2]
  last = offset + (t - 1) * stride
  if stride < 1 or offset < 0 or last >= num_frames:
    raise ValueError(
        f"Cannot place {t} frames at offset {offset} with stride {stride} on a grid of "
        f"{num_frames} frames (the last would land on frame {last}).")
  idx = offset + stride * jnp.arange(t)
  placed = jnp.zeros((b, num_frames) + video.shape[2:], video.dtype).at[:, idx].set(video)
  mask = jnp.zeros((b, num_frames), jnp.float32).at[:, idx].set(1.0)
  return placed, mask


def blend_given_frames(placed: Array, mask: Array) -> Array:
  """Fills the frames not given by linear blending of the nearest given ones.

  Args:
    placed: [B, T, H, W, C], given frames on the output grid (as `place_frames` makes).
    mask: [B, T], > 0 where a frame is given.

  Returns:
    [B, T, H, W, C] float32: given frames unchanged; a frame between two given ones
    is their mix in proportion to its distance from each; frames before the first or
    after the last given one repeat it. All zeros for an example with no given frame.
  """
  if placed.ndim != 5 or mask.shape != placed.shape[:2]:
    raise ValueError(f"Expected placed [B, T, H, W, C] and mask [B, T], got "
                     f"{placed.shape} and {mask.shape}.")
  t = placed.shape[1]
  idx = jnp.arange(t)[None, :]  # [1, T]
  given = mask > 0
  prev = jax.lax.cummax(jnp.where(given, idx, -1), axis=1)  # last given frame <= t
  nxt = jax.lax.cummin(jnp.where(given, idx, t), axis=1, reverse=True)  # first >= t
  prev, nxt = jnp.where(prev < 0, nxt, prev), jnp.where(nxt >= t, prev, nxt)
  prev, nxt = jnp.clip(prev, 0, t - 1), jnp.clip(nxt, 0, t - 1)
  span = nxt - prev
  w = jnp.where(span > 0, (idx - prev) / jnp.maximum(span, 1), 0.0)[..., None, None, None]
  take = lambda i: jnp.take_along_axis(  # noqa: E731
      placed.astype(jnp.float32), i[:, :, None, None, None], axis=1)
  out = (1.0 - w) * take(prev) + w * take(nxt)
  return out * jnp.any(given, axis=1)[:, None, None, None, None]


def conditioning_reference(kind: str, cond_video: Array, cond_mask: Array | None,
                           height: int, width: int) -> Array:
  """A super-resolution stage's output without a network, [B, T, height, width, C] f32.

  kind 'ssr': bicubic upsampling of the low-resolution video; 'tsr': linear blending
  of the given frames (`cond_video` and `cond_mask` as `place_frames` makes them).
  """
  if kind == "ssr":
    return upsample_video(cond_video.astype(jnp.float32), height, width, method="bicubic")
  if kind == "tsr":
    if cond_mask is None:
      raise ValueError("A 'tsr' reference needs cond_mask [B, T] (see place_frames).")
    return blend_given_frames(cond_video, cond_mask)
  raise ValueError(f"Only 'ssr' and 'tsr' stages have a conditioning reference, got {kind!r}.")


def project_to_low_res(video: Array, low: Array, bisections: int = 32) -> Array:
  """The nearest video in [-1, 1] consistent with the low-resolution input, [B, T, H, W, C].

  The Euclidean projection of `video` onto the videos in [-1, 1] whose box-filter
  downsampling (the data pipeline's, `pipeline.downsample`) is `low` [B, T, h, w, C]:
  each factor x factor block (per channel) becomes clip(block + c), with the one shift c
  that makes its mean the low-resolution pixel (found by bisection; the mean is monotone
  in c). Without clipping this is DDNM's range-null-space step (Wang et al. 2022). The
  set holds the true high-resolution video, so the projection is never farther from it.
  """
  f = video.shape[-3] // low.shape[-3]
  if f < 1 or f * low.shape[-3] != video.shape[-3] or f * low.shape[-2] != video.shape[-2]:
    raise ValueError(f"project_to_low_res needs one integer factor between {low.shape} and "
                     f"{video.shape} (height and width).")
  *lead, h, w, ch = low.shape
  x = video.astype(jnp.float32).reshape(*lead, h, f, w, f, ch)
  target = jnp.clip(low.astype(jnp.float32), -1, 1)[..., :, None, :, None, :]
  mean = lambda c: jnp.mean(jnp.clip(x + c, -1, 1), axis=(-4, -2), keepdims=True)  # noqa
  lo = -1 - jnp.max(x, axis=(-4, -2), keepdims=True)  # mean(clip(x + lo)) = -1
  hi = 1 - jnp.min(x, axis=(-4, -2), keepdims=True)  # mean(clip(x + hi)) = 1

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = mean(mid) < target
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, bisections, bisect, (lo, hi))
  return jnp.clip(x + 0.5 * (lo + hi), -1, 1).reshape(video.shape)


def check_residual(kind: str, residual: bool) -> None:
  """A residual stage must be an SR stage (it needs a conditioning video to refine)."""
  if residual and kind not in ("ssr", "tsr"):
    raise ValueError(f"diffusion.residual needs an 'ssr' or 'tsr' stage (data.kind), got "
                     f"{kind!r}; set diffusion.residual=False.")


class AttentionPool(nn.Module):
  """Pools text embeddings [B, L, D] (with mask [B, L]) into one vector [B, out_dim].

  The query is the masked mean of the tokens plus a learned vector; keys and values
  are the tokens; padding tokens get no weight. An example with no real token pools
  to zero.
  """

  out_dim: int
  num_heads: int = 4
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Array) -> Array:
    b, _, d = tokens.shape
    if d % self.num_heads:
      raise ValueError(f"Text width {d} is not divisible by {self.num_heads} pooling heads.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    m = mask.astype(jnp.float32)
    mean = jnp.einsum("bld,bl->bd", tokens.astype(jnp.float32), m) / jnp.maximum(
        m.sum(1, keepdims=True), 1.0)
    probe = self.param("probe", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("embed",)), (d,), self.param_dtype)
    hd = d // self.num_heads
    q = dense(d, ("embed", "heads"), **kw)(mean + probe).reshape(b, 1, self.num_heads, hd)
    k = dense(d, ("embed", "heads"), **kw)(tokens).reshape(b, -1, self.num_heads, hd)
    v = dense(d, ("embed", "heads"), **kw)(tokens).reshape(b, -1, self.num_heads, hd)
    valid = mask.astype(bool)[:, None, None, :]  # [B, 1, 1, L]
    pooled = jax.nn.dot_product_attention(q, k, v, mask=valid).reshape(b, d)
    pooled = jnp.where(valid.any(-1).reshape(b, 1), pooled, 0.0)  # no token -> zero
    return dense(self.out_dim, ("heads", "embed"), **kw)(pooled)


class ConditioningEmbedding(nn.Module):
  """Sum of the noise-level, pooled-text and augmentation-level embeddings: [B, dim]."""

  dim: int
  use_text: bool = False
  use_aug_level: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, logsnr: Array, text: Array | None = None, text_mask: Array | None = None,
               aug_logsnr: Array | None = None) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    emb = NoiseLevelEmbedding(self.dim, name="noise_level", **kw)(logsnr)
    if self.use_text:
      emb = emb + AttentionPool(self.dim, name="text_pool", **kw)(text, text_mask)
    if self.use_aug_level:
      emb = emb + NoiseLevelEmbedding(self.dim, name="aug_level", **kw)(aug_logsnr)
    return emb


def coordinate_features(height: int, width: int, freqs=(1, 2, 4)) -> Array:
  """sin / cos of the pixel coordinates (y, x scaled to [-1, 1]): [H, W, 4 * len(freqs)].

  Scaled to the frame, so a stage sees the same features at any resolution; the
  lowest frequency (a quarter period across the frame) is monotonic in y and x.
  """
  axes = [jnp.linspace(-1.0, 1.0, n) for n in (height, width)]
  y, x = jnp.meshgrid(*axes, indexing="ij")  # [H, W]
  feats = [f(jnp.pi * k * a / 2) for a in (y, x) for k in freqs for f in (jnp.sin, jnp.cos)]
  return jnp.stack(feats, axis=-1)


class FrameConditioning(nn.Module):
  """What a frame is conditioned on, from the text and its place in time.

  A text-to-video model must tell "moving left" from "moving right", which needs the
  caption, each frame's place in time and where things are in the frame *together*:
  the training clips are the same under time reversal except for that word. Through the
  clip-wide embedding alone, and with convolutions that cannot say where in the frame
  they are, the network can only learn this as a product of features that are all zero
  at the start, a saddle that training does not leave (the demo base's x0 prediction
  did not depend on "left" vs "right"; benchmarks/results/direction_sign.md). Here one
  MLP of [clip embedding, the text, sin / cos of the centred frame index] is computed
  per frame, and gives
    - a per-frame conditioning vector [B, T, dim] (the clip's vector plus a delta),
      which every FiLM reads, and
    - with `field_channels`, a per-frame map [B, T, H, W, field_channels] over the
      frame's coordinates (`coordinate_features`), which the U-Net adds to the
      features its output conv reads: the caption can say "early frames: the object
      on the right".
  The output layers are zero-initialised (a trained model keeps its function when this
  is added) while the rest is not, so the gradient of each output is first order
  from the first step. Examples flagged `is_image` get the clip embedding and no maps.

  The text enters as the max over tokens of a per-token projection (after LayerNorm),
  not as an attention-pooled average: captions that differ in one word ("left" /
  "right") have nearly the same average (MiniLM: 6% apart after attention pooling).
  Learning the sign this way needs many examples: fitted with the network frozen
  (`videojax.train.field`) the map memorised the captions of 512 clips and learned
  the sign from 4096-8192 (benchmarks/results/direction_field.md).
  """

  dim: int
  field_channels: int = 0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, emb: Array, num_frames: int, text: Array | None = None,
               text_mask: Array | None = None, is_image: Array | None = None,
               size: tuple[int, int] | None = None
               ) -> tuple[Array, Array | None]:
    """emb [B, dim] -> ([B, T, dim], the map [B, T, H, W, field_channels] or None).

    `text` [B, L, D] with its mask, or None; `size` (H, W) of the map."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    clip = dense(self.dim, ("embed", "mlp"), name="clip", **kw)(nn.silu(emb))  # [B, H]
    if text is not None:  # max over tokens of a per-token projection (see the docstring)
      norm = nn.LayerNorm(name="text_norm", scale_init=nn.with_logical_partitioning(
          nn.initializers.ones_init(), ("embed",)), bias_init=nn.with_logical_partitioning(
              nn.initializers.zeros_init(), ("embed",)), **kw)
      tok = dense(self.dim, ("embed", "mlp"), name="tokens", **kw)(norm(text))  # [B, L, H]
      valid = jnp.asarray(text_mask, bool)[..., None]
      pooled = jnp.where(valid, tok, -jnp.inf).max(axis=1)
      pooled = jnp.where(valid.any(axis=1), pooled, 0.0)  # no token -> zero
      clip = clip + dense(self.dim, ("embed", "mlp"), name="text", **kw)(pooled)
    time = dense(self.dim, ("embed", "mlp"), name="time", **kw)(
        frame_time_features(num_frames, self.dim))  # [T, H]
    h = nn.silu(clip[:, None, :] + time[None])  # [B, T, H]
    keep = None if is_image is None else (1 - jnp.asarray(is_image, h.dtype))[:, None, None]
    delta = dense(self.dim, ("mlp", "embed"), zero_init=True, name="out", **kw)(h)
    delta = delta if keep is None else delta * keep
    if not self.field_channels:
      return emb[:, None, :] + delta, None
    if size is None:
      raise ValueError("FrameConditioning with field_channels needs the map's size (H, W).")
    coords = coordinate_features(*size).astype(h.dtype)  # [H, W, J]
    j = coords.shape[-1]
    w = dense(j * self.field_channels, ("mlp", "embed"), zero_init=True, name="field",
              **kw)(h).reshape(h.shape[:2] + (j, self.field_channels))  # [B, T, J, C]
    w = w if keep is None else w * keep[..., None]
    field = jnp.einsum("hwj,btjc->bthwc", coords, w)  # [B, T, H, W, C]
    return emb[:, None, :] + delta, field
