"""What a training run shows: a parameter overview, scalars and sample previews.

TensorBoard event files are written with tensorboardX (no TensorFlow needed). Videos go
into TensorBoard as animated GIF image summaries (what TensorBoard's own video summary
is), and as GIF files under WORKDIR/previews.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import flax
import numpy as np

from videojax.io.video import to_uint8, write_video


def parameter_overview(params: Any, depth: int = 2) -> str:
  """A table of parameter counts (and shapes of small groups) by module path.

  Args:
    params: a parameter pytree (nested dicts; a leading 'params' collection is skipped).
    depth: how many path levels form one row.

  Returns:
    A fixed-width text table: path, number of arrays, parameters, share of the total.
  """
  tree = flax.core.unfreeze(params)
  if set(tree) == {"params"}:
    tree = tree["params"]
  flat = flax.traverse_util.flatten_dict(tree, sep="/")
  rows: dict[str, list[int]] = {}
  for path, x in flat.items():
    key = "/".join(path.split("/")[:depth])
    r = rows.setdefault(key, [0, 0])
    r[0] += 1
    r[1] += int(math.prod(np.shape(x)))
  total = sum(r[1] for r in rows.values()) or 1
  width = max([len(k) for k in rows] + [6])
  lines = [f"{'module':<{width}}  {'arrays':>6}  {'params':>12}  {'share':>6}"]
  for key, (n, p) in rows.items():
    lines.append(f"{key:<{width}}  {n:>6}  {p:>12,}  {100 * p / total:>5.1f}%")
  lines.append(f"{'total':<{width}}  {sum(r[0] for r in rows.values()):>6}  {total:>12,}  "
               f"{100.0:>5.1f}%")
  return "\n".join(lines)


def preview_grid(videos: list[np.ndarray], min_height: int = 64) -> np.ndarray:
  """Videos [T, H, W, 3] in [-1, 1] side by side (nearest-upscaled to >= min_height).

  Videos of different sizes (a low-resolution input next to its super-resolved output)
  are scaled to the tallest; frame counts must agree.
  """
  frames = {v.shape[0] for v in videos}
  if len(frames) != 1:
    raise ValueError(f"Preview videos need the same number of frames, got {sorted(frames)}.")
  height = max(max(v.shape[1] for v in videos), min_height)
  tiles = []
  for v in videos:
    f = max(1, height // v.shape[1])
    u = to_uint8(v).repeat(f, axis=1).repeat(f, axis=2)
    pad = height - u.shape[1]
    tiles.append(np.pad(u, ((0, 0), (0, pad), (0, 2), (0, 0))))  # 2 px gutter
  return np.concatenate(tiles, axis=2)  # [T, height, sum(W), 3] uint8


def gif_bytes(video: np.ndarray, fps: float) -> bytes:
  """uint8 [T, H, W, 3] -> an animated GIF in memory."""
  import imageio.v3 as iio

  buf = io.BytesIO()
  iio.imwrite(buf, video, extension=".gif", plugin="pillow",
              duration=max(2, round(100.0 / fps)) * 10, loop=0)
  return buf.getvalue()


class Writer:
  """TensorBoard scalars and videos (tensorboardX) into WORKDIR/tensorboard."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter

    self.workdir = workdir
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
    for k, v in values.items():
      self._tb.add_scalar(f"{prefix}/{k}", v, step)

  def video(self, step: int, tag: str, video: np.ndarray, fps: float) -> str:
    """Writes WORKDIR/previews/<tag>_<step>.gif and a TensorBoard animated image."""
    from tensorboardX.proto.summary_pb2 import Summary

    path = os.path.join(self.workdir, "previews", f"{tag}_{step:08d}.gif")
    write_video(path, video, fps, overwrite=True)  # a resumed run may redo a step
    t, h, w, c = video.shape
    image = Summary.Image(height=h, width=w, colorspace=c,
                          encoded_image_string=gif_bytes(video, fps))
    self._tb._get_file_writer().add_summary(
        Summary(value=[Summary.Value(tag=f"preview/{tag}", image=image)]), step)
    return path

  def close(self) -> None:
    self._tb.close()
