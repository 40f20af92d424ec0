"""Per-stage quality of super-resolution outputs: PSNR, SSIM and the naive baselines.

A spatial SR stage is worth its compute if it beats `bicubic_upsample` of its input,
and a temporal SR stage if it beats `blend_frames` (linear blending of the given
frames; `nn.conditioning.blend_given_frames` is the same blending in JAX, the reference
a residual TSR stage corrects); both are compared with the ground-truth clip by `psnr`
and `ssim`. Plain numpy (and PIL for bicubic resizing); it runs on the host after
sampling.

Videos are channels-last `[..., H, W, C]`: every leading index (frames, batch) is one
frame, and the metrics are means over frames. uint8 videos have a data range of 255;
float videos default to 2.0, the library's [-1, 1] convention (pass `data_range=1.0`
for floats in [0, 1]).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SSIM_WINDOW = 11  # Gaussian window side (Wang et al. 2004)
SSIM_SIGMA = 1.5  # its standard deviation, pixels
SSIM_K1, SSIM_K2 = 0.01, 0.03  # C1 = (K1 L)^2, C2 = (K2 L)^2 for data range L


def _frames_pair(a: np.ndarray, b: np.ndarray, data_range: float | None
                 ) -> tuple[np.ndarray, np.ndarray, float]:
  """Both videos as float64 [F, H, W, C] frames, and the data range."""
  a, b = np.asarray(a), np.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f"Videos must have the same shape, got {a.shape} and {b.shape}; "
                     "resize the output to the reference's resolution first.")
  if a.ndim < 3:
    raise ValueError(f"Expected videos [..., H, W, C], got shape {a.shape}.")
  integer = [np.issubdtype(x.dtype, np.integer) for x in (a, b)]
  if integer[0] != integer[1]:
    raise ValueError(f"Got one integer ({a.dtype if integer[0] else b.dtype}) and one "
                     "float video; convert both to the same range first, e.g. uint8 "
                     "with np.round((v + 1) * 127.5).clip(0, 255).astype(np.uint8).")
  if data_range is None:
    data_range = 255.0 if integer[0] else 2.0
  if data_range <= 0:
    raise ValueError(f"data_range must be > 0, got {data_range}.")
  shape = (-1,) + a.shape[-3:]
  return (a.reshape(shape).astype(np.float64), b.reshape(shape).astype(np.float64),
          float(data_range))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
  """Peak signal-to-noise ratio, in dB, averaged over frames.

  Args:
    a, b: videos [..., H, W, C] of one shape, both uint8 or both float.
    data_range: L, the span of the pixel values; default 255 for integer videos and
      2.0 for float ones ([-1, 1]).

  Returns:
    The mean over frames of 10 log10(L^2 / MSE), MSE over each frame's H, W and C;
    inf if some frame is identical in both.
  """
  x, y, peak = _frames_pair(a, b, data_range)
  mse = np.mean((x - y) ** 2, axis=(1, 2, 3))  # [F]
  with np.errstate(divide="ignore"):
    return float(np.mean(10 * np.log10(peak**2 / mse)))


def _gaussian_filter(x: np.ndarray) -> np.ndarray:
  """'Valid' separable Gaussian filtering of [F, H, W, C] over H and W.

  Returns:
    [F, H - 10, W - 10, C] for the 11-tap window: the weighted means the SSIM
    statistics are made of (no padding, as in Wang et al.'s reference code).
  """
  taps = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2
  g = np.exp(-taps**2 / (2 * SSIM_SIGMA**2))
  g /= g.sum()  # [11]
  n = SSIM_WINDOW - 1
  h, w = x.shape[1] - n, x.shape[2] - n
  rows = sum(g[k] * x[:, k:k + h] for k in range(SSIM_WINDOW))  # [F, H - 10, W, C]
  return sum(g[k] * rows[:, :, k:k + w] for k in range(SSIM_WINDOW))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
  """Structural similarity (Wang et al. 2004), averaged over frames.

  Each frame and channel is compared with an 11x11 Gaussian window (sigma 1.5) at
  every position where it fits, with C1 = (0.01 L)^2 and C2 = (0.03 L)^2; the SSIM
  map is averaged over positions and channels, then over frames.

  Args:
    a, b: videos [..., H, W, C] of one shape, H and W >= 11, both uint8 or both float.
    data_range: L, as in `psnr`.

  Returns:
    The mean SSIM, in [-1, 1]; exactly 1.0 for identical videos.
  """
  x, y, peak = _frames_pair(a, b, data_range)
  if min(x.shape[1:3]) < SSIM_WINDOW:
    raise ValueError(f"ssim needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} (its "
                     f"Gaussian window), got {x.shape[1]}x{x.shape[2]}; compare at a "
                     "higher resolution or use psnr.")
  c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
  mu_x, mu_y = _gaussian_filter(x), _gaussian_filter(y)  # [F, H', W', C]
  var_x = _gaussian_filter(x * x) - mu_x**2
  var_y = _gaussian_filter(y * y) - mu_y**2
  cov = _gaussian_filter(x * y) - mu_x * mu_y
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
      (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))  # [F, H', W', C]
  return float(np.mean(ssim_map.mean(axis=(1, 2, 3))))


def bicubic_upsample(video: np.ndarray, factor: int) -> np.ndarray:
  """The spatial-SR baseline: each frame and channel resized by PIL's bicubic filter.

  Args:
    video: uint8 or float [..., H, W, C].
    factor: integer upsampling factor (>= 1) of both H and W.

  Returns:
    [..., H * factor, W * factor, C] of the input's dtype. uint8 is resized in PIL's
    8-bit mode (rounded and clipped to [0, 255]); floats in its 32-bit float mode,
    unclipped (bicubic overshoots at edges).
  """
  video = np.asarray(video)
  if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
    raise ValueError(f"factor must be an integer >= 1, got {factor!r}.")
  if video.ndim < 3:
    raise ValueError(f"Expected a video [..., H, W, C], got shape {video.shape}.")
  if video.dtype != np.uint8 and not np.issubdtype(video.dtype, np.floating):
    raise ValueError(f"Expected a uint8 or float video, got {video.dtype}.")
  *lead, h, w, c = video.shape
  frames = video.reshape(-1, h, w, c)  # [F, H, W, C]
  if video.dtype != np.uint8:
    frames = frames.astype(np.float32)  # PIL's float mode is 32-bit
  out = np.empty((frames.shape[0], h * factor, w * factor, c), frames.dtype)
  for i, frame in enumerate(frames):
    for ch in range(c):
      image = Image.fromarray(np.ascontiguousarray(frame[:, :, ch]))
      out[i, :, :, ch] = np.asarray(
          image.resize((w * factor, h * factor), Image.Resampling.BICUBIC))
  return out.reshape(*lead, h * factor, w * factor, c).astype(video.dtype, copy=False)


def blend_frames(given: np.ndarray, factor: int, frames: int) -> np.ndarray:
  """The temporal-SR baseline: linear blending between the given frames.

  Given frame k sits at output frame k * factor; an output frame between two given
  ones is their mix in proportion to its distance from each, and output frames after
  the last given one repeat it.

  Args:
    given: uint8 or float [..., T, H, W, C], the low-frame-rate clip.
    factor: integer frame-rate factor (>= 1).
    frames: number of output frames; at least (T - 1) * factor + 1, so that every
      given frame has its place.

  Returns:
    [..., frames, H, W, C] of the input's dtype (uint8 is rounded); given frames
    come back unchanged.
  """
  given = np.asarray(given)
  if given.ndim < 4:
    raise ValueError(f"Expected a clip [..., T, H, W, C], got shape {given.shape}.")
  if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
    raise ValueError(f"factor must be an integer >= 1, got {factor!r}.")
  t_in = given.shape[-4]
  last = (t_in - 1) * factor
  if frames <= last:
    raise ValueError(f"{t_in} given frames at factor {factor} put the last one at output "
                     f"frame {last}, but frames={frames}; pass frames >= {last + 1}.")
  pos = np.arange(frames) / factor  # [frames] in units of given frames
  lo = np.minimum(np.floor(pos).astype(np.int64), t_in - 1)  # [frames]
  hi = np.minimum(lo + 1, t_in - 1)
  w = np.clip(pos - lo, 0.0, 1.0)[:, None, None, None]  # [frames, 1, 1, 1]
  clip = given.astype(np.float64)
  out = (1 - w) * np.take(clip, lo, axis=-4) + w * np.take(clip, hi, axis=-4)
  if np.issubdtype(given.dtype, np.integer):
    info = np.iinfo(given.dtype)
    out = np.clip(np.rint(out), info.min, info.max)
  return out.astype(given.dtype)
