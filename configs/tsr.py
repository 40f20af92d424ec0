"""Temporal super-resolution stage: video -> video with `temporal_factor` x the frames.

  python -m experiments.train --config configs/tsr.py:tiny --workdir /tmp/tsr_tiny

Trained on clips whose every `temporal_factor`-th frame is given (the conditioning
video and its frame mask, `nn.conditioning.place_frames`); the loss counts the
frames that are not given. Conditioning augmentation noises the given frames.

Variants:
  tiny          CPU tests: 4 -> 8 frames of 8x8 (moving_shapes 'tiny').
  demo          the demo cascade's TSR: 8 -> 16 frames of 16x16, 4 -> 8 fps; residual
                (refines linear frame blending), sampled without thresholding.
  imagen_video  Imagen Video's TSR1: 16 -> 32 frames of 24x40, 3 -> 6 fps (~1.7B).
  imagen_video2, imagen_video3
                its TSR2 (32 -> 64 frames of 192x320, 12 fps) and TSR3 (64 -> 128, 24 fps).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant("tsr", arg, ("imagen_video2", "imagen_video3"))
  arch = {"tiny": "tiny_tsr", "demo": "demo_tsr", "imagen_video": "iv_tsr1",
          "imagen_video2": "iv_tsr2", "imagen_video3": "iv_tsr3"}[variant]
  data = {
      "tiny": dict(config="tiny"),
      "demo": dict(fps=8.0),
      "imagen_video": dict(fps=6.0),
      "imagen_video2": dict(fps=12.0),
      "imagen_video3": dict(fps=24.0),
  }[variant]
  c = common.stage_config(variant, arch=arch, data=dict(kind="tsr", temporal_factor=2, **data))
  c.train.aug_max_level = 0.2  # noise the given frames up to this level (Imagen Video)
  c.sample.aug_level = 0.1  # and sample with this level
  if variant == "demo":
    c.train.num_steps = 2000  # conditioned on a video, it learns faster than the base
    c.diffusion.residual = True  # diffuse video - frame blending of the given frames
    c.sample.threshold = "none"  # dynamic thresholding greys out saturated backgrounds
  return c
