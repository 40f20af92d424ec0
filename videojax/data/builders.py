"""The one place that touches TensorFlow Datasets: builders, building, data sources.

Our datasets are tfds `GeneratorBasedBuilder`s written as ArrayRecord files and read
back with random access (`as_data_source`), which needs no TensorFlow. Frames are a
`tfds.features.Tensor` of uint8 [T, H, W, 3] with ZLIB encoding (the `Video`
feature needs TensorFlow). Every example has:
  video    uint8 [T, H, W, 3]
  caption  text ('' for an unlabeled clip)
  index    int64, the example's position in its split (records are stored shuffled)
plus whatever a dataset adds (`extra_features`).

Public tfds video datasets (ucf101, ...) that a user has downloaded keep working
through `tfds.load` when TensorFlow is installed; that path is optional and not
exercised here.
"""

from __future__ import annotations

import abc
import os
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

DEFAULT_DATA_DIR = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


class VideoBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of our video datasets. Subclasses set VERSION and BUILDER_CONFIGS and define

    generate(self, split) -> iterator of (index, example dict)
    frame_shape(self) -> (T, H, W)  (default: config.frames, .height, .width)
    split_sizes(self) -> {split: n}  (default: config.train/validation/test_size)
  """

  VERSION = tfds.core.Version("1.0.0")

  def extra_features(self) -> Mapping[str, Any]:
    return {}

  def _config(self):
    """The builder config, validated (subclasses add their checks)."""
    return self.builder_config

  def frame_shape(self) -> tuple[int, int, int]:
    """(T, H, W); by default the config's frames, height and width fields."""
    cfg = self._config()
    return cfg.frames, cfg.height, cfg.width

  def split_sizes(self) -> Mapping[str, int]:
    """{split: n}; by default the config's train/validation/test_size fields."""
    cfg = self._config()
    return {"train": cfg.train_size, "validation": cfg.validation_size,
            "test": cfg.test_size}

  @abc.abstractmethod
  def generate(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, example) pairs of one split."""

  def _info(self) -> tfds.core.DatasetInfo:
    t, h, w = self.frame_shape()
    features = {
        "video": tfds.features.Tensor(shape=(t, h, w, 3), dtype=np.uint8,
                                      encoding=tfds.features.Encoding.ZLIB),
        "caption": tfds.features.Text(),
        "index": tfds.features.Scalar(dtype=np.int64),
        **self.extra_features(),
    }
    # Built outside a registered package: DatasetInfo is made here, not read from files.
    return tfds.core.DatasetInfo(builder=self, description=(self.__doc__ or "").strip(),
                                 features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded: every dataset here is made or local
    return {split: self._generate_examples(split) for split in self.split_sizes()}

  def _generate_examples(self, split):
    yield from self.generate(split)


def build(builder_cls: type[VideoBuilder], config: str | tfds.core.BuilderConfig | None = None,
          data_dir: str | None = None, **kwargs) -> VideoBuilder:
  """Builds a dataset (once; an existing build is reused) and returns its builder.

  Args:
    builder_cls: a `VideoBuilder` subclass.
    config: a builder config name or object (default: the first).
    data_dir: where the ArrayRecord files go (default ~/tensorflow_datasets).
    **kwargs: passed to the builder (e.g. the source folder of `video_folder`).
  """
  kw = dict(kwargs)
  if config is not None:
    kw["config"] = config
  builder = builder_cls(data_dir=data_dir or DEFAULT_DATA_DIR, file_format="array_record", **kw)
  builder.download_and_prepare()
  return builder


# name -> (module, class): imported on demand so `import videojax.data` stays light.
DATASETS = {
    "moving_shapes": ("videojax.data.moving_shapes", "MovingShapes"),
    "moving_digits": ("videojax.data.moving_digits", "MovingDigits"),
    "video_folder": ("videojax.data.video_folder", "VideoFolder"),
    "image_folder": ("videojax.data.video_folder", "ImageFolder"),
}


def get_builder_class(name: str) -> type[VideoBuilder]:
  """The builder class of a dataset name (one of DATASETS)."""
  import importlib

  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; expected one of {sorted(DATASETS)}.")
  module, cls = DATASETS[name]
  return getattr(importlib.import_module(module), cls)


def load(name: str, config: str | None = None, data_dir: str | None = None,
         **kwargs) -> VideoBuilder:
  """The builder of an already built dataset; fails, naming the command, if it is not."""
  data_dir = data_dir or DEFAULT_DATA_DIR
  kw = dict(kwargs, **({"config": config} if config else {}))
  builder = get_builder_class(name)(data_dir=data_dir, file_format="array_record", **kw)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"Dataset {name}/{builder.builder_config.name if builder.builder_config else ''} is not "
        f"built in {data_dir}; build it with: python -m experiments.build_dataset "
        f"--dataset={name}" + (f" --config={config}" if config else "") +
        f" --data_dir={data_dir}")
  return builder


def captions(builder: VideoBuilder) -> list[str]:
  """Every distinct caption of every split of a built dataset, sorted."""
  out = set()
  for split in builder.info.splits:  # the video stays encoded: only captions are read
    src = builder.as_data_source(split=split, decoders={"video": tfds.decode.SkipDecoding()})
    out.update(src[i]["caption"].decode() for i in range(len(src)))
  return sorted(out)


def data_source(builder: VideoBuilder, split: str):
  """Random-access source of decoded examples (numpy; no TensorFlow) for one split."""
  splits = list(builder.info.splits.keys())
  if split not in splits:
    raise ValueError(f"Dataset {builder.name!r} has no split {split!r}; it has {splits}.")
  return builder.as_data_source(split=split)
