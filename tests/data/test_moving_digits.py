"""moving_digits: captions, split disjointness, motion, size, determinism and builder."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from videojax.data import builders
from videojax.data import moving_digits as md

_CAPTION = re.compile(r"^the digit ([0-9]) moving (left|right|up|down)$")
_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # y grows down
SIZE, TRAVEL = 0.4, 0.5  # digit square and travel, fractions of the frame


def _ink(video: np.ndarray, background: str) -> np.ndarray:
  """Per-pixel ink read back from the pixels (white over the background): [T, H, W]."""
  bg = np.asarray(md.BACKGROUNDS[background], np.float64)
  d = np.asarray(md.INK, np.float64) - bg
  return (video.astype(np.float64) - bg) @ d / (d @ d)


def test_caption_names_label_and_direction():
  images, labels = md.digit_images()
  assert images.shape == (1797, 8, 8) and 0 <= images.min() and images.max() <= 1
  seen = set()
  for split, index in itertools.product(("train", "validation", "test"), range(100)):
    scene = md.sample_example(split, index)
    m = _CAPTION.match(scene.caption)
    assert m, scene.caption
    assert int(m.group(1)) == scene.label == labels[scene.image_id]
    assert m.group(2) == scene.direction
    seen.add((scene.label, scene.direction))
  assert len(seen) == 40  # every digit in every direction


def test_splits_are_disjoint_images():
  ids = {s: md.split_image_ids(s) for s in ("train", "validation", "test")}
  assert sum(len(v) for v in ids.values()) == 1797
  for a, b in itertools.combinations(ids.values(), 2):
    assert not set(a) & set(b)
  images = md.digit_images()[0].reshape(1797, 64)
  train = {images[i].tobytes() for i in ids["train"]}
  assert not any(images[i].tobytes() in train for i in ids["test"])  # unseen handwriting
  for split in ids:
    drawn = {md.sample_example(split, i).image_id for i in range(200)}
    assert drawn <= set(ids[split])
    assert len(drawn) > 100
  # Every digit class is in every split.
  labels = md.digit_images()[1]
  assert all(set(labels[v]) == set(range(10)) for v in ids.values())


@pytest.mark.parametrize("height,width", [(64, 64), (48, 96)])
def test_motion_matches_caption(height, width):
  for index in range(8):
    scene = md.sample_example("train", index, backgrounds=tuple(md.BACKGROUNDS))
    video = md.render(scene, 5, height, width)  # [T, H, W, 3]
    a = _ink(video, scene.background)
    assert a.min() > -0.01 and a.max() < 1.01
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    mass = a.sum((1, 2))
    centroid = np.stack([(a * xs).sum((1, 2)), (a * ys).sum((1, 2))], 1) / mass[:, None]
    unit = np.asarray(_UNIT[scene.direction])
    travel = TRAVEL * (width if unit[0] else height)
    np.testing.assert_allclose(centroid[-1] - centroid[0], travel * unit, atol=0.2)
    steps = np.diff(centroid, axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(travel * unit / 4, steps.shape),
                               atol=0.2)
    # The digit's size: the ink's total is the image's, scaled to a 0.4*min(H, W) square
    # (bilinear interpolation keeps the mass); it is the same in every frame (inside).
    d = SIZE * min(height, width)
    image = md.digit_images()[0][scene.image_id]
    np.testing.assert_allclose(mass, image.sum() * (d / 8) ** 2, rtol=0.02)
    # The ink's centroid is the image's, placed in the square around `digit_centres`.
    xy = md.digit_centres(scene, 5, height, width)  # [T, 2]
    cell = (np.arange(8) + 0.5) * d / 8 - d / 2
    own = np.array([(image.sum(0) * cell).sum(), (image.sum(1) * cell).sum()]) / image.sum()
    np.testing.assert_allclose(centroid, xy + own, atol=0.06)
    # Away from the digit's square the frame is exactly the background.
    bg = np.asarray(md.BACKGROUNDS[scene.background])
    for t in range(5):
      far = (np.abs(xs - xy[t, 0]) > d / 2 + 2) | (np.abs(ys - xy[t, 1]) > d / 2 + 2)
      np.testing.assert_array_equal(video[t][far], np.broadcast_to(bg, video[t][far].shape))


def test_rendered_digit_looks_like_its_image():
  # Average the ink over the 8x8 cells of the digit's square: it is the source image.
  images = md.digit_images()[0]
  for index in range(10):
    scene = md.sample_example("test", index)
    a = _ink(md.render(scene, 2, 80, 80), "black")[0]  # [H, W]; square side 32 px
    x, y = md.digit_centres(scene, 2, 80, 80)[0]
    x0, y0 = int(round(x - 16)), int(round(y - 16))
    cells = a[y0:y0 + 32, x0:x0 + 32].reshape(8, 4, 8, 4).mean((1, 3))
    corr = np.corrcoef(cells.ravel(), images[scene.image_id].ravel())[0, 1]
    assert corr > 0.9, (index, corr)


def test_deterministic_and_frame_rate_consistent():
  a = md.sample_example("train", 3)
  assert a == md.sample_example("train", 3)
  assert a != md.sample_example("train", 4) and a != md.sample_example("validation", 3)
  for index in range(5):
    scene = md.sample_example("validation", index)
    np.testing.assert_array_equal(md.render(scene, 9, 32, 32)[::2],
                                  md.render(scene, 5, 32, 32))
  videos = [md.render(md.sample_example("test", i), 3, 32, 32) for i in range(4)]
  assert all(not np.array_equal(videos[0], v) for v in videos[1:])


def test_builder_matches_sampler(tmp_path):
  builder = builders.build(md.MovingDigits, "tiny", data_dir=str(tmp_path))
  for split, size in builder.split_sizes().items():
    source = builders.data_source(builder, split)
    assert len(source) == size
    indices = []
    for k in range(len(source)):
      ex = source[k]
      index = int(ex["index"])
      indices.append(index)
      scene = md.sample_example(split, index)
      np.testing.assert_array_equal(ex["video"], md.render(scene, 8, 16, 16))
      caption = ex["caption"].decode() if isinstance(ex["caption"], bytes) else ex["caption"]
      assert caption == scene.caption
      assert (ex["label"], ex["image_id"]) == (scene.label, scene.image_id)
      assert md.DIRECTIONS[ex["direction"]] == scene.direction
      assert list(md.BACKGROUNDS)[ex["background"]] == scene.background
      assert ex["image_id"] in md.split_image_ids(split)
    assert sorted(indices) == list(range(size))


def test_bad_inputs():
  with pytest.raises(ValueError, match=r"Unknown split 'dev'"):
    md.sample_example("dev", 0)
  with pytest.raises(ValueError, match=r"Unknown split 'dev'"):
    md.split_image_ids("dev")
  with pytest.raises(ValueError, match=r"index must be >= 0, got -2"):
    md.sample_example("train", -2)
  with pytest.raises(ValueError, match=r"backgrounds must be a non-empty subset.*'pink'"):
    md.sample_example("train", 0, backgrounds=("pink",))
  with pytest.raises(ValueError, match=r"frames must be >= 2"):
    md.render(md.sample_example("train", 0), 1, 32, 32)
  small = md.MovingDigitsConfig(name="small", frames=4, height=12, width=32)
  with pytest.raises(ValueError, match=r"height and width must be >= 16, got 12x32"):
    md.MovingDigits(config=small, data_dir="/nonexistent")
