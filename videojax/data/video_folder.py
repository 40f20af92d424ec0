"""A user's own videos (or images) as a tfds dataset.

A folder of video files plus a JSON-lines captions file, one object a line,
`{"file": "sub/clip.mp4", "caption": "a dog runs"}` with `file` relative to the folder.
Every video is resampled to the config's fps (nearest source frame), center-cropped to
the target aspect ratio, resized, and cut into fixed-length clips:

  step     = source_fps / fps                (source frames per output frame; fractional)
  start_c  = round(c * clip_stride * step)   (clip c's first source frame)
  frame k  = source frame start_c + round(k * step)      (round half up)

and every clip whose last frame exists is kept. A file without a caption (not in the
captions file, or with no "caption") gives unlabeled clips (caption ''). Files go to
`validation` by a stable hash of their relative path (validation_fraction of them), so
clips of one video never straddle splits (with 2+ files each split gets at least one).

A long build never stops on a bad file: an unreadable file is skipped with a
`logging.warning` naming it, a video shorter than one clip likewise; both are counted
in `builder.build_report` (also stored with the dataset, in its metadata.json).

    builder = build(VideoFolder, VideoFolderConfig(name="mine_16x64", num_frames=16,
                    fps=8, height=64, width=64), folder="/data/my_videos")
    src = data_source(builder, "train")   # src[i]["video"]: uint8 [16, 64, 64, 3]

Give each distinct config its own name: a build is reused by (data_dir, name), and
reusing one made from another folder or with other settings raises ValueError.

`ImageFolder` does the same for images (stored as 1-frame videos, T=1) for joint
image-video training; `frames_as_images` turns a video example into image examples.
"""

from __future__ import annotations

import abc

import dataclasses
import hashlib
import json
import logging
import math
import os
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from videojax.data.builders import VideoBuilder
from videojax.io.video import VideoReadError, center_crop_resize, iter_frames

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
  """How `VideoFolder` cuts videos into clips.

  Attributes:
    num_frames: frames per clip (T).
    fps: frame rate the clips are resampled to; None keeps each file's own rate.
    height, width: clip frame size (aspect-preserving center crop, then resize).
    clip_stride: output frames between consecutive clip starts (None: num_frames,
      i.e. back-to-back clips; smaller values overlap).
    validation_fraction: share of FILES held out as the `validation` split.
    captions_file: JSON-lines captions file name, relative to the folder.
  """
  num_frames: int = 16
  fps: float | None = 8.0
  height: int = 64
  width: int = 64
  clip_stride: int | None = None
  validation_fraction: float = 0.0
  captions_file: str = "captions.jsonl"

  def __post_init__(self):
    for field in ("num_frames", "height", "width"):
      if int(getattr(self, field)) < 1:
        raise ValueError(f"{type(self).__name__}.{field} must be >= 1, got "
                         f"{getattr(self, field)}.")
    if self.fps is not None and not self.fps > 0:
      raise ValueError(f"VideoFolderConfig.fps must be positive or None, got {self.fps}.")
    if self.clip_stride is not None and self.clip_stride < 1:
      raise ValueError(f"VideoFolderConfig.clip_stride must be >= 1 or None, got "
                       f"{self.clip_stride}.")
    if not 0.0 <= self.validation_fraction < 1.0:
      raise ValueError(f"validation_fraction must be in [0, 1), got "
                       f"{self.validation_fraction}.")


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """Image size and split of `ImageFolder` (fields as in `VideoFolderConfig`)."""
  height: int = 64
  width: int = 64
  validation_fraction: float = 0.0
  captions_file: str = "captions.jsonl"

  def __post_init__(self):
    if self.height < 1 or self.width < 1:
      raise ValueError(f"ImageFolderConfig height and width must be >= 1, got "
                       f"{self.height}x{self.width}.")
    if not 0.0 <= self.validation_fraction < 1.0:
      raise ValueError(f"validation_fraction must be in [0, 1), got "
                       f"{self.validation_fraction}.")


def _round(x: float) -> int:
  """Round half up (Python's round() rounds half to even)."""
  return int(math.floor(x + 0.5))


def clip_frame_indices(source_fps: float, config: VideoFolderConfig, clip: int) -> np.ndarray:
  """Source frame indices of clip number `clip` of a video (see the module docstring).

  Args:
    source_fps: the video file's frame rate.
    config: the dataset config.
    clip: clip number c >= 0.

  Returns:
    int64 [num_frames]; the first entry is the clip's `start_frame`.
  """
  step = source_fps / config.fps if config.fps else 1.0
  stride = config.clip_stride or config.num_frames
  start = _round(clip * stride * step)
  return np.array([start + _round(k * step) for k in range(config.num_frames)], np.int64)


def split_of(relpath: str, validation_fraction: float) -> str:
  """'validation' or 'train' for a file, from a stable hash of its relative path."""
  if validation_fraction <= 0:
    return "train"
  return "validation" if _hash01(relpath) < validation_fraction else "train"


def _hash01(relpath: str) -> float:
  digest = hashlib.sha256(relpath.encode("utf-8")).hexdigest()
  return int(digest[:12], 16) / float(16**12)


def read_captions(path: str) -> dict[str, str]:
  """Reads a JSON-lines captions file: {relative path: caption}.

  Blank lines are skipped; a missing or null "caption" is ''; a later line for the
  same file wins.

  Raises:
    ValueError: a line is not a JSON object with a "file" string (names file and line).
  """
  captions = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno} is not valid JSON ({e.msg}); each line must be "
                         '{"file": "relative/path.mp4", "caption": "..."}.') from e
      if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ValueError(f'{path}:{lineno} has no "file" string; each line must be '
                         '{"file": "relative/path.mp4", "caption": "..."}.')
      captions[_normalize(entry["file"])] = str(entry.get("caption") or "")
  return captions


def _normalize(relpath: str) -> str:
  return os.path.normpath(relpath).replace(os.sep, "/")


class _FolderBuilder(VideoBuilder):
  """Shared machinery: the source folder, captions, file splits, the build report."""

  SUFFIXES: tuple[str, ...] = ()

  def __init__(self, *, folder: str | os.PathLike | None = None, **kwargs):
    """Args: folder: the source folder (needed to build, not to read a finished build);
    **kwargs: the tfds builder arguments (data_dir, config, file_format, ...)."""
    self._folder = os.path.abspath(os.fspath(folder)) if folder is not None else None
    self._report: dict[str, Any] = {}
    self._files: dict[str, list[str]] | None = None
    super().__init__(**kwargs)
    self._original_state["folder"] = folder  # tfds pickles builders by their arguments
    if self.is_prepared():
      self._check_existing_build()
    elif self._folder is None:
      raise ValueError(f"{type(self).__name__} needs folder=... (the source folder) to build "
                       f"{self.data_dir}.")
    elif not os.path.isdir(self._folder):
      raise FileNotFoundError(f"{type(self).__name__} source folder {self._folder!r} does not "
                              "exist or is not a directory; pass folder= an existing folder.")

  def _config_record(self) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(self.builder_config).items()
            if k not in ("version", "release_notes", "supported_versions", "description",
                         "tags")}

  def _check_existing_build(self):
    meta = self.info.metadata or {}
    built_from, built_config = meta.get("folder"), meta.get("config")
    if self._folder is not None and built_from is not None and built_from != self._folder:
      raise ValueError(f"{self.data_dir} was built from {built_from!r}, not {self._folder!r}; "
                       "give this folder another config name or data_dir (or pass "
                       "folder=None to read the existing build).")
    if built_config is not None and built_config != self._config_record():
      raise ValueError(f"{self.data_dir} was built with config {built_config}, not "
                       f"{self._config_record()}; give a changed config a new name.")

  @property
  def build_report(self) -> dict[str, Any]:
    """What the build kept and skipped (also for a reused build, from metadata.json).

    Returns:
      A dict: folder, files, captioned_files, examples {split: n}; file lists
      unreadable, too_short, decode_errors (clips before the error kept),
      captions_missing_files; counts skipped_unreadable, skipped_too_short, truncated.
    """
    meta = self.info.metadata or {}
    return dict(self._report or meta.get("build_report") or {})

  def _info(self) -> tfds.core.DatasetInfo:
    info = super()._info()
    # Same info plus a metadata dict, which tfds stores with the data and restores.
    return tfds.core.DatasetInfo(builder=self, description=info.description,
                                 features=info.features, metadata=tfds.core.MetadataDict())

  def extra_features(self) -> Mapping[str, Any]:
    return {"file": tfds.features.Text(), "start_frame": tfds.features.Scalar(dtype=np.int64)}

  def _scan(self) -> dict[str, list[str]]:
    """Files per split, and captions; warns about captions naming missing files."""
    if self._files is not None:
      return self._files
    if self._folder is None or not os.path.isdir(self._folder):
      raise FileNotFoundError(f"Source folder {self._folder!r} does not exist.")
    cfg = self.builder_config
    files = []
    for root, dirs, names in os.walk(self._folder):
      dirs.sort()
      for name in sorted(names):
        if os.path.splitext(name)[1].lower() in self.SUFFIXES:
          files.append(_normalize(os.path.relpath(os.path.join(root, name), self._folder)))
    if not files:
      raise FileNotFoundError(f"No {'/'.join(self.SUFFIXES)} files in {self._folder!r}.")
    captions_path = os.path.join(self._folder, cfg.captions_file)
    self._captions = read_captions(captions_path) if os.path.isfile(captions_path) else {}
    if not os.path.isfile(captions_path):
      logger.warning("No captions file %s: every clip is unlabeled (caption '').", captions_path)
    missing = sorted(set(self._captions) - set(files))
    if missing:
      logger.warning("Captions file %s names %d file(s) not in %s: %s", captions_path,
                     len(missing), self._folder, ", ".join(missing[:10]))
    fraction = cfg.validation_fraction if len(files) >= 2 else 0.0  # a lone file trains
    assign = {f: split_of(f, fraction) for f in files}
    if fraction > 0:  # never leave a split empty
      by_hash = sorted(files, key=_hash01)
      if "validation" not in assign.values():
        assign[by_hash[0]] = "validation"
      if "train" not in assign.values():
        assign[by_hash[-1]] = "train"
    splits = {s: [f for f in files if assign[f] == s] for s in ("train", "validation")}
    splits = {s: v for s, v in splits.items() if v}
    self._files = splits
    self._report = {"folder": self._folder, "files": len(files),
                    "captioned_files": sum(1 for f in files if self._captions.get(f)),
                    "captions_missing_files": missing, "unreadable": [], "too_short": [],
                    "decode_errors": [], "examples": {s: 0 for s in splits}}
    return splits

  def split_sizes(self) -> Mapping[str, int]:
    """Number of source FILES per split (the split names are what matters)."""
    return {s: len(v) for s, v in self._scan().items()}

  @abc.abstractmethod
  def examples_of_file(self, path: str) -> Iterator[tuple[int, np.ndarray]]:
    """(start_frame, uint8 [T, H, W, 3]) per example of one file; VideoReadError if bad."""

  def generate(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    files = self._scan()[split]
    report = self._report
    meta = self.info.metadata
    meta.update(folder=self._folder, config=self._config_record(), build_report=report)
    index = 0
    for rel in files:
      n = 0
      try:
        for start, video in self.examples_of_file(os.path.join(self._folder, rel)):
          yield index, {"video": video, "caption": self._captions.get(rel, ""), "index": index,
                        "file": rel, "start_frame": start}
          index += 1
          n += 1
      except VideoReadError as e:
        if n == 0:
          logger.warning("Skipping unreadable file %s: %s", rel, e)
          report["unreadable"].append(rel)
        else:
          logger.warning("Kept the first %d clips of %s; decoding then failed: %s", n, rel, e)
          report["decode_errors"].append(rel)
        continue
      if n == 0:
        logger.warning("Skipping %s: shorter than one clip.", rel)
        report["too_short"].append(rel)
    report["examples"][split] = index
    report.update(skipped_unreadable=len(report["unreadable"]),
                  skipped_too_short=len(report["too_short"]),
                  truncated=len(report["decode_errors"]))
    if index == 0:  # tfds cannot write an empty split: say why instead of its assertion
      raise ValueError(f"Split {split!r} of {self._folder!r} has no usable examples: its files "
                       f"{files} were all skipped (unreadable: {report['unreadable']}, shorter "
                       f"than one clip: {report['too_short']}). Fix or add files, or change "
                       "the config (fewer frames, lower fps, another validation_fraction).")


class VideoFolder(_FolderBuilder):
  """A user's folder of videos with captions, cut into fixed-length clips."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [VideoFolderConfig(name="default")]
  SUFFIXES = VIDEO_SUFFIXES

  def frame_shape(self) -> tuple[int, int, int]:
    cfg = self.builder_config
    return cfg.num_frames, cfg.height, cfg.width

  def examples_of_file(self, path: str) -> Iterator[tuple[int, np.ndarray]]:
    """Streams one video's clips, holding only frames of clips not yet complete.

    Args:
      path: the video file.

    Returns:
      Iterator of (start_frame, clip uint8 [T, H, W, 3]).
    """
    cfg = self.builder_config
    fps, frames = iter_frames(path)
    first = clip_frame_indices(fps, cfg, 0)
    offsets = first - first[0]  # [T], source offsets from a clip's start
    offset_set = set(offsets.tolist())
    starts: list[int] = []  # starts[c] of clips 0.. (computed lazily)

    def start_of(c: int) -> int:
      while len(starts) <= c:
        starts.append(int(clip_frame_indices(fps, cfg, len(starts))[0]))
      return starts[c]

    buffer: dict[int, np.ndarray] = {}  # source index -> [H, W, 3] resized
    c = 0  # first incomplete clip
    for i, frame in enumerate(frames):
      cc = c
      while start_of(cc) <= i:
        if i - start_of(cc) in offset_set:
          buffer[i] = center_crop_resize(frame, cfg.height, cfg.width)
          break
        cc += 1
      while start_of(c) + offsets[-1] <= i:  # clip c is complete
        yield start_of(c), np.stack([buffer[start_of(c) + o] for o in offsets])  # [T, H, W, 3]
        c += 1
        for j in [j for j in buffer if j < start_of(c)]:
          del buffer[j]


class ImageFolder(_FolderBuilder):
  """A user's folder of images with captions, as 1-frame videos (T=1)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [ImageFolderConfig(name="default")]
  SUFFIXES = IMAGE_SUFFIXES

  def frame_shape(self) -> tuple[int, int, int]:
    return 1, self.builder_config.height, self.builder_config.width

  def examples_of_file(self, path: str) -> Iterator[tuple[int, np.ndarray]]:
    """One example: (0, uint8 [1, H, W, 3]); VideoReadError if the image is unreadable."""
    from PIL import Image, ImageOps

    try:
      with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):  # transparent pixels become white
          im = im.convert("RGBA")
          bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
          im = Image.alpha_composite(bg, im)
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, ...
      raise VideoReadError(f"Cannot read image {path!r}: {type(e).__name__}: {e}") from e
    cfg = self.builder_config
    yield 0, center_crop_resize(rgb, cfg.height, cfg.width)[None]  # [1, H, W, 3]


def frames_as_images(example: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Splits a video example into single-frame (image) examples, for joint training.

  The results have the same keys as the input (and as `ImageFolder` examples), with
  `video` uint8 [1, H, W, 3]; other fields are copied. With grain, pick frames in a
  `.map` (e.g. `frames_as_images(ex)[k]` for a random k) or flatten a batch instead:
  `video[:, t:t+1]` of a batch [B, T, H, W, 3] is a batch of images [B, 1, H, W, 3].

  Args:
    example: a dict with `video` [T, H, W, 3] (as from `data_source`).

  Returns:
    T dicts, frame t's `video` being `example["video"][t:t+1]`.
  """
  video = np.asarray(example["video"])
  if video.ndim != 4:
    raise ValueError(f"frames_as_images expects one example's video [T, H, W, 3], got shape "
                     f"{video.shape}; for a batch [B, T, H, W, 3] slice video[:, t:t+1].")
  return [{**example, "video": video[t:t + 1]} for t in range(video.shape[0])]
