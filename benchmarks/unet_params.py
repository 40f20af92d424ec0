r"""Parameter counts of every U-Net config, from abstract shapes (nothing allocated).

  python -m benchmarks.unet_params [--out benchmarks/results/unet_params.md]
"""

import argparse
import time

import jax

from configs import unet3d as unet_configs
from videojax.nn import denoisers
from videojax.nn.stage import StageNetwork

# ssr variants: output size / conditioning size of the stage each serves (configs/ssr.py).
# The count does not depend on it: the conditioning reaches the U-Net on the output grid.
SSR_FACTORS = {"tiny_ssr": 2, "demo_ssr": 4, "iv_ssr1": 2, "iv_ssr2": 4, "iv_ssr3": 4}


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
    network = StageNetwork(denoisers.build(cfg.model), cfg.kind,
                           SSR_FACTORS.get(name, 4) if cfg.kind == "ssr" else 1)
    n = network.param_count((1, t, h, w, c), cfg.text_len)
    paper = cfg.paper_params
    rows.append(f"| {name} | {t} x {h} x {w} | {n / 1e6:,.1f}M | "
                + (f"{paper / 1e6:,.0f}M | {n / paper:.2f} |" if paper else "- | - |"))
    print(rows[-1], f"({time.time() - start:.1f} s)", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      f.write(f"# U-Net parameter counts (jax {jax.__version__})\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
