r"""Does a base stage use the direction word of its caption? Caption-swap x0 errors.

  python -m benchmarks.direction_sign [--weights videojax/assets/demo/base] \
      [--key ema_params] [--clips 48] [--logsnrs=-6,-4,-2,0,2] [--out FILE.md]

On `--clips` ground-truth moving_shapes validation clips (the base stage's view: every
`frame_stride`-th frame, box-downsampled to the stage's size), noised to each fixed
log-SNR with one shared noise draw, the network's x0 prediction is scored (MSE against
the clean clip) with three captions:
  right     the clip's own caption;
  sign      the direction replaced by its opposite (left <-> right, up <-> down);
  axis      the direction replaced by one on the other axis (left -> up, up -> left,
            right -> down, down -> right).
Reported: MSE(sign) / MSE(right) and MSE(axis) / MSE(right) per noise level. A ratio of
1.000 means the prediction does not depend on that difference of the caption at all; a
base that draws the named direction has sign ratios above 1 where the path of the
object is decided (log-SNR about -4 to 0). A base that learned the axis of motion but
not its sign scores sign ratios of 1.000 and axis ratios well above 1
(benchmarks/results/direction_sign.md).

`--weights` takes an export or a training workdir (`--key params` reads a workdir's
raw parameters instead of its EMA).

`--commit N` instead asks *when* sampling decides the direction: N validation prompts
are sampled with the demo cascade's base settings (sampler, steps, guidance and
thresholding, read from videojax/cascade/demo.py), and the guided x0 prediction at
every grid point is compared with the final video: the sign of the object's
displacement along the caption's axis (the centroid of |x - background| from the first
to the last frame) agrees with the final video's (and with the caption's) in what
fraction of the prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from videojax import diffusion
from videojax.cascade import weights
from videojax.cascade.chain import DEFAULT_CASCADE
from videojax.cascade.sampling import SampleSettings
from videojax.cascade.stages import load_config_file
from videojax.data.pipeline import downsample, to_float
from videojax.eval.cascade_eval import moving_shapes_clips, prompts
from videojax.nn import text as text_lib
from videojax.nn.stage import StageNetwork

SIGN = {"left": "right", "right": "left", "up": "down", "down": "up"}
AXIS = {"left": "up", "up": "left", "right": "down", "down": "right"}


def swap_direction(caption: str, table: dict[str, str]) -> str:
  """The caption with its 'moving {direction}' word(s) replaced through `table`."""
  return re.sub(r"moving (\w+)", lambda m: f"moving {table[m.group(1)]}", caption)


def stage_clips(config, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
  """Validation clips as the base stage trains on them: float [-1, 1] [n, T, H, W, 3].

  Rendered at twice the stage's size and box-downsampled, as the demo base's source
  (moving_shapes 'base', 32x32) is; every `frame_stride`-th frame."""
  d = config.data
  stride = int(d.frame_stride)
  clips, captions = moving_shapes_clips("validation", n, int(d.frames) * stride,
                                        int(d.height) * 2, seed=seed)
  return downsample(to_float(clips[:, ::stride]), 2), captions


def caption_swap_ratios(params, config, clips: np.ndarray, captions: list[str],
                        logsnrs: list[float], seed: int = 0) -> dict[str, list[float]]:
  """{'sign': [...], 'axis': [...]}: x0 MSE with the swapped caption / with the right one."""
  network = StageNetwork.from_config(config)
  encoder = text_lib.build_text_encoder(config.text.encoder, path=config.text.path or None,
                                        max_len=int(config.text.max_len))
  variants = {"right": captions, "sign": [swap_direction(c, SIGN) for c in captions],
              "axis": [swap_direction(c, AXIS) for c in captions]}
  texts = {k: encoder.encode_captions(v) for k, v in variants.items()}
  kind = config.diffusion.parameterization

  @jax.jit
  def x0_mse(x, eps, logsnr, text, mask):
    ls = jnp.full((x.shape[0],), logsnr)
    z = diffusion.diffuse(x, eps, ls)
    pred = network.apply(params, z, ls, text=text, text_mask=mask)
    x0 = diffusion.convert(pred, kind, "x0", z, ls)
    return jnp.mean((x0 - x) ** 2, axis=(1, 2, 3, 4))  # [B]

  x = jnp.asarray(clips)
  out = {"sign": [], "axis": []}
  for i, logsnr in enumerate(logsnrs):
    eps = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), i), x.shape)
    mse = {k: float(x0_mse(x, eps, logsnr, *map(jnp.asarray, t)).mean())
           for k, t in texts.items()}
    for k in out:
      out[k].append(mse[k] / mse["right"])
  return out


def signed_motion(videos: np.ndarray, horizontal: np.ndarray) -> np.ndarray:
  """+1 / -1 per video [B, T, H, W, 3]: the sign of the displacement from the first to the
  last frame of the centroid of |x - background| (background: the per-frame median
  colour), along x where `horizontal` [B] is True, else along y (down = +1)."""
  v = np.asarray(videos, np.float32)
  bg = np.median(v.reshape(*v.shape[:2], -1, v.shape[-1]), axis=2)  # [B, T, 3]
  d = np.abs(v - bg[:, :, None, None]).sum(-1)  # [B, T, H, W]
  mass = d.sum((2, 3)) + 1e-6
  cx = (d.sum(2) * np.arange(v.shape[3])).sum(-1) / mass
  cy = (d.sum(3) * np.arange(v.shape[2])).sum(-1) / mass
  return np.where(horizontal, np.sign(cx[:, -1] - cx[:, 0]), np.sign(cy[:, -1] - cy[:, 0]))


def commit_profile(params, config, captions: list[str], settings: SampleSettings,
                   seed: int = 0) -> list[tuple[float, float, float]]:
  """[(log-SNR, agreement with the final sign, agreement with the caption)] per step,
  sampled with a stage's `settings` (sampler, steps, guidance, thresholding)."""
  network = StageNetwork.from_config(config)
  encoder = text_lib.build_text_encoder(config.text.encoder, path=config.text.path or None,
                                        max_len=int(config.text.max_len))
  text, mask = map(jnp.asarray, encoder.encode_captions(captions))
  cond = {"text": text, "text_mask": mask}
  guided = settings.guide(lambda z, ls, **c: network.apply(params, z, ls, **c), text.shape)
  clip = diffusion.make_x0_transform(settings.threshold, settings.percentile)
  clip = clip or (lambda x0: x0)
  num_steps = settings.num_steps
  schedule = diffusion.schedule_from_config(config.diffusion)
  d = config.data
  shape = (len(captions), int(d.frames), int(d.height), int(d.width), 3)
  kind = config.diffusion.parameterization
  noise = jax.random.normal(jax.random.PRNGKey(seed), shape)
  final, traj = jax.jit(lambda n: diffusion.sample(
      guided, n, schedule=schedule, sampler=settings.sampler, num_steps=num_steps,
      parameterization=kind, x0_transform=clip, cond=cond, return_trajectory=True,
      rng=jax.random.PRNGKey(seed + 1)))(noise)
  grid = diffusion.step_grid(schedule, num_steps)
  x0_at = jax.jit(lambda z, ls: clip(diffusion.convert(
      guided(z, jnp.full((z.shape[0],), ls), **cond), kind, "x0", z, ls)))
  words = [re.search(r"moving (\w+)", c).group(1) for c in captions]
  horizontal = np.array([w in ("left", "right") for w in words])
  want = np.array([1.0 if w in ("right", "down") else -1.0 for w in words])
  end = signed_motion(np.asarray(final), horizontal)
  rows = [(float(grid[k]), float(np.mean(s == end)), float(np.mean(s == want)))
          for k in range(num_steps)
          for s in [signed_motion(np.asarray(x0_at(traj[k], grid[k])), horizontal)]]
  return rows + [(float("inf"), 1.0, float(np.mean(end == want)))]


def _demo_base_settings() -> SampleSettings:
  """How the shipped demo cascade samples its base stage."""
  return SampleSettings.from_config(load_config_file(DEFAULT_CASCADE).stages.base.sample)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--weights", default="videojax/assets/demo/base")
  parser.add_argument("--key", default="ema_params", help="workdirs: ema_params or params")
  parser.add_argument("--clips", type=int, default=48)
  parser.add_argument("--logsnrs", default="-6,-4,-2,0,2")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--noisy_guidance", type=float, default=None,
                      help="--commit: the guidance scale below log-SNR --noisy_logsnr")
  parser.add_argument("--noisy_logsnr", type=float, default=-3.0)
  parser.add_argument("--out", default="", help="also write the table to this markdown file")
  parser.add_argument("--commit", type=int, default=0,
                      help="instead: when sampling decides the sign, over this many prompts")
  args = parser.parse_args()
  params, config = weights.load(args.weights, key=args.key)
  if args.commit:
    caps = prompts("validation", args.commit, seed=args.seed)
    settings = dataclasses.replace(_demo_base_settings(),
                                   noisy_guidance_scale=args.noisy_guidance,
                                   noisy_logsnr=args.noisy_logsnr)
    lines = [f"Sign of the guided x0 prediction during DDIM sampling, `{args.weights}` "
             f"({args.key}), {args.commit} validation prompts", "",
             "| log-SNR | agrees with the final video | agrees with the caption |",
             "|---|---|---|"]
    lines += [f"| {ls:.2f} | {a:.2f} | {b:.2f} |" for ls, a, b in
              commit_profile(params, config, caps, settings, args.seed)]
    print("\n".join(lines))
    return
  logsnrs = [float(v) for v in args.logsnrs.split(",")]
  clips, captions = stage_clips(config, args.clips, args.seed)
  ratios = caption_swap_ratios(params, config, clips, captions, logsnrs, args.seed)
  lines = [f"Caption-swap x0 MSE ratios of `{args.weights}` ({args.key}), {args.clips} "
           "validation clips", "",
           "| log-SNR | " + " | ".join(f"{v:g}" for v in logsnrs) + " |",
           "|---|" + "---|" * len(logsnrs)]
  for k, label in (("sign", "opposite direction / right"), ("axis", "other axis / right")):
    lines.append(f"| {label} | " + " | ".join(f"{r:.3f}" for r in ratios[k]) + " |")
  text = "\n".join(lines)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
