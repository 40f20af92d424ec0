"""Video files: read, write, convert, show.

mp4 and other containers go through the static ffmpeg bundled with imageio-ffmpeg,
started by `videojax.io.ffmpeg` in a way that is safe in a multithreaded (JAX) process;
GIFs go through imageio's pillow plugin. Videos in memory are uint8 [T, H, W, 3] (RGB)
or float in [-1, 1], the range our models work in.

`show` displays a video in a notebook (Colab) through mediapy, an optional
dependency; mediapy's own file reading is not used (it fails with ffmpeg 9).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

GIF_SUFFIXES = (".gif",)
WRITABLE_SUFFIXES = (".mp4", ".gif")


class VideoReadError(OSError):
  """A video file could not be opened or decoded (missing, corrupt, unknown format)."""


def _suffix(path: str) -> str:
  return os.path.splitext(os.fspath(path))[1].lower()


def to_uint8(video: np.ndarray) -> np.ndarray:
  """Maps a float video in [-1, 1] to uint8 [0, 255] (rounded, values outside clipped).

  Args:
    video: float array of any shape, nominally in [-1, 1]; a uint8 array is returned
      unchanged.

  Returns:
    uint8 array of the same shape.
  """
  video = np.asarray(video)
  if video.dtype == np.uint8:
    return video
  if not np.issubdtype(video.dtype, np.floating):
    raise TypeError(f"to_uint8 expects a float video in [-1, 1] (or uint8), got dtype "
                    f"{video.dtype}; convert integer data with to_float first.")
  return np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def to_float(video: np.ndarray, dtype=np.float32) -> np.ndarray:
  """Maps a uint8 video [0, 255] to floats in [-1, 1].

  Args:
    video: uint8 array of any shape.
    dtype: float dtype of the result.

  Returns:
    Array of the same shape, 0 -> -1 and 255 -> 1.
  """
  video = np.asarray(video)
  if video.dtype != np.uint8:
    raise TypeError(f"to_float expects a uint8 video, got dtype {video.dtype}; a float "
                    "video is already in model range (use to_uint8 to go back).")
  return (video.astype(dtype) / 127.5 - 1.0).astype(dtype)


def _as_rgb_frame(frame: np.ndarray) -> np.ndarray:
  """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] uint8 -> [H, W, 3]."""
  if frame.ndim == 2:
    frame = frame[..., None]
  if frame.shape[-1] == 1:
    frame = np.repeat(frame, 3, axis=-1)
  return np.ascontiguousarray(frame[..., :3])


def _open(path: str) -> tuple[float, Iterator[np.ndarray]]:
  """Opens a video: (fps, iterator of uint8 [H, W, 3] frames). Raises VideoReadError."""
  import imageio.v3 as iio

  from videojax.io import ffmpeg

  path = os.fspath(path)
  if not os.path.isfile(path):
    raise VideoReadError(f"Cannot read video {path!r}: no such file.")
  try:
    if _suffix(path) in GIF_SUFFIXES:
      meta = iio.immeta(path, plugin="pillow")
      delay_ms = float(meta.get("duration") or 100.0)  # GIF delay, ms per frame
      fps = 1000.0 / delay_ms if delay_ms > 0 else 10.0
      frames = iio.imiter(path, plugin="pillow", mode="RGB")
    else:
      fps, frames = ffmpeg.read(path)
  except Exception as e:  # imageio raises OSError, RuntimeError, ValueError, ...
    raise VideoReadError(f"Cannot read video {path!r} (corrupt, truncated or not a "
                         f"video?): {type(e).__name__}: {str(e).splitlines()[0]}") from e
  if not fps > 0:
    raise VideoReadError(f"Cannot read video {path!r}: its frame rate is unknown.")
  return fps, frames


def iter_frames(path: str) -> tuple[float, Iterator[np.ndarray]]:
  """Streams a video's frames without holding the whole video in memory.

  Args:
    path: a video file (.mp4, .mov, .webm, .avi, .mkv, .gif, ...).

  Returns:
    (fps, iterator of uint8 [H, W, 3] frames). Errors while decoding are raised from
    the iterator as `VideoReadError` naming the file.

  Raises:
    VideoReadError: the file is missing or cannot be opened.
  """
  fps, frames = _open(path)

  def checked() -> Iterator[np.ndarray]:
    i = -1
    try:
      for i, frame in enumerate(frames):
        yield _as_rgb_frame(np.asarray(frame, dtype=np.uint8))
    except VideoReadError:
      raise
    except Exception as e:
      raise VideoReadError(f"Decoding video {path!r} failed after {i + 1} frames: "
                           f"{type(e).__name__}: {str(e).splitlines()[0]}") from e

  return fps, checked()


def read_video(path: str) -> tuple[np.ndarray, float]:
  """Reads a whole video file.

  Args:
    path: a video file (.mp4, .mov, .webm, .avi, .mkv, .gif, ...).

  Returns:
    (video, fps): uint8 [T, H, W, 3] RGB frames and the file's frame rate.

  Raises:
    VideoReadError (an OSError): missing, corrupt or empty file; the message names it.
  """
  fps, frames = iter_frames(path)
  video = list(frames)
  if not video:
    raise VideoReadError(f"Cannot read video {os.fspath(path)!r}: it has no frames.")
  return np.stack(video), fps  # [T, H, W, 3]


def write_video(path: str, video: np.ndarray, fps: float, overwrite: bool = False,
                quality: int = 8) -> str:
  """Writes a video to .mp4 (H.264, libx264, yuv420p) or .gif (looping forever).

  Args:
    path: output file ending in .mp4 or .gif; its directory is created.
    video: uint8 [T, H, W, 3], or float [T, H, W, 3] in [-1, 1]. Grayscale
      [T, H, W] or [T, H, W, 1] is repeated to RGB. For .mp4, H and W must be even.
    fps: frames per second. GIF frame delays are whole centiseconds, so a GIF's fps
      reads back exactly only when 100 / fps is an integer (e.g. 10, 20, 25, 50).
    overwrite: replace an existing file; otherwise an existing file is an error.
    quality: mp4 quality, 1 (worst) to 10 (best); 8 is H.264 crf 10.

  Returns:
    The path written.

  Raises:
    FileExistsError: the file exists and overwrite is False.
    ValueError: bad suffix, shape, fps or (mp4) odd frame size.
    videojax.io.ffmpeg.FFmpegError (an OSError): ffmpeg failed; no file is left behind.
  """
  import imageio.v3 as iio

  from videojax.io import ffmpeg

  path = os.fspath(path)
  suffix = _suffix(path)
  if suffix not in WRITABLE_SUFFIXES:
    raise ValueError(f"Cannot write video {path!r}: unsupported suffix {suffix!r}; use one "
                     f"of {WRITABLE_SUFFIXES}.")
  if not fps > 0:
    raise ValueError(f"fps must be positive, got {fps}.")
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"Video {path!r} already exists; pass overwrite=True to replace "
                          "it or choose another path.")
  video = to_uint8(video)
  if video.ndim == 3:
    video = video[..., None]
  if video.ndim != 4 or video.shape[-1] not in (1, 3) or video.shape[0] < 1:
    raise ValueError(f"Expected a video [T, H, W, 3] with T >= 1, got shape {video.shape}.")
  video = np.ascontiguousarray(np.broadcast_to(video, video.shape[:3] + (3,)))  # [T, H, W, 3]
  _, h, w, _ = video.shape
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if suffix == ".gif":
    delay_ms = max(2, round(100.0 / fps)) * 10  # GIF delays are whole centiseconds
    iio.imwrite(path, video, plugin="pillow", duration=delay_ms, loop=0)
  else:
    if h % 2 or w % 2:
      raise ValueError(f"H.264 (yuv420p) needs an even frame size, got {h}x{w} for {path!r}; "
                       "crop or resize to even height and width, or write a .gif.")
    ffmpeg.write(path, video, fps, quality=quality, overwrite=overwrite)
  return path


def center_crop_resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  """Crops the largest centered window of the target aspect ratio, then resizes.

  Args:
    frame: uint8 [H, W, 3].
    height, width: output size.

  Returns:
    uint8 [height, width, 3] (bicubic, antialiased when shrinking; PIL).
  """
  from PIL import Image

  h, w = frame.shape[:2]
  if h * width > w * height:  # too tall: crop rows
    crop_h, crop_w = max(1, round(w * height / width)), w
  else:  # too wide (or exact): crop columns
    crop_h, crop_w = h, max(1, round(h * width / height))
  top, left = (h - crop_h) // 2, (w - crop_w) // 2
  crop = frame[top:top + crop_h, left:left + crop_w, :3]  # [crop_h, crop_w, 3]
  out = Image.fromarray(np.ascontiguousarray(crop)).resize(
      (width, height), resample=Image.Resampling.BICUBIC)
  return np.asarray(out, dtype=np.uint8)  # [height, width, 3]


def resize_video(video: np.ndarray, height: int, width: int) -> np.ndarray:
  """`center_crop_resize` on every frame: uint8 [T, H, W, 3] -> [T, height, width, 3]."""
  return np.stack([center_crop_resize(f, height, width) for f in video])


def show(video: np.ndarray, fps: float = 8.0, title: str | None = None, **kwargs) -> None:
  """Shows a video in a notebook (Colab, Jupyter) via mediapy.

  Args:
    video: uint8 [T, H, W, 3] or float [T, H, W, 3] in [-1, 1].
    fps: playback frame rate.
    title: optional caption above the video.
    **kwargs: passed to `mediapy.show_video` (e.g. width, codec='gif').

  Raises:
    ImportError: mediapy is not installed.
  """
  try:
    import mediapy as media
  except ImportError as e:
    raise ImportError("show() needs mediapy to display videos in a notebook: "
                      "pip install mediapy") from e
  import imageio_ffmpeg

  media.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
  media.show_video(to_uint8(video), fps=fps, title=title, **kwargs)
