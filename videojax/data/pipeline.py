"""The input pipeline: one grain pipeline that serves every stage of the cascade.

source (tfds data source, random access) -> per-process shard -> shuffle(seed) ->
repeat -> per-example stage view (random temporal crop at the stage's frame rate,
spatial resize / crop, [-1, 1] scaling, conditioning inputs, is_image, tokens) ->
batch -> (optionally) global jax.Arrays placed with the mesh's data sharding.

Per-stage views of one example (`StageView`):
  base  video [T, H, W, 3] at the stage's frame rate and size.
  tsr   video at the high frame rate, plus cond_video = the video on every
        `temporal_factor`-th frame (zeros elsewhere) and cond_frames_mask [T]: the
        same layout as `videojax.nn.conditioning.place_frames`.
  ssr   the high-resolution target (optionally a random square crop, as Imagen trains
        its SR stages on crops), plus cond_video = `downsample(target, factor)`, the
        same function the cascade uses to make a low-resolution input.
Randomness is grain's per-example seed derived from (seed, index), so the batches are
a function of (seed, step) and the iterator state (`get_state` / `set_state`) is all
a resumed run needs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Sequence

import cloudpickle
import grain
import numpy as np

if TYPE_CHECKING:  # annotations only: the pipeline itself needs no jax
  from videojax.nn.text import EmbeddingCache
  from videojax.nn.tokenizers import Tokenizer

STAGE_KINDS = ("base", "tsr", "ssr")


def downsample(video, factor: int, xp=np):
  """Box-filter spatial downsampling of [..., H, W, C] by an integer factor.

  Written for any array module (`xp=numpy` here, `jax.numpy` in the cascade) so the
  training pipeline and sampling make the same low-resolution input.
  """
  if factor == 1:
    return video
  *lead, h, w, c = video.shape
  if h % factor or w % factor:
    raise ValueError(f"Cannot downsample {h}x{w} by {factor}: not divisible.")
  x = xp.reshape(video.astype(xp.float32), (*lead, h // factor, factor, w // factor, factor, c))
  return xp.mean(x, axis=(-4, -2))


def to_float(video_uint8: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return video_uint8.astype(np.float32) / 127.5 - 1.0


@dataclasses.dataclass(frozen=True)
class StageView:
  """What one stage trains on, in terms of its source clips.

  Attributes:
    kind: 'base', 'tsr' or 'ssr'.
    frames, height, width: the stage's output video.
    frame_stride: source frames per output frame (source fps / stage fps).
    temporal_factor: tsr only: output frames per conditioning frame.
    spatial_factor: ssr only: output size / conditioning size.
    crop: ssr only: random square crop of the target (0: the full frame).
  """

  kind: str = "base"
  frames: int = 8
  height: int = 32
  width: int = 32
  frame_stride: int = 1
  temporal_factor: int = 1
  spatial_factor: int = 1
  crop: int = 0

  def __post_init__(self):
    if self.kind not in STAGE_KINDS:
      raise ValueError(f"Unknown stage kind {self.kind!r}; expected one of {STAGE_KINDS}.")
    if self.kind == "tsr" and not 2 <= self.temporal_factor < self.frames:
      raise ValueError(
          f"A tsr view needs 2 <= temporal_factor < frames (every temporal_factor-th frame "
          f"is given, starting with the first); got frames={self.frames}, "
          f"temporal_factor={self.temporal_factor}.")
    size = self.crop or self.height
    if self.kind == "ssr" and (self.spatial_factor < 2 or size % self.spatial_factor or
                               (self.crop or self.width) % self.spatial_factor):
      raise ValueError(f"An ssr view needs spatial_factor >= 2 dividing the target size; got "
                       f"{size}x{self.crop or self.width} and factor {self.spatial_factor}.")

  @property
  def input_frames(self) -> int:
    """Frames of the stage's conditioning video (tsr: the given frames)."""
    return len(range(0, self.frames, self.temporal_factor)) if self.kind == "tsr" else self.frames

  @property
  def source_frames(self) -> int:
    return (self.frames - 1) * self.frame_stride + 1


class ToStageView(grain.transforms.RandomMap):
  """One decoded dataset example -> the training example of a stage."""

  def __init__(self, view: StageView, tokenizer: Tokenizer | None,
               image_fraction: float = 0.0, text_cache: EmbeddingCache | None = None):
    if not 0.0 <= image_fraction <= 1.0:
      raise ValueError(f"image_fraction must be in [0, 1], got {image_fraction}.")
    if tokenizer is not None and text_cache is not None:
      raise ValueError("Pass a tokenizer (the encoder runs in training) or a text_cache "
                       "(precomputed embeddings), not both.")
    self.view, self.tokenizer, self.image_fraction = view, tokenizer, image_fraction
    self.text_cache = text_cache

  def random_map(self, ex: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    v = self.view
    video = ex["video"]  # uint8 [Ts, Hs, Ws, 3]
    ts, hs, ws = video.shape[:3]
    if ts < v.source_frames:
      raise ValueError(
          f"Example {ex.get('index')} has {ts} frames but the stage needs {v.source_frames} "
          f"({v.frames} frames at stride {v.frame_stride}); build clips of at least that "
          "many frames.")
    is_image = bool(rng.random() < self.image_fraction)
    if is_image:  # independent frames: random times of the clip, in random order
      clip = video[rng.choice(ts, size=v.frames, replace=ts < v.frames)]
    else:  # random temporal crop at the stage's frame rate
      start = int(rng.integers(0, ts - v.source_frames + 1))
      clip = video[start:start + v.source_frames:v.frame_stride]
    if hs % v.height or ws % v.width or hs // v.height != ws // v.width:
      raise ValueError(f"Source frames {hs}x{ws} must be an integer multiple of the stage's "
                       f"{v.height}x{v.width}; build the dataset at a matching size.")
    x = downsample(to_float(clip), hs // v.height)  # [T, H, W, 3] in [-1, 1]
    out: dict[str, Any] = {"is_image": np.bool_(is_image)}
    if v.kind == "ssr":
      if v.crop:
        y0 = int(rng.integers(0, v.height - v.crop + 1))
        x0 = int(rng.integers(0, v.width - v.crop + 1))
        x = x[:, y0:y0 + v.crop, x0:x0 + v.crop]
      out["cond_video"] = downsample(x, v.spatial_factor)
    elif v.kind == "tsr":
      mask = np.zeros(v.frames, np.float32)
      mask[::v.temporal_factor] = 1.0
      out["cond_video"] = x * mask[:, None, None, None]
      out["cond_frames_mask"] = mask
    out["video"] = x.astype(np.float32)
    caption = ex.get("caption", b"")
    caption = caption.decode() if isinstance(caption, bytes) else str(caption)
    if self.tokenizer is not None:
      out["text_tokens"], out["text_mask"] = self.tokenizer.encode(caption)
    elif self.text_cache is not None:
      out["text_embeddings"], out["text_mask"] = self.text_cache.lookup(caption)
    return out


def make_dataset(source: Sequence[dict[str, Any]], view: StageView, *, batch_size: int,
                 seed: int, tokenizer: Tokenizer | None = None,
                 text_cache: EmbeddingCache | None = None,
                 image_fraction: float = 0.0, shuffle: bool = True,
                 num_epochs: int | None = None, process_index: int = 0,
                 process_count: int = 1) -> grain.MapDataset:
  """The batched dataset of one stage, for one process.

  Args:
    source: random-access examples (a tfds data source, or any sequence of dicts
      with 'video' uint8 [T, H, W, 3] and 'caption').
    view: the stage's view.
    batch_size: per-process batch size (global batch / process_count).
    seed: shuffling and per-example randomness.
    tokenizer: turns captions into text_tokens / text_mask (the encoder runs in the
      train step); None for no text.
    text_cache: instead, precomputed text_embeddings / text_mask read by caption.
    image_fraction: probability that an example is a set of independent frames
      (is_image, VDM's joint image-video training).
    shuffle: shuffle the examples (each epoch differently when repeated).
    num_epochs: None repeats forever.
    process_index, process_count: this host's shard of the source
      (jax.process_index() / jax.process_count() on a pod).

  Returns:
    A grain MapDataset of batches (dicts of numpy arrays with a leading batch axis).
  """
  if len(source) == 0:
    raise ValueError("The data source is empty.")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count}).")
  ds = grain.MapDataset.source(source)[process_index::process_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  ds = ds.random_map(ToStageView(view, tokenizer, image_fraction, text_cache), seed=seed)
  return ds.batch(batch_size, drop_remainder=True)


def make_iterator(dataset: grain.MapDataset, state: dict | None = None, workers: int = 0):
  """A checkpointable iterator over the batches: `get_state()` / `set_state()`.

  Args:
    dataset: the batched dataset (`make_dataset`).
    state: an iterator state to resume from (`get_state()` of an earlier iterator).
    workers: processes that make batches ahead of the training loop; 0 makes them in
      this process (grain's iterator and its threads). One process turns about 2,000
      small clips a second into examples, so an accelerator that steps faster than that
      needs workers. The batches and the state do not depend on it: a run may resume
      with another number of workers.
  """
  it = iter(dataset.to_iter_dataset()) if not workers else _WorkerIterator(dataset, workers)
  if state is not None:
    it.set_state(state)
  return it


_WORKER_DATASET = None  # each worker process's copy of the dataset


def _init_worker(pickled: bytes) -> None:
  global _WORKER_DATASET
  _WORKER_DATASET = cloudpickle.loads(pickled)


def _batch(index: int):
  return _WORKER_DATASET[index]


class _WorkerIterator:
  """Batch i of a MapDataset is `dataset[i]` (its randomness derives from the seed and
  the index), so worker processes can make batches i+1, i+2, ... while the loop uses
  batch i. The state is grain's own ({'next_index': i}), so the two iterators resume
  each other."""

  def __init__(self, dataset: grain.MapDataset, workers: int, ahead_per_worker: int = 4):
    import concurrent.futures
    import multiprocessing

    # 'spawn': the training process holds threads (JAX, orbax) that fork would copy.
    self._pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"),
        # cloudpickle: a dataset holds lambdas (grain's batching) that pickle refuses.
        initializer=_init_worker, initargs=(cloudpickle.dumps(dataset),))
    self._ahead, self._next, self._pending = workers * ahead_per_worker, 0, {}

  def __iter__(self):
    return self

  def __next__(self):
    for i in range(self._next, self._next + self._ahead):
      if i not in self._pending:
        self._pending[i] = self._pool.submit(_batch, i)
    batch = self._pending.pop(self._next).result()
    self._next += 1
    return batch

  def get_state(self) -> dict:
    return {"next_index": self._next}

  def set_state(self, state: dict) -> None:
    for f in self._pending.values():
      f.cancel()
    self._pending, self._next = {}, int(state["next_index"])

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)


def to_global(batch: dict[str, np.ndarray], mesh) -> dict[str, Any]:
  """Per-process numpy batch -> global jax.Arrays sharded over the mesh's batch axes."""
  import jax  # the pipeline itself stays numpy-only

  from videojax.parallel.sharding import batch_sharding

  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), v)
          for k, v in batch.items()}
