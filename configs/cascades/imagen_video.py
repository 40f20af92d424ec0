"""Imagen Video's 7-stage cascade (Ho et al. 2022), as data: architectures and sizes.

base 16x24x40 @ 3 fps -> TSR1 32 frames @ 6 -> SSR1 48x80 -> SSR2 192x320 -> TSR2 64
frames @ 12 -> TSR3 128 frames @ 24 -> SSR3 768x1280 (128 frames 1280x768 at 24 fps).
No weights ship with it (checkpoint '' everywhere): train each stage with its config,
then point `stages.<name>.checkpoint` at the workdir. Sampling settings follow the
paper's recipe: v-prediction, classifier-free guidance with dynamic thresholding on
the first stages, conditioning augmentation on the SR stages, fewer steps later on.
"""

import ml_collections

from videojax.cascade.stages import stage_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.text = ml_collections.ConfigDict()
  c.text.encoder = "t5"  # T5-XXL encoder, frozen
  c.text.path = ""  # a local T5 v1.1 XXL directory (Hugging Face layout)
  c.text.max_len = 128  # tokens per prompt
  c.order = ("base", "tsr1", "ssr1", "ssr2", "tsr2", "tsr3", "ssr3")  # first to last
  c.stages = ml_collections.ConfigDict()
  c.stages.base = stage_config("configs/base.py:imagen_video", (16, 24, 40, 3.0), "",
                               num_steps=256, guidance_scale=8.0)
  c.stages.tsr1 = stage_config("configs/tsr.py:imagen_video", (32, 24, 40, 6.0), "",
                               num_steps=128, guidance_scale=5.0, aug_level=0.1)
  c.stages.ssr1 = stage_config("configs/ssr.py:imagen_video", (32, 48, 80, 6.0), "",
                               num_steps=128, guidance_scale=5.0, aug_level=0.1)
  c.stages.ssr2 = stage_config("configs/ssr.py:imagen_video2", (32, 192, 320, 6.0), "",
                               num_steps=64, guidance_scale=2.0, threshold="static", aug_level=0.1)
  c.stages.tsr2 = stage_config("configs/tsr.py:imagen_video2", (64, 192, 320, 12.0), "",
                               num_steps=64, guidance_scale=2.0, threshold="static", aug_level=0.1)
  c.stages.tsr3 = stage_config("configs/tsr.py:imagen_video3", (128, 192, 320, 24.0), "",
                               num_steps=32, guidance_scale=1.0, threshold="static", aug_level=0.1)
  c.stages.ssr3 = stage_config("configs/ssr.py:imagen_video3", (128, 768, 1280, 24.0), "",
                               num_steps=32, guidance_scale=1.0, threshold="static", aug_level=0.1)
  c.stages.ssr3.frame_chunk = 8  # fully convolutional in time: 8 frames at a time
  return c
