"""`moving_shapes`: captioned synthetic video whose every caption word is checkable.

A clip shows one or two coloured shapes (circle, square, triangle) sliding in a
straight line over a plain background, with a caption such as `a red circle moving
left on a gray background`. Geometry is in relative units, so the same (split, index)
gives the same scene at every resolution and frame rate:

  extent e = 0.3 * min(H, W)       circle diameter, square side, triangle base/height
  travel   = 0.5 * W (left/right)  or 0.5 * H (up/down), at constant speed
  time     = t / (T - 1)           for frame t of T, so every k-th frame of a clip is
                                   the same motion at a lower frame rate

A scene is sampled (`sample_example`) as vocabulary choices plus two numbers in
[0, 1] per object (`along`, `across`) that place its path inside the frame; `render`
turns a scene into uint8 [T, H, W, 3] pixels, anti-aliased by 4x4 supersampling.
An object's "centre" is the centre of its e x e bounding box (for the triangle:
apex at the box's top edge, base on its bottom edge).

Splits: `train` and `validation` draw every (colour, shape) pair except the held-out
ones (HELD_OUT); `test` draws only held-out pairs. With two objects the colours
differ, and in `test` *both* objects are held-out pairs (in `train`/`validation`
neither is), so a test caption's every object is an unseen colour-shape pairing.
Two objects' bounding boxes stay at least `0.25 * e` apart in every frame (in x or
in y); paths are resampled until they do. The gap is relative to e, so it is the
same decision at every resolution (and >= 1 pixel from min(H, W) >= 16, so the two
anti-aliased footprints never share a pixel).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from videojax.data.builders import VideoBuilder

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "gray": (128, 128, 128), "white": (255, 255, 255)}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 190, 60), "blue": (40, 90, 230),
    "yellow": (235, 210, 40), "purple": (150, 60, 200), "cyan": (40, 200, 210)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
HELD_OUT: tuple[tuple[str, str], ...] = (("red", "triangle"), ("blue", "circle"),
                                         ("yellow", "square"))
SPLITS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}  # split -> seed id

EXTENT = 0.3  # object extent, fraction of min(H, W)
TRAVEL = 0.5  # distance travelled over the clip, fraction of the frame's extent
GAP = 0.25  # least gap between two objects' boxes, fraction of the extent
SUPERSAMPLE = 4
MIN_SIZE = 16  # least min(H, W): keeps objects apart by >= 1 pixel
MAX_TRIES = 512 * 200
PARALLEL_MIN = 1000  # examples in a split from which a build renders in worker processes

# Unit (dx, dy) of each direction in image coordinates (y grows downwards).
_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
_PAIRS = [(c, s) for c in COLORS for s in SHAPES]
_SPLIT_PAIRS = {"train": [p for p in _PAIRS if p not in HELD_OUT],
                "validation": [p for p in _PAIRS if p not in HELD_OUT],
                "test": list(HELD_OUT)}


@dataclasses.dataclass(frozen=True)
class ShapeObject:
  """One moving object.

  Attributes:
    color, shape, direction: vocabulary words (COLORS, SHAPES, DIRECTIONS).
    along: in [0, 1], where the path lies along the motion axis (0: as far left /
      up as the frame allows, 1: as far right / down).
    across: in [0, 1], the coordinate across the motion (same convention).
  """
  color: str
  shape: str
  direction: str
  along: float
  across: float


@dataclasses.dataclass(frozen=True)
class Scene:
  """A background and one or two objects; `render` turns it into pixels."""
  background: str
  objects: tuple[ShapeObject, ...]

  @property
  def caption(self) -> str:
    parts = [f"a {o.color} {o.shape} moving {o.direction}" for o in self.objects]
    return f"{' and '.join(parts)} on a {self.background} background"


def check_split(split: str) -> int:
  """Returns the split's seed id; ValueError for an unknown split."""
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {list(SPLITS)}.")
  return SPLITS[split]


def check_size(frames: int, height: int, width: int, min_size: int = MIN_SIZE) -> None:
  """ValueError unless frames >= 2 and min(height, width) >= min_size."""
  if frames < 2:
    raise ValueError(f"frames must be >= 2 (the clip spans time [0, 1]), got {frames}.")
  if min(height, width) < min_size:
    raise ValueError(f"height and width must be >= {min_size}, got {height}x{width}.")


def centres(direction: str, along: Any, across: Any, size: float, frames: int,
            height: float, width: float) -> np.ndarray:
  """Centre of an object's size x size box in each frame, in pixels.

  Pixel (i, j) covers [j, j + 1] x [i, i + 1]; the frame is [0, W] x [0, H]. The
  box stays inside the frame for the whole clip.

  Args:
    direction: one of DIRECTIONS.
    along, across: in [0, 1], the path's placement (see `ShapeObject`); floats or
      arrays of one shape S.
    size: the box's side in pixels.
    frames, height, width: the clip's shape.

  Returns:
    float64 S + [T, 2]: (x, y) per frame; frame t is at time t / (T - 1).
  """
  if direction not in _UNIT:
    raise ValueError(f"Unknown direction {direction!r}; expected one of {list(DIRECTIONS)}.")
  ux, uy = _UNIT[direction]
  horizontal = ux != 0.0
  length, other = (width, height) if horizontal else (height, width)
  travel = TRAVEL * length
  along = np.asarray(along, np.float64)[..., None]  # S + [1]
  across = np.asarray(across, np.float64)[..., None]  # S + [1]
  lo = size / 2 + along * (length - travel - size)  # smallest coordinate along the path
  start = lo if (ux + uy) > 0 else lo + travel
  cross = size / 2 + across * (other - size)
  time = np.arange(frames) / (frames - 1)  # [T]
  pos = start + (ux + uy) * travel * time  # S + [T]
  cross = np.broadcast_to(cross, pos.shape)
  return np.stack([pos, cross] if horizontal else [cross, pos], axis=-1)  # S + [T, 2]


def _coverage(shape: str, size: float, xy: np.ndarray, height: int, width: int) -> np.ndarray:
  """Fraction of each pixel inside the shape, by 4x4 supersampling: float [T, H, W]."""
  s = SUPERSAMPLE
  offs = (np.arange(s) + 0.5) / s
  xs = (np.arange(width)[:, None] + offs).reshape(-1)  # [W*s]
  ys = (np.arange(height)[:, None] + offs).reshape(-1)  # [H*s]
  dx = xs[None, None, :] - xy[:, 0, None, None]  # [T, 1, W*s]
  dy = ys[None, :, None] - xy[:, 1, None, None]  # [T, H*s, 1]
  r = size / 2
  if shape == "circle":
    inside = dx**2 + dy**2 <= r * r
  elif shape == "square":
    inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
  elif shape == "triangle":  # apex at the box's top centre, base along its bottom
    inside = (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
  else:
    raise ValueError(f"Unknown shape {shape!r}; expected one of {list(SHAPES)}.")
  t = xy.shape[0]
  return inside.reshape(t, height, s, width, s).mean(axis=(2, 4))  # [T, H, W]


def object_masks(scene: Scene, frames: int, height: int, width: int) -> np.ndarray:
  """Anti-aliased coverage of each object: float [N, T, H, W] in [0, 1]."""
  check_size(frames, height, width, min_size=1)
  size = EXTENT * min(height, width)
  return np.stack([
      _coverage(o.shape, size, centres(o.direction, o.along, o.across, size, frames,
                                       height, width), height, width)
      for o in scene.objects])


def render(scene: Scene, frames: int, height: int, width: int) -> np.ndarray:
  """Renders a scene.

  Args:
    scene: from `sample_example` (or built by hand).
    frames, height, width: the clip's shape; frames >= 2.

  Returns:
    uint8 [T, H, W, 3].
  """
  check_size(frames, height, width, min_size=1)
  for o in scene.objects:
    if o.color not in COLORS or o.direction not in DIRECTIONS:
      raise ValueError(f"Unknown colour or direction in {o}; expected colours "
                       f"{list(COLORS)} and directions {list(DIRECTIONS)}.")
  if scene.background not in BACKGROUNDS:
    raise ValueError(f"Unknown background {scene.background!r}; expected one of "
                     f"{list(BACKGROUNDS)}.")
  video = np.empty((frames, height, width, 3))  # [T, H, W, 3]
  video[...] = np.asarray(BACKGROUNDS[scene.background], np.float64)
  for o, cov in zip(scene.objects, object_masks(scene, frames, height, width)):
    a = cov[..., None]  # [T, H, W, 1]
    video = video * (1 - a) + np.asarray(COLORS[o.color], np.float64) * a
  return np.clip(np.round(video), 0, 255).astype(np.uint8)


def boxes_overlap(a: ShapeObject, b: ShapeObject, aspect: float = 1.0) -> bool:
  """Whether two objects' boxes come closer than GAP * extent (in x and y) in the clip.

  Exact over continuous time t in [0, 1] (positions are linear in t). Distances are
  in units of min(H, W), so only the aspect ratio W / H matters.
  """
  return bool(_too_close(a.direction, np.array([a.along, a.across]), b.direction,
                         np.array([b.along, b.across]), aspect))


def _too_close(dir_a: str, place_a: np.ndarray, dir_b: str, place_b: np.ndarray,
               aspect: float) -> np.ndarray:
  """`boxes_overlap` for a batch of placements [..., 2] (along, across): bool [...]."""
  h, w = (1.0, aspect) if aspect >= 1 else (1.0 / aspect, 1.0)
  pa = centres(dir_a, place_a[..., 0], place_a[..., 1], EXTENT, 2, h, w)  # [..., 2, 2]
  pb = centres(dir_b, place_b[..., 0], place_b[..., 1], EXTENT, 2, h, w)
  start = pa[..., 0, :] - pb[..., 0, :]  # [..., 2] relative (x, y) at t = 0
  slope = (pa[..., 1, :] - pb[..., 1, :]) - start  # [..., 2] its change up to t = 1
  m = (1 + GAP) * EXTENT
  with np.errstate(divide="ignore", invalid="ignore"):
    t1, t2 = (-m - start) / slope, (m - start) / slope
  still = slope == 0  # |d| < m always (if |start| < m) or never
  lo = np.where(still, np.where(np.abs(start) < m, -np.inf, np.inf), np.minimum(t1, t2))
  hi = np.where(still, np.where(np.abs(start) < m, np.inf, -np.inf), np.maximum(t1, t2))
  lo = np.maximum(lo.max(axis=-1), 0.0)  # [...] times when both |dx|, |dy| < m
  hi = np.minimum(hi.min(axis=-1), 1.0)
  return lo < hi


def sample_example(split: str, index: int, num_objects: int = 1, *, aspect: float = 1.0,
                   seed: int = 0) -> Scene:
  """Draws scene `index` of `split`, deterministically.

  The generator is seeded with (seed, split id, num_objects, index) only, and the
  draws are vocabulary choices and relative placements, so the scene is the same
  for every frame count and resolution (of the same aspect ratio).

  Args:
    split: 'train', 'validation' or 'test'.
    index: the example's index (>= 0).
    num_objects: 1 or 2.
    aspect: width / height of the frames it will be rendered at; only used to keep
      two objects apart.
    seed: base seed of the whole dataset.

  Returns:
    A `Scene`; `.caption` is its caption and `.objects` the per-object attributes.
  """
  split_id = check_split(split)
  if num_objects not in (1, 2):
    raise ValueError(f"num_objects must be 1 or 2, got {num_objects}.")
  if index < 0:
    raise ValueError(f"index must be >= 0, got {index}.")
  rng = np.random.default_rng([seed, split_id, num_objects, index])
  background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
  pairs = _SPLIT_PAIRS[split]
  first = pairs[rng.integers(len(pairs))]
  chosen = [first]
  if num_objects == 2:
    rest = [p for p in pairs if p[0] != first[0]]
    chosen.append(rest[rng.integers(len(rest))])
  directions = [DIRECTIONS[rng.integers(len(DIRECTIONS))] for _ in chosen]
  batch = 512
  for _ in range(MAX_TRIES // batch):
    place = rng.uniform(0.0, 1.0, (batch, num_objects, 2))  # [B, N, (along, across)]
    if num_objects == 2:  # keep the first placement whose objects stay apart
      ok = ~_too_close(directions[0], place[:, 0], directions[1], place[:, 1], aspect)
      if not ok.any():
        continue
      place = place[np.argmax(ok)]  # [N, 2]
    else:
      place = place[0]
    objects = tuple(ShapeObject(c, s, d, float(u), float(v))
                    for (c, s), d, (u, v) in zip(chosen, directions, place))
    return Scene(background, objects)
  raise ValueError(f"Could not place {num_objects} objects apart in {MAX_TRIES} tries "
                   f"(aspect {aspect}).")


def attribute_ids(scene: Scene) -> dict[str, np.ndarray]:
  """The scene's attributes as vocabulary indices (the builder's extra features)."""
  return {
      "background": np.int64(list(BACKGROUNDS).index(scene.background)),
      "colors": np.array([list(COLORS).index(o.color) for o in scene.objects], np.int64),
      "shapes": np.array([SHAPES.index(o.shape) for o in scene.objects], np.int64),
      "directions": np.array([DIRECTIONS.index(o.direction) for o in scene.objects],
                             np.int64),
      "placements": np.array([[o.along, o.across] for o in scene.objects], np.float32),
  }


@dataclasses.dataclass(eq=False)
class MovingShapesConfig(tfds.core.BuilderConfig):
  """Clip shape, number of objects and split sizes of a `moving_shapes` build."""
  frames: int = 16
  height: int = 32
  width: int = 32
  num_objects: int = 1
  train_size: int = 20_000
  validation_size: int = 1_000
  test_size: int = 2_000
  seed: int = 0


class MovingShapes(VideoBuilder):
  """Coloured shapes moving over a plain background, with exact captions.

  Extra features: background int64 (index in BACKGROUNDS); colors, shapes,
  directions int64 [num_objects] (indices in COLORS, SHAPES, DIRECTIONS); placements
  float32 [num_objects, 2] (along, across), so a clip can be re-rendered exactly.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      MovingShapesConfig(name="tiny", frames=8, height=16, width=16, train_size=48,
                         validation_size=8, test_size=8,
                         description="8 frames of 16x16, tiny splits, for tests."),
      MovingShapesConfig(name="tiny_two", frames=8, height=16, width=16, num_objects=2,
                         train_size=48, validation_size=8, test_size=8,
                         description="Two objects, 8 frames of 16x16, for tests."),
      MovingShapesConfig(name="base", frames=16, height=32, width=32,
                         description="16 frames of 32x32, one object."),
      MovingShapesConfig(name="base_two", frames=16, height=32, width=32, num_objects=2,
                         description="16 frames of 32x32, two objects."),
      MovingShapesConfig(name="hires", frames=16, height=64, width=64,
                         description="16 frames of 64x64, one object."),
      MovingShapesConfig(name="hires_two", frames=16, height=64, width=64, num_objects=2,
                         description="16 frames of 64x64, two objects."),
  ]

  def _config(self) -> MovingShapesConfig:
    cfg = self.builder_config
    check_size(cfg.frames, cfg.height, cfg.width)
    if cfg.num_objects not in (1, 2):
      raise ValueError(f"num_objects must be 1 or 2, got {cfg.num_objects}.")
    return cfg

  def extra_features(self) -> Mapping[str, Any]:
    n = self._config().num_objects
    return {
        "background": tfds.features.Scalar(dtype=np.int64),
        "colors": tfds.features.Tensor(shape=(n,), dtype=np.int64),
        "shapes": tfds.features.Tensor(shape=(n,), dtype=np.int64),
        "directions": tfds.features.Tensor(shape=(n,), dtype=np.int64),
        "placements": tfds.features.Tensor(shape=(n, 2), dtype=np.float32),
    }

  def generate(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    cfg = self._config()
    n = self.split_sizes()[split]
    jobs = ((split, index, cfg) for index in range(n))
    workers = min(os.cpu_count() or 1, 32)
    if workers <= 2 or n < PARALLEL_MIN:  # small builds and machines: no process start-up
      yield from map(_example, jobs)
      return
    # Rendering dominates a build (7 ms a 16x64x64 clip); examples are independent and
    # come back in order, so the files are the same as a serial build's. 'spawn': the
    # builder may run in a process that already holds threads (JAX, grain).
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
      yield from pool.imap(_example, jobs, chunksize=64)


def _example(job: tuple[str, int, MovingShapesConfig]) -> tuple[int, dict[str, Any]]:
  """(index, example) of one (split, index, config): what `MovingShapes.generate` yields."""
  split, index, cfg = job
  scene = sample_example(split, index, cfg.num_objects, aspect=cfg.width / cfg.height,
                         seed=cfg.seed)
  return index, {"video": render(scene, cfg.frames, cfg.height, cfg.width),
                 "caption": scene.caption, "index": index, **attribute_ids(scene)}
