"""Video file I/O: round trips through mp4 and gif, conversions, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from videojax.io import video as vio


def _smooth_video(t: int = 8, h: int = 32, w: int = 48) -> np.ndarray:
  """A smooth moving color pattern, uint8 [T, H, W, 3]."""
  tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
  v = np.stack([128 + 100 * np.sin(xx / 6 + tt / 3), 128 + 100 * np.cos(yy / 5 - tt / 4),
                128 + 60 * np.sin((xx + yy) / 8)], -1)
  return np.clip(v, 0, 255).astype(np.uint8)


def test_mp4_round_trip_is_close(tmp_path):
  video = _smooth_video()
  path = vio.write_video(str(tmp_path / "a.mp4"), video, fps=8)
  back, fps = vio.read_video(path)
  assert back.shape == video.shape and back.dtype == np.uint8
  assert fps == pytest.approx(8.0)
  assert np.abs(back.astype(np.int32) - video).mean() < 8  # lossy (H.264, yuv420p)
  # The motion survives: frames differ from each other as in the source.
  assert np.abs(back[0].astype(np.int32) - back[-1]).mean() > 20


def test_gif_round_trip_is_exact_and_loops(tmp_path):
  video = (_smooth_video() // 64 * 64).astype(np.uint8)  # <= 64 colors: no palette loss
  path = vio.write_video(str(tmp_path / "a.gif"), video, fps=10)
  back, fps = vio.read_video(path)
  np.testing.assert_array_equal(back, video)
  assert fps == pytest.approx(10.0)
  from PIL import Image
  with Image.open(path) as im:
    assert im.info.get("loop") == 0  # loop forever


def test_float_video_is_written_as_uint8(tmp_path):
  video = _smooth_video(4, 16, 16)
  vio.write_video(str(tmp_path / "f.gif"), vio.to_float(video // 64 * 64), fps=10)
  back, _ = vio.read_video(str(tmp_path / "f.gif"))
  np.testing.assert_array_equal(back, video // 64 * 64)


def test_refuses_to_overwrite(tmp_path):
  path = str(tmp_path / "a.mp4")
  vio.write_video(path, _smooth_video(4), fps=8)
  size = os.path.getsize(path)
  with pytest.raises(FileExistsError, match="a.mp4.*overwrite=True"):
    vio.write_video(path, np.zeros((4, 32, 48, 3), np.uint8), fps=8)
  assert os.path.getsize(path) == size  # untouched
  vio.write_video(path, np.zeros((4, 32, 48, 3), np.uint8), fps=8, overwrite=True)
  back, _ = vio.read_video(path)
  assert back.shape == (4, 32, 48, 3) and back.max() <= 2


def test_uint8_float_conversions_are_inverse():
  every = np.arange(256, dtype=np.uint8)
  f = vio.to_float(every)
  assert f.dtype == np.float32 and f[0] == -1.0 and f[-1] == 1.0
  np.testing.assert_array_equal(vio.to_uint8(f), every)
  x = np.random.default_rng(0).uniform(-1, 1, size=1000).astype(np.float32)
  assert np.abs(vio.to_float(vio.to_uint8(x)) - x).max() <= 1 / 255 + 1e-6
  assert vio.to_uint8(np.array([-3.0, 3.0])).tolist() == [0, 255]  # clipped
  with pytest.raises(TypeError, match="uint8"):
    vio.to_float(f)


def test_unreadable_files_raise_naming_the_file(tmp_path):
  with pytest.raises(vio.VideoReadError, match="nope.mp4"):
    vio.read_video(str(tmp_path / "nope.mp4"))
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(np.random.default_rng(0).bytes(4000))
  with pytest.raises(OSError, match="bad.mp4"):
    vio.read_video(str(bad))


def test_bad_write_arguments(tmp_path):
  with pytest.raises(ValueError, match="even frame size"):
    vio.write_video(str(tmp_path / "odd.mp4"), np.zeros((2, 15, 16, 3), np.uint8), fps=8)
  with pytest.raises(ValueError, match="unsupported suffix '.avi'"):
    vio.write_video(str(tmp_path / "x.avi"), np.zeros((2, 16, 16, 3), np.uint8), fps=8)
  with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
    vio.write_video(str(tmp_path / "x.gif"), np.zeros((2, 16, 16, 5), np.uint8), fps=8)


def test_center_crop_resize_keeps_the_center():
  frame = np.zeros((20, 40, 3), np.uint8)
  frame[:, :10] = [255, 0, 0]  # side bands, cropped away for a square output
  frame[:, 30:] = [0, 0, 255]
  frame[:, 10:30] = [0, 200, 0]
  out = vio.center_crop_resize(frame, 8, 8)
  assert out.shape == (8, 8, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.broadcast_to([0, 200, 0], (8, 8, 3)))
  tall = vio.center_crop_resize(np.transpose(frame, (1, 0, 2)), 4, 4)
  np.testing.assert_array_equal(tall, np.broadcast_to([0, 200, 0], (4, 4, 3)))


def test_show_without_mediapy_says_how_to_install(monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_mediapy(name, *args, **kwargs):
    if name == "mediapy":
      raise ImportError("No module named 'mediapy'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_mediapy)
  with pytest.raises(ImportError, match="pip install mediapy"):
    vio.show(np.zeros((2, 8, 8, 3), np.uint8))


def test_mp4_io_forks_no_python_in_a_jax_process(tmp_path):
  """JAX warns (os.fork() ... deadlock) when a process with its runtime threads forks
  into Python code, as imageio-ffmpeg's preexec_fn does; our mp4 reading and writing
  start ffmpeg without that."""
  import warnings

  import imageio.v3 as iio
  import jax.numpy as jnp

  jnp.ones(2).block_until_ready()  # JAX's backend (and its fork warning) is up
  video = _smooth_video(4, 16, 16)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    vio.write_video(str(tmp_path / "a.mp4"), video, fps=8)
    back, _ = vio.read_video(str(tmp_path / "a.mp4"))
  assert back.shape == video.shape
  assert not [w for w in caught if "fork" in str(w.message)]
  with warnings.catch_warnings(record=True) as caught:  # the check sees imageio's fork
    warnings.simplefilter("always")
    iio.imwrite(str(tmp_path / "b.mp4"), video, plugin="FFMPEG", fps=8)
  assert [w for w in caught if "os.fork()" in str(w.message)]


def test_ffmpeg_errors_name_the_file_and_leave_nothing(tmp_path):
  from videojax.io import ffmpeg

  path = str(tmp_path / "x.mp4")
  with pytest.raises(ffmpeg.FFmpegError, match="x.mp4"):  # libx264 needs even sizes
    ffmpeg.write(path, np.zeros((2, 15, 16, 3), np.uint8), fps=8)
  assert not os.path.exists(path)
  vio.write_video(path, _smooth_video(3, 16, 16), fps=8)
  fps, frames = vio.iter_frames(path)
  first = next(frames)
  frames.close()  # stopping early stops ffmpeg
  assert first.shape == (16, 16, 3) and fps == 8
  with open(path, "r+b") as f:  # cut the file: decoding fails, naming it
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(OSError, match="x.mp4"):
    vio.read_video(path)
