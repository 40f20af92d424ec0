"""moving_shapes: the spec's vocabulary, caption grammar, geometry, splits and builder."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from videojax.data import builders
from videojax.data import moving_shapes as ms

_OBJ = (rf"a ({'|'.join(ms.COLORS)}) ({'|'.join(ms.SHAPES)}) "
        rf"moving ({'|'.join(ms.DIRECTIONS)})")
_CAPTION = re.compile(rf"^{_OBJ}(?: and {_OBJ})? on a ({'|'.join(ms.BACKGROUNDS)}) background$")
EXTENT, TRAVEL = 0.3, 0.5  # the spec's values, not read from the module under test
_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # y grows down
_AREA = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}  # area / extent^2


def _parse(caption: str) -> tuple[str, list[tuple[str, str, str]]]:
  m = _CAPTION.match(caption)
  assert m, f"caption does not follow the grammar: {caption!r}"
  g = m.groups()
  objects = [tuple(g[0:3])] + ([tuple(g[3:6])] if g[3] else [])
  return g[6], objects


def _alpha(video: np.ndarray, background: str, color: str) -> np.ndarray:
  """Per-pixel coverage read back from the pixels: float [T, H, W]."""
  bg = np.asarray(ms.BACKGROUNDS[background], np.float64)
  d = np.asarray(ms.COLORS[color], np.float64) - bg
  return (video.astype(np.float64) - bg) @ d / (d @ d)


def test_vocabulary_matches_spec():
  assert ms.BACKGROUNDS == {"black": (0, 0, 0), "gray": (128, 128, 128),
                            "white": (255, 255, 255)}
  assert ms.COLORS == {"red": (230, 40, 40), "green": (40, 190, 60), "blue": (40, 90, 230),
                       "yellow": (235, 210, 40), "purple": (150, 60, 200),
                       "cyan": (40, 200, 210)}
  assert ms.SHAPES == ("circle", "square", "triangle")
  assert ms.DIRECTIONS == ("left", "right", "up", "down")
  assert set(ms.HELD_OUT) == {("red", "triangle"), ("blue", "circle"), ("yellow", "square")}


@pytest.mark.parametrize("num_objects", [1, 2])
def test_captions_parse_back_to_attributes(num_objects):
  for split, index in itertools.product(ms.SPLITS, range(40)):
    scene = ms.sample_example(split, index, num_objects)
    background, objects = _parse(scene.caption)
    assert background == scene.background
    assert objects == [(o.color, o.shape, o.direction) for o in scene.objects]
    assert len(objects) == num_objects
  one = ms.Scene("gray", (ms.ShapeObject("red", "circle", "left", 0.5, 0.5),))
  assert one.caption == "a red circle moving left on a gray background"
  two = ms.Scene("white", (ms.ShapeObject("blue", "square", "up", 0, 0),
                           ms.ShapeObject("cyan", "triangle", "down", 1, 1)))
  assert two.caption == ("a blue square moving up and a cyan triangle moving down "
                         "on a white background")


def test_splits_hold_out_pairs():
  seen = {"train": set(), "validation": set(), "test": set()}
  for split, n in [("train", 300), ("validation", 150), ("test", 150)]:
    for num_objects, index in itertools.product((1, 2), range(n)):
      scene = ms.sample_example(split, index, num_objects)
      pairs = [(o.color, o.shape) for o in scene.objects]
      seen[split].update(pairs)
      assert len({c for c, _ in pairs}) == len(pairs)  # c1 != c2
      held = [p in ms.HELD_OUT for p in pairs]
      assert all(held) if split == "test" else not any(held), (split, pairs)
  every = {(c, s) for c in ms.COLORS for s in ms.SHAPES}
  assert seen["train"] == seen["validation"] == every - set(ms.HELD_OUT)
  assert seen["test"] == set(ms.HELD_OUT)


def test_deterministic_by_split_and_index():
  for num_objects in (1, 2):
    a = ms.sample_example("train", 7, num_objects)
    assert a == ms.sample_example("train", 7, num_objects)
    np.testing.assert_array_equal(ms.render(a, 4, 32, 32), ms.render(a, 4, 32, 32))
    assert a != ms.sample_example("train", 8, num_objects)
    assert a != ms.sample_example("validation", 7, num_objects)  # a different seed
  videos = [ms.render(ms.sample_example("train", i), 4, 32, 32) for i in range(5)]
  assert all(not np.array_equal(videos[0], v) for v in videos[1:])


@pytest.mark.parametrize("num_objects", [1, 2])
def test_every_kth_frame_is_the_lower_frame_rate_clip(num_objects):
  for index in range(6):
    scene = ms.sample_example("train", index, num_objects)
    fine, coarse = ms.render(scene, 9, 32, 32), ms.render(scene, 5, 32, 32)
    np.testing.assert_array_equal(fine[::2], coarse)
    np.testing.assert_array_equal(ms.render(scene, 7, 32, 32)[::3], ms.render(scene, 3, 32, 32))


def test_same_scene_at_every_resolution():
  # The scene depends on no resolution: a 64x64 render, 2x2-averaged, is the 32x32 one.
  for index in range(4):
    scene = ms.sample_example("test", index, 2)
    hi = ms.render(scene, 3, 64, 64).astype(np.float64)
    lo = ms.render(scene, 3, 32, 32).astype(np.float64)
    pooled = hi.reshape(3, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.abs(pooled - lo).mean() < 1.0 and np.abs(pooled - lo).max() < 40


def test_palette_colours_and_exact_background():
  for index in range(12):
    scene = ms.sample_example("train", index, 1 + index % 2)
    video = ms.render(scene, 4, 48, 48)  # [T, H, W, 3]
    bg = np.asarray(ms.BACKGROUNDS[scene.background])
    masks = ms.object_masks(scene, 4, 48, 48)  # [N, T, H, W]
    e = EXTENT * 48
    ys, xs = np.mgrid[0:48, 0:48] + 0.5
    near = np.zeros((4, 48, 48), bool)
    for o in scene.objects:
      xy = ms.centres(o.direction, o.along, o.across, e, 4, 48, 48)
      for t in range(4):
        near[t] |= (np.abs(xs - xy[t, 0]) < e / 2 + 1) & (np.abs(ys - xy[t, 1]) < e / 2 + 1)
    np.testing.assert_array_equal(video[~near], np.broadcast_to(bg, video[~near].shape))
    for o, mask in zip(scene.objects, masks):
      col = np.asarray(ms.COLORS[o.color])
      full = mask == 1.0
      assert full.sum() > 0.3 * e * e
      np.testing.assert_array_equal(video[full], np.broadcast_to(col, video[full].shape))
      # Edge pixels lie on the segment between the background and the object colour.
      edge = (mask > 0) & (mask < 1)
      a = _alpha(video, scene.background, o.color)[edge]
      blend = bg + a[:, None] * (col - bg)
      assert np.abs(video[edge] - blend).max() <= 2.0
    # Every non-background pixel is within a palette blend of some object.
    off = np.any(video != bg, axis=-1)
    assert np.all(masks.sum(0)[off] > 0)


@pytest.mark.parametrize("height,width", [(64, 64), (48, 96)])
@pytest.mark.parametrize("shape", ms.SHAPES)
def test_extent_travel_and_constant_speed(shape, height, width):
  e = EXTENT * min(height, width)
  for direction, (along, across) in zip(ms.DIRECTIONS, [(0, 0), (1, 1), (0.3, 0.8), (1, 0)]):
    obj = ms.ShapeObject("purple", shape, direction, along, across)
    video = ms.render(ms.Scene("gray", (obj,)), 5, height, width)
    a = _alpha(video, "gray", "purple")  # [T, H, W]
    assert a.min() > -0.02 and a.max() < 1.02
    # Area and bounding box match the extent (so the object is inside every frame).
    np.testing.assert_allclose(a.sum(axis=(1, 2)), _AREA[shape] * e * e, rtol=0.02)
    for frame in a:
      rows, cols = np.nonzero(frame.sum(1) > 0.02)[0], np.nonzero(frame.sum(0) > 0.02)[0]
      assert abs(rows[-1] - rows[0] + 1 - e) <= 2 and abs(cols[-1] - cols[0] + 1 - e) <= 2
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    centroid = np.stack([(a * xs).sum((1, 2)), (a * ys).sum((1, 2))], 1) / a.sum((1, 2))[:, None]
    steps = np.diff(centroid, axis=0)  # [T - 1, 2]
    unit = np.asarray(_UNIT[direction])
    travel = TRAVEL * (width if unit[0] else height)
    np.testing.assert_allclose(centroid[-1] - centroid[0], travel * unit, atol=0.15)
    np.testing.assert_allclose(steps, np.broadcast_to(travel * unit / 4, steps.shape),
                               atol=0.15)


def test_triangle_points_up():
  obj = ms.ShapeObject("green", "triangle", "right", 0.5, 0.5)
  a = _alpha(ms.render(ms.Scene("black", (obj,)), 2, 64, 64), "black", "green")[0]
  widths = (a > 0.5).sum(1)
  rows = np.nonzero(widths)[0]
  assert widths[rows[0]] <= 3 and widths[rows[-1]] >= 0.3 * 64 - 2  # apex up, base down


@pytest.mark.parametrize("aspect", [1.0, 2.0])
def test_two_objects_never_overlap(aspect):
  h, w = 16, int(16 * aspect)
  pairs = set()
  for split, index in itertools.product(("train", "test"), range(120)):
    scene = ms.sample_example(split, index, 2, aspect=aspect)
    pairs.add(tuple(o.direction for o in scene.objects))
    assert not ms.boxes_overlap(*scene.objects, aspect=aspect)
    m = ms.object_masks(scene, 8, h, w)  # [2, T, H, W]
    assert not np.any((m[0] > 0) & (m[1] > 0)), (split, index)
    # Also on a fine time grid at a higher resolution.
    m = ms.object_masks(scene, 33, 2 * h, 2 * w)
    assert not np.any((m[0] > 0) & (m[1] > 0)), (split, index)
  assert len(pairs) == 16  # every direction pair occurs, crossing paths included


@pytest.mark.parametrize("config", ["tiny", "tiny_two"])
def test_builder_matches_sampler(tmp_path, config):
  builder = builders.build(ms.MovingShapes, config, data_dir=str(tmp_path))
  cfg = builder.builder_config
  for split, size in builder.split_sizes().items():
    source = builders.data_source(builder, split)
    assert len(source) == size
    indices = []
    for k in range(len(source)):
      ex = source[k]
      index = int(ex["index"])
      indices.append(index)
      scene = ms.sample_example(split, index, cfg.num_objects)
      np.testing.assert_array_equal(ex["video"], ms.render(scene, 8, 16, 16))
      caption = ex["caption"].decode() if isinstance(ex["caption"], bytes) else ex["caption"]
      assert caption == scene.caption
      background, objects = _parse(caption)
      assert list(ms.BACKGROUNDS)[ex["background"]] == background
      assert [(list(ms.COLORS)[c], ms.SHAPES[s], ms.DIRECTIONS[d]) for c, s, d in
              zip(ex["colors"], ex["shapes"], ex["directions"])] == objects
      np.testing.assert_allclose(ex["placements"],
                                 [[o.along, o.across] for o in scene.objects], rtol=1e-6)
    assert sorted(indices) == list(range(size))


def test_bad_inputs():
  with pytest.raises(ValueError, match=r"Unknown split 'dev'.*'train', 'validation', 'test'"):
    ms.sample_example("dev", 0)
  with pytest.raises(ValueError, match=r"num_objects must be 1 or 2, got 3"):
    ms.sample_example("train", 0, 3)
  with pytest.raises(ValueError, match=r"index must be >= 0, got -1"):
    ms.sample_example("train", -1)
  scene = ms.sample_example("train", 0)
  with pytest.raises(ValueError, match=r"frames must be >= 2.*got 1"):
    ms.render(scene, 1, 32, 32)
  bad = ms.Scene("pink", scene.objects)
  with pytest.raises(ValueError, match=r"Unknown background 'pink'"):
    ms.render(bad, 4, 32, 32)
  small = ms.MovingShapesConfig(name="small", frames=4, height=8, width=8)
  with pytest.raises(ValueError, match=r"height and width must be >= 16, got 8x8"):
    ms.MovingShapes(config=small, data_dir="/nonexistent").frame_shape()
  three = ms.MovingShapesConfig(name="three", num_objects=3)
  with pytest.raises(ValueError, match=r"num_objects must be 1 or 2, got 3"):
    ms.MovingShapes(config=three, data_dir="/nonexistent")


def test_parallel_build_yields_the_serial_examples_in_order(monkeypatch):
  """Worker processes render a large split; the examples and their order are the serial
  ones, so a build on a many-core machine writes the same dataset."""
  builder = ms.MovingShapes(config="tiny", data_dir="/nonexistent")
  serial = list(builder.generate("validation"))
  monkeypatch.setattr(ms, "PARALLEL_MIN", 0)
  monkeypatch.setattr(ms.os, "cpu_count", lambda: 3)
  parallel = list(builder.generate("validation"))
  assert [i for i, _ in parallel] == list(range(len(serial)))
  for (_, a), (_, b) in zip(serial, parallel):
    assert a.keys() == b.keys() and a["caption"] == b["caption"]
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
