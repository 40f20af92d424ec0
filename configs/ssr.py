"""Spatial super-resolution stage: video -> video with `spatial_factor` x the size.

  python -m experiments.train --config configs/ssr.py:tiny --workdir /tmp/ssr_tiny

Trained on (random crops of) high-resolution clips, conditioned on their box-filter
downsampled copy (`data.pipeline.downsample`, the same function the cascade uses),
noised by conditioning augmentation. The U-Net is convolutional in space, so a model
trained on crops samples whole frames.

Variants:
  tiny          CPU tests: 8 frames 8x8 -> 16x16 (moving_shapes 'tiny').
  demo          the demo cascade's SSR: 16 frames 16x16 -> 64x64 at 8 fps, trained on
                32x32 crops of moving_shapes 'hires'; residual (refines bicubic
                upsampling), sampled without thresholding.
  imagen_video  Imagen Video's SSR1: 32 frames 24x40 -> 48x80 at 6 fps (~1.4B).
  imagen_video2, imagen_video3
                its SSR2 (32 frames 48x80 -> 192x320, 6 fps) and SSR3 (128 frames
                192x320 -> 768x1280, 24 fps; sampled a few frames at a time).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant("ssr", arg, ("imagen_video2", "imagen_video3"))
  arch = {"tiny": "tiny_ssr", "demo": "demo_ssr", "imagen_video": "iv_ssr1",
          "imagen_video2": "iv_ssr2", "imagen_video3": "iv_ssr3"}[variant]
  data = {
      "tiny": dict(config="tiny", frames=8, spatial_factor=2),
      "demo": dict(config="hires", spatial_factor=4, crop=32, fps=8.0),
      "imagen_video": dict(spatial_factor=2, fps=6.0),
      "imagen_video2": dict(spatial_factor=4, crop=192, fps=6.0),
      "imagen_video3": dict(spatial_factor=4, crop=320, fps=24.0),
  }[variant]
  c = common.stage_config(variant, arch=arch, data=dict(kind="ssr", **data))
  c.train.aug_max_level = 0.3  # noise the low-resolution input up to this level
  c.sample.aug_level = 0.1  # and sample with this level
  if variant == "demo":  # 64x64 targets are the costliest on CPU: small batches, more steps
    c.data.batch_size = 4  # global batch size
    c.train.num_steps = 1500  # optimizer steps
    c.train.log_every = 50  # steps between scalar logs
    c.optim.warmup_steps = 50  # linear warmup
    c.diffusion.residual = True  # diffuse video - bicubic upsampling of the input
    c.sample.threshold = "none"  # dynamic thresholding greys out saturated backgrounds
  return c
