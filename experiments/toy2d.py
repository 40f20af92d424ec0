r"""Trains a tiny denoiser on 2-D points and samples it with every sampler.

  python -m experiments.toy2d --config configs/toy2d.py --workdir outputs/toy2d
  python -m experiments.toy2d --config configs/toy2d.py:tiny --config.dataset=spiral

Writes WORKDIR/samples.png and WORKDIR/metrics.json.
"""

import json

from absl import app, flags, logging
from ml_collections import config_flags

from videojax.runtime import enable_compilation_cache, quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toy2d.py",
                                          "Toy config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "outputs/toy2d", "Where results are written.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  enable_compilation_cache()
  from videojax.train import toy  # after the cache is configured

  metrics = toy.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(metrics["samplers"], indent=2))
  print(f"held-out data SWD {metrics['swd_heldout_data']:.3f} (floor), "
        f"Gaussian noise SWD {metrics['swd_gaussian_noise']:.3f} (ceiling)")
  print(f"wrote {metrics['figure']}")
  logging.info("done")


if __name__ == "__main__":
  app.run(main)
