r"""Trains one stage of a cascade.

  python -m experiments.train --config configs/base.py:tiny --workdir /tmp/base_tiny
  python -m experiments.train --config configs/base.py:demo --workdir W --config.train.num_steps=5000

Resumes from WORKDIR/checkpoints when it holds any. Multi-host launches (TPU pods, GPU
clusters) call jax.distributed.initialize() first, from the launch environment.

It logs the parameter overview, one line per logging step (loss, speed, ETA) and one
per checkpoint saved, and prints the final metrics; --verbosity=1 adds the libraries'
INFO lines (Orbax's save steps, JAX's platform probing).
"""

import os

from absl import app, flags
from ml_collections import config_flags

from videojax.runtime import enable_compilation_cache, quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and samples go here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  import jax

  if any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS",
                                   "TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID")):
    jax.distributed.initialize()
  enable_compilation_cache()
  from videojax.train import trainer

  metrics = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(trainer.format_metrics(metrics))


if __name__ == "__main__":
  app.run(main)
