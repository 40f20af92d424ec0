"""Base stage: text -> low-resolution, low-frame-rate video.

  python -m experiments.train --config configs/base.py:tiny --workdir /tmp/base_tiny

Variants:
  tiny          CPU tests: 4 frames 8x8 at 4 fps of moving_shapes 'tiny' (8 frames
                16x16 at 8 fps), a 0.3M U-Net.
  demo          the demo cascade's base: 8 frames 16x16 at 4 fps from moving_shapes
                'base' (16 frames 32x32 at 8 fps).
  imagen_video  Imagen Video's base: 16 frames 24x40 at 3 fps, T5-XXL text, ~5.6B
                parameters; point data.folder at your videos (a video_folder dataset).
  tiny_flow     tiny, trained by flow matching (velocity, logit-normal times) and
                sampled with Euler steps.
  tiny_latent   tiny in a latent space: the exactly invertible 2x2 space-to-depth
                autoencoder ('patchify'; 12 channels at 4x4), no thresholding.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.check_variant("base", arg, ("tiny_flow", "tiny_latent"))
  if variant == "tiny_latent":
    c = get_config("tiny")
    c.autoencoder.update(name="patchify", spatial_factor=2, channels=3)
    c.model.in_channels = c.model.out_channels = 12  # the latents' channels
    c.sample.threshold = "none"  # thresholding acts on pixels, not latents
    return c
  if variant == "tiny_flow":
    c = get_config("tiny")
    c.diffusion.formulation = "flow"  # velocity of the straight path from data to noise
    c.sample.sampler = "euler"  # 'euler' or 'heun'
    return c
  arch = {"tiny": "tiny", "demo": "demo_base", "imagen_video": "iv_base"}[variant]
  data = {
      "tiny": dict(config="tiny", frames=4, height=8, width=8, frame_stride=2, fps=4.0),
      "demo": dict(frame_stride=2, fps=4.0),
      "imagen_video": dict(fps=3.0),
  }[variant]
  return common.stage_config(variant, arch=arch, data=dict(kind="base", **data))
