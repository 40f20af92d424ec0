"""mp4 (and other container) files through the ffmpeg binary bundled with imageio-ffmpeg.

Why not imageio's FFMPEG plugin: imageio-ffmpeg starts ffmpeg with
`preexec_fn=os.setpgrp`, so after `fork()` the child runs Python code before `exec`.
In a multithreaded process (JAX's runtime threads, the cascade's loader thread) that
can deadlock the child on a lock another thread held at the fork, and it is why JAX
warns "os.fork() was called ... will likely lead to a deadlock". Here ffmpeg is started
with `process_group=0` instead: the child calls only async-signal-safe C functions
(setpgid, dup2, close, execve) between fork and exec, so no Python code and no lock is
involved, and no fork handler runs. ffmpeg still gets its own process group, so Ctrl-C
in a terminal reaches Python (which stops ffmpeg) rather than killing ffmpeg mid-file.
"""

from __future__ import annotations

import fractions
import os
import re
import subprocess
import tempfile
from typing import Iterator

import numpy as np


# Its own process group (POSIX; set in C between fork and exec, see above).
_SPAWN = {"process_group": 0} if os.name == "posix" else {}


class FFmpegError(OSError):
  """ffmpeg failed to read or write a file; the message holds ffmpeg's own error."""


def _exe() -> str:
  import imageio_ffmpeg

  return imageio_ffmpeg.get_ffmpeg_exe()


def _tail(text: str, n: int = 5) -> str:
  lines = [l for l in text.strip().splitlines() if l.strip()]
  return "\n".join(lines[-n:]) or "(no message)"


def write(path: str, video: np.ndarray, fps: float, quality: int = 8,
          overwrite: bool = False) -> None:
  """Encodes uint8 [T, H, W, 3] frames as H.264 (libx264, yuv420p) into `path`.

  Args:
    path: output file (.mp4).
    video: uint8 [T, H, W, 3], H and W even.
    fps: frames per second (written as an exact fraction, e.g. 30000/1001).
    quality: 1 (worst) to 10 (best); H.264 crf = (1 - quality / 10) * 51, so 8 is crf 10.
    overwrite: replace an existing file (otherwise ffmpeg refuses to).

  Raises:
    FFmpegError: ffmpeg exited with an error (nothing is left at `path`).
  """
  t, h, w, _ = video.shape
  crf = int((1.0 - quality / 10.0) * 51)
  rate = fractions.Fraction(float(fps)).limit_denominator(1001)
  cmd = [_exe(), "-hide_banner", "-y" if overwrite else "-n", "-v", "error",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(rate), "-i", "-",
         "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), path]
  existed = os.path.exists(path)
  with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, **_SPAWN) as proc:
    try:
      _, err = proc.communicate(np.ascontiguousarray(video, np.uint8).tobytes())
    except BaseException:
      proc.kill()
      raise
  if proc.returncode != 0:
    if os.path.exists(path) and (overwrite or not existed):
      os.remove(path)  # a half-written file must not pass for a video
    raise FFmpegError(f"ffmpeg could not write {path!r} ({t} frames {h}x{w}): "
                      f"{_tail(err.decode(errors='replace'))}")


_VIDEO_STREAM = re.compile(r"Stream #\S+.*?: Video: (.*)")
_SIZE = re.compile(r", (\d{1,5})x(\d{1,5})\b")
_RATE = re.compile(r"([\d.]+)(k?) (fps|tbr)\b")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")


def probe(path: str) -> tuple[int, int, float]:
  """(height, width, fps) of the first video stream, as frames will be decoded (a
  rotation in the file's display matrix is applied by ffmpeg, so 90 degrees swaps H/W).

  Raises:
    FFmpegError: not a video file ffmpeg can open, or no frame size / rate found.
  """
  # Without an output file ffmpeg prints the input's streams and exits with status 1.
  run = subprocess.run([_exe(), "-hide_banner", "-nostdin", "-i", path], stdin=subprocess.DEVNULL,
                       capture_output=True, **_SPAWN)
  text = run.stderr.decode(errors="replace")
  lines = text.splitlines()
  for i, line in enumerate(lines):
    stream = _VIDEO_STREAM.search(line)
    if stream is None:
      continue
    size, rates = _SIZE.search(stream.group(1)), _RATE.findall(stream.group(1))
    if size is None or not rates:
      break
    h, w = int(size.group(2)), int(size.group(1))
    by_kind = {kind: float(v) * (1000 if k else 1) for v, k, kind in rates}
    fps = by_kind.get("fps") or by_kind.get("tbr") or 0.0
    for extra in lines[i + 1:i + 8]:  # the stream's side data follows its line
      if extra.lstrip().startswith("Stream #"):
        break
      rot = _ROTATION.search(extra)
      if rot and round(abs(float(rot.group(1)))) % 180 == 90:
        h, w = w, h
    return h, w, fps
  raise FFmpegError(f"ffmpeg finds no readable video stream in {path!r}: {_tail(text, 2)}")


def read(path: str) -> tuple[float, Iterator[np.ndarray]]:
  """Opens a video for streaming: (fps, iterator of uint8 [H, W, 3] frames).

  Raises:
    FFmpegError: from `probe` here; from the iterator when decoding fails or the last
      frame is cut short (ffmpeg's message included).
  """
  h, w, fps = probe(path)

  def frames() -> Iterator[np.ndarray]:
    size = h * w * 3
    with tempfile.TemporaryFile() as err:  # a file: a full stderr pipe cannot stall ffmpeg
      proc = subprocess.Popen(
          [_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
          stderr=err, **_SPAWN)
      try:
        while True:
          buf = proc.stdout.read(size)
          if len(buf) < size:
            break
          yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
        proc.wait()
        err.seek(0)
        message = err.read().decode(errors="replace")
        if proc.returncode != 0 or buf:
          raise FFmpegError(f"ffmpeg could not decode {path!r}"
                            f"{' (last frame cut short)' if buf else ''}: {_tail(message)}")
      finally:
        if proc.poll() is None:  # the caller stopped early: stop ffmpeg
          proc.kill()
          proc.wait()
        proc.stdout.close()

  return fps, frames()
