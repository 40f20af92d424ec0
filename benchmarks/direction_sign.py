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
object is decided (log-SNR about -4 to 0). The demo base of sessions 5-6 scored sign
1.000 +- 0.004 at every level and axis up to 2.84: it learned the axis, not the sign.

`--weights` takes an export or a training workdir (`--key params` reads a workdir's
raw parameters instead of its EMA).
"""

from __future__ import annotations

import argparse
import re

import jax
import jax.numpy as jnp
import numpy as np

from videojax import diffusion
from videojax.cascade import weights
from videojax.data.pipeline import downsample, to_float
from videojax.eval.cascade_eval import moving_shapes_clips
from videojax.nn import text as text_lib
from videojax.nn import unet3d

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
  model = unet3d.from_config(config.model)
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
    pred = model.apply(params, z, ls, text=text, text_mask=mask)
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--weights", default="videojax/assets/demo/base")
  parser.add_argument("--key", default="ema_params", help="workdirs: ema_params or params")
  parser.add_argument("--clips", type=int, default=48)
  parser.add_argument("--logsnrs", default="-6,-4,-2,0,2")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="", help="also write the table to this markdown file")
  args = parser.parse_args()
  params, config = weights.load(args.weights, key=args.key)
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
