r"""Fits a frame field onto a trained stage, the rest of it frozen (videojax/train/field.py).

  python -m experiments.fit_field --weights videojax/assets/demo/base \
      --out runs/base_field --examples 4096 --steps 8000

Reads an exported stage (or a training workdir's EMA weights), adds
`model.frame_conditioning` / `model.frame_field` (zero at first: the same function; a
stage that has them keeps and refits them),
runs the frozen stage once over `--examples` training clips of its own dataset view at
noise levels drawn as `--floor_fraction` at the schedule's lowest log-SNR (where
sampling starts) and the rest uniform in [`--logsnr_low`, `--logsnr_high`], fits the
field on those outputs, and writes an export to `--out` (never over an existing one).
"""

import time

from absl import app, flags, logging
import jax
import numpy as np

_WEIGHTS = flags.DEFINE_string("weights", None, "Exported stage or training workdir.")
_OUT = flags.DEFINE_string("out", None, "Export directory to write.")
_EXAMPLES = flags.DEFINE_integer("examples", 4096, "Cached (clip, noise) examples.")
_STEPS = flags.DEFINE_integer("steps", 8000, "Adam steps on the cached examples.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Examples per step.")
_LR = flags.DEFINE_float("learning_rate", 3e-3, "Adam learning rate.")
_FLOOR = flags.DEFINE_float("floor_fraction", 0.25,
                            "Share of examples at the schedule's lowest log-SNR.")
_LOW = flags.DEFINE_float("logsnr_low", -8.0, "The other examples' log-SNR range: low end.")
_HIGH = flags.DEFINE_float("logsnr_high", 0.0, "... and high end.")
_SEED = flags.DEFINE_integer("seed", 0, "Clips, noise, field initialisation, batches.")
_DTYPE = flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "Storage dtype.")
flags.mark_flags_as_required(["weights", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from videojax.cascade import weights
  from videojax.nn import denoisers
  from videojax.runtime import enable_compilation_cache, quiet_library_logs
  from videojax.train import field, trainer
  from videojax.data import pipeline

  quiet_library_logs()

  weights.refuse_existing(_OUT.value)  # before any compute
  enable_compilation_cache()
  params, config = weights.load(_WEIGHTS.value)
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  params, config = field.with_field(params, config, seed=_SEED.value)
  model = denoisers.build(config.model)
  logsnr = field.draw_logsnr(np.random.default_rng(_SEED.value), _EXAMPLES.value,
                             _LOW.value, _HIGH.value, _FLOOR.value,
                             float(config.diffusion.logsnr_min))
  batches = pipeline.make_iterator(trainer.stage_datasets(config, batch_size=64)(
      "train", _SEED.value))
  t0 = time.time()
  cache = field.cache_examples(model, params, config, batches, _EXAMPLES.value, logsnr,
                               seed=_SEED.value)
  logging.info("cached %d examples in %.0f s", _EXAMPLES.value, time.time() - t0)
  t0 = time.time()
  params = field.fit(model, params, cache, steps=_STEPS.value, batch_size=_BATCH.value,
                     learning_rate=_LR.value, seed=_SEED.value, log_every=500,
                     log=lambda i, loss: logging.info("step %d loss %.5f", i, loss))
  logging.info("fitted %d steps in %.0f s", _STEPS.value, time.time() - t0)
  print(weights.save(_OUT.value, params, config, dtype=_DTYPE.value))


if __name__ == "__main__":
  app.run(main)
