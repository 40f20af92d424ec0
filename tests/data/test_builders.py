"""The tfds layer: a VideoBuilder subclass builds to ArrayRecord and reads back."""

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from videojax.data import builders


@dataclasses.dataclass
class _Config(tfds.core.BuilderConfig):
  frames: int = 3
  size: int = 4


class Counting(builders.VideoBuilder):
  """Videos whose pixels are their index."""

  BUILDER_CONFIGS = [_Config(name="small"), _Config(name="large", frames=5, size=8)]

  def frame_shape(self):
    c = self.builder_config
    return (c.frames, c.size, c.size)

  def split_sizes(self):
    return {"train": 6, "test": 2}

  def generate(self, split):
    offset = 100 if split == "test" else 0
    for i in range(self.split_sizes()[split]):
      yield i, {"video": np.full(self.frame_shape() + (3,), i + offset, np.uint8),
                "caption": f"clip {i}" if i % 2 else "", "index": i}


def test_build_and_read_back(tmp_path):
  b = builders.build(Counting, "large", data_dir=str(tmp_path))
  src = builders.data_source(b, "train")
  assert len(src) == 6 and len(builders.data_source(b, "test")) == 2
  by_index = {int(src[k]["index"]): src[k] for k in range(len(src))}
  for i, ex in by_index.items():
    assert ex["video"].shape == (5, 8, 8, 3) and ex["video"].dtype == np.uint8
    assert np.all(ex["video"] == i)
    assert ex["caption"] == (f"clip {i}".encode() if i % 2 else b"")
  # building again reuses the files
  assert builders.build(Counting, "large", data_dir=str(tmp_path)).is_prepared()


def test_bad_names_and_missing_builds(tmp_path):
  b = builders.build(Counting, "small", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"has no split 'validation'; it has \['train', 'test'\]"):
    builders.data_source(b, "validation")
  with pytest.raises(ValueError, match=r"Unknown dataset 'ucf'"):
    builders.get_builder_class("ucf")
  with pytest.raises(FileNotFoundError, match=r"not built in .*python -m experiments.build_dataset"):
    builders.load("moving_shapes", data_dir=str(tmp_path / "empty"))
