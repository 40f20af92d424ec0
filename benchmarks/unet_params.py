r"""Parameter counts of every U-Net config, from abstract shapes (nothing allocated).

  python -m benchmarks.unet_params [--out benchmarks/results/unet_params.md]
"""

import argparse
import time

import jax

from configs import unet3d as unet_configs
from videojax.nn.unet3d import UNet3D, count_params


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default=None)
  parser.add_argument("--variants", default=",".join(unet_configs.VARIANTS))
  args = parser.parse_args()
  rows = ["| config | output T x H x W | params | paper | ratio |", "|---|---|---|---|---|"]
  for name in args.variants.split(","):
    cfg = unet_configs.get_config(name)
    t, h, w, c = cfg.input
    start = time.time()
    n = count_params(UNet3D(**cfg.model.to_dict()), (1, t, h, w, c), cfg.text_len)
    paper = cfg.paper_params
    rows.append(f"| {name} | {t} x {h} x {w} | {n / 1e6:,.1f}M | "
                + (f"{paper / 1e6:,.0f}M | {n / paper:.2f} |" if paper else "- | - |"))
    print(rows[-1], f"({time.time() - start:.1f} s)", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      f.write(f"# U-Net parameter counts (jax {jax.__version__})\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
