"""A tiny cascade for tests and dry runs: 4 frames 8x8 -> 8 frames 8x8 -> 8 frames 16x16.

  python -m experiments.sample --cascade configs/cascades/tiny.py --prompt "..." --out x.gif

No weights: every stage is randomly initialised (noise in, noise-like video out), so it
exercises the chain, the CLI and the API in seconds.
"""

import ml_collections

from videojax.cascade.stages import stage_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.text = ml_collections.ConfigDict()
  c.text.encoder = "minilm"  # the frozen encoder of the tiny stage configs
  c.text.path = ""  # ('' for minilm: the installed wheel)
  c.text.max_len = 16  # tokens per prompt
  c.order = ("base", "tsr", "ssr")  # stages, first to last
  c.stages = ml_collections.ConfigDict()
  c.stages.base = stage_config("configs/base.py:tiny", (4, 8, 8, 4.0), "", num_steps=4)
  c.stages.tsr = stage_config("configs/tsr.py:tiny", (8, 8, 8, 8.0), "", num_steps=2,
                              guidance_scale=1.0, aug_level=0.1)
  c.stages.ssr = stage_config("configs/ssr.py:tiny", (8, 16, 16, 8.0), "", num_steps=2,
                              guidance_scale=1.0, aug_level=0.1)
  c.stages.ssr.frame_chunk = 4  # exercises chunked sampling (no temporal attention)
  return c
