"""Frame interpolation (Make-A-Video): fill in the frames between given key frames.

  python -m experiments.train --config configs/interpolation.py:tiny --workdir /tmp/interp

A temporal super-resolution stage with a larger factor: every `temporal_factor`-th
frame is given (masked frame interpolation, the mask as an extra input channel), the
frames between are generated. Make-A-Video fine-tunes its spatiotemporal decoder this
way to raise the frame rate; here the same U-Net with 'tsr' conditioning does it.

Variants:
  tiny          CPU tests: 2 -> 8 frames of 8x8 (factor 4).
  demo          4 -> 16 frames of 16x16 (factor 4), 2 -> 8 fps.
  imagen_video  the TSR1 architecture at factor 4: 8 -> 32 frames of 24x40.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant("interpolation", arg)
  arch = {"tiny": "tiny_tsr", "demo": "demo_tsr", "imagen_video": "iv_tsr1"}[variant]
  data = {
      "tiny": dict(config="tiny"),
      "demo": dict(fps=8.0),
      "imagen_video": dict(fps=12.0),
  }[variant]
  c = common.stage_config(variant, arch=arch,
                          data=dict(kind="tsr", temporal_factor=4, **data))
  c.train.aug_max_level = 0.2  # noise the key frames up to this level
  c.sample.aug_level = 0.1  # and sample with this level
  return c
