"""`moving_digits`: real handwritten digits sliding over a plain background.

The digits are scikit-learn's 8x8 handwriting scans (`sklearn.datasets.load_digits`,
1797 images shipped with the package: nothing is downloaded). A clip shows one digit,
upsampled with bilinear interpolation (and 4x4 supersampling) to a DIGIT_SIZE *
min(H, W) square, drawn in white over a plain background and moving in a straight
line, captioned `the digit 7 moving left`. The motion follows the `moving_shapes`
law (`moving_shapes.centres`): the centre travels 0.5 x the frame's extent at
constant speed, frame t of T is at time t / (T - 1), the digit stays inside the
frame, and the scene depends only on (split, index), never on the resolution or
frame count.

Splits divide the *images*: image i is in `train` if i % 10 < 7, `validation` if
i % 10 == 7, `test` otherwise, so test clips show handwriting never seen in training
(the dataset ships no writer ids, so a writer may appear in more than one split).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from scipy import ndimage

from videojax.data.builders import VideoBuilder
from videojax.data.moving_shapes import (DIRECTIONS, SUPERSAMPLE, check_size, check_split,
                                         centres)

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "gray": (96, 96, 96), "navy": (20, 30, 110),
    "maroon": (120, 25, 30), "forest": (25, 90, 40)}
INK = (255, 255, 255)  # the digit's colour
DIGIT_SIZE = 0.4  # side of the 8x8 image's square, fraction of min(H, W)
# Bilinear interpolation towards zero outside the image adds half a source pixel of
# ink on each side; the path keeps this larger square inside the frame.
_SUPPORT = 9 / 8
MIN_SIZE = 16
_SPLIT_OF_REMAINDER = ["train"] * 7 + ["validation"] + ["test"] * 2  # by image id % 10


@functools.lru_cache(maxsize=1)
def digit_images() -> tuple[np.ndarray, np.ndarray]:
  """All scikit-learn digits: (images float64 [1797, 8, 8] in [0, 1], labels int64)."""
  from sklearn.datasets import load_digits  # deferred: only this module needs it
  digits = load_digits()
  return digits.images / 16.0, digits.target.astype(np.int64)


def split_image_ids(split: str) -> np.ndarray:
  """Ids (indices into `digit_images`) of the images a split draws from: int64 [n]."""
  check_split(split)
  ids = np.arange(len(digit_images()[1]))
  return ids[np.array([_SPLIT_OF_REMAINDER[i % 10] == split for i in ids])]


@dataclasses.dataclass(frozen=True)
class DigitScene:
  """One digit's clip.

  Attributes:
    label: the digit, 0-9.
    image_id: index of the handwriting image in `digit_images`.
    direction: one of DIRECTIONS.
    along, across: in [0, 1], the path's placement (see `moving_shapes.ShapeObject`).
    background: one of BACKGROUNDS.
  """
  label: int
  image_id: int
  direction: str
  along: float
  across: float
  background: str

  @property
  def caption(self) -> str:
    return f"the digit {self.label} moving {self.direction}"


def sample_example(split: str, index: int, *, backgrounds: tuple[str, ...] = ("black",),
                   seed: int = 0) -> DigitScene:
  """Draws clip `index` of `split`, deterministically (seeded by seed, split, index).

  Args:
    split: 'train', 'validation' or 'test'.
    index: the example's index (>= 0).
    backgrounds: names in BACKGROUNDS to draw the background from (uniformly).
    seed: base seed of the whole dataset.

  Returns:
    A `DigitScene`; `.caption` is its caption.
  """
  split_id = check_split(split)
  if index < 0:
    raise ValueError(f"index must be >= 0, got {index}.")
  unknown = [b for b in backgrounds if b not in BACKGROUNDS]
  if not backgrounds or unknown:
    raise ValueError(f"backgrounds must be a non-empty subset of {list(BACKGROUNDS)}, "
                     f"got {list(backgrounds)}.")
  rng = np.random.default_rng([seed, 100 + split_id, index])  # 100+: apart from shapes
  pool = split_image_ids(split)
  image_id = int(pool[rng.integers(len(pool))])
  direction = DIRECTIONS[rng.integers(len(DIRECTIONS))]
  along, across = rng.uniform(0.0, 1.0, 2)
  background = backgrounds[rng.integers(len(backgrounds))]
  label = int(digit_images()[1][image_id])
  return DigitScene(label, image_id, direction, float(along), float(across), background)


def digit_centres(scene: DigitScene, frames: int, height: int, width: int) -> np.ndarray:
  """Centre of the digit's square per frame, in pixels: float64 [T, 2] (x, y)."""
  support = _SUPPORT * DIGIT_SIZE * min(height, width)
  return centres(scene.direction, scene.along, scene.across, support, frames, height, width)


def ink(scene: DigitScene, frames: int, height: int, width: int) -> np.ndarray:
  """The digit's anti-aliased ink per pixel: float [T, H, W] in [0, 1]."""
  check_size(frames, height, width, min_size=1)
  image = digit_images()[0][scene.image_id]  # [8, 8]
  size = DIGIT_SIZE * min(height, width)
  xy = digit_centres(scene, frames, height, width)  # [T, 2]
  s = SUPERSAMPLE
  offs = (np.arange(s) + 0.5) / s
  xs = (np.arange(width)[:, None] + offs).reshape(-1)  # [W*s] pixel coordinates
  ys = (np.arange(height)[:, None] + offs).reshape(-1)  # [H*s]
  out = np.empty((frames, height, width))
  for t in range(frames):
    # Source pixel k of 8 is centred at (k + 0.5) / 8 of the square's side.
    u = (xs - xy[t, 0] + size / 2) / size * 8 - 0.5  # [W*s] source column
    v = (ys - xy[t, 1] + size / 2) / size * 8 - 0.5  # [H*s] source row
    rows, cols = np.meshgrid(v, u, indexing="ij")  # [H*s, W*s]
    fine = ndimage.map_coordinates(image, [rows, cols], order=1, mode="grid-constant",
                                   cval=0.0)
    out[t] = fine.reshape(height, s, width, s).mean(axis=(1, 3))
  return np.clip(out, 0.0, 1.0)  # [T, H, W]


def render(scene: DigitScene, frames: int, height: int, width: int) -> np.ndarray:
  """Renders a digit clip.

  Args:
    scene: from `sample_example`.
    frames, height, width: the clip's shape; frames >= 2.

  Returns:
    uint8 [T, H, W, 3].
  """
  if scene.background not in BACKGROUNDS:
    raise ValueError(f"Unknown background {scene.background!r}; expected one of "
                     f"{list(BACKGROUNDS)}.")
  a = ink(scene, frames, height, width)[..., None]  # [T, H, W, 1]
  bg = np.asarray(BACKGROUNDS[scene.background], np.float64)
  video = bg * (1 - a) + np.asarray(INK, np.float64) * a  # [T, H, W, 3]
  return np.clip(np.round(video), 0, 255).astype(np.uint8)


@dataclasses.dataclass(eq=False)
class MovingDigitsConfig(tfds.core.BuilderConfig):
  """Clip shape, backgrounds and split sizes of a `moving_digits` build."""
  frames: int = 16
  height: int = 32
  width: int = 32
  backgrounds: tuple[str, ...] = ("black",)
  train_size: int = 20_000
  validation_size: int = 1_000
  test_size: int = 2_000
  seed: int = 0


class MovingDigits(VideoBuilder):
  """Handwritten digits (scikit-learn's 8x8 scans) moving over a plain background.

  Extra features: label, image_id, direction (index in DIRECTIONS), background
  (index in BACKGROUNDS), all int64 scalars; placement float32 [2] (along, across).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      MovingDigitsConfig(name="tiny", frames=8, height=16, width=16, train_size=32,
                         validation_size=8, test_size=8,
                         description="8 frames of 16x16, tiny splits, for tests."),
      MovingDigitsConfig(name="base", frames=16, height=32, width=32,
                         description="16 frames of 32x32 on black."),
      MovingDigitsConfig(name="base_color", frames=16, height=32, width=32,
                         backgrounds=tuple(BACKGROUNDS),
                         description="16 frames of 32x32 on plain coloured backgrounds."),
      MovingDigitsConfig(name="hires", frames=16, height=64, width=64,
                         description="16 frames of 64x64 on black."),
  ]

  def _config(self) -> MovingDigitsConfig:
    cfg = self.builder_config
    check_size(cfg.frames, cfg.height, cfg.width, min_size=MIN_SIZE)
    return cfg

  def extra_features(self) -> Mapping[str, Any]:
    return {
        "label": tfds.features.Scalar(dtype=np.int64),
        "image_id": tfds.features.Scalar(dtype=np.int64),
        "direction": tfds.features.Scalar(dtype=np.int64),
        "background": tfds.features.Scalar(dtype=np.int64),
        "placement": tfds.features.Tensor(shape=(2,), dtype=np.float32),
    }

  def generate(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    cfg = self._config()
    for index in range(self.split_sizes()[split]):
      scene = sample_example(split, index, backgrounds=tuple(cfg.backgrounds),
                             seed=cfg.seed)
      yield index, {
          "video": render(scene, cfg.frames, cfg.height, cfg.width),
          "caption": scene.caption, "index": index, "label": scene.label,
          "image_id": scene.image_id, "direction": DIRECTIONS.index(scene.direction),
          "background": list(BACKGROUNDS).index(scene.background),
          "placement": np.array([scene.along, scene.across], np.float32)}
