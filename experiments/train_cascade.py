r"""Trains every stage of a cascade, one after another, with the trainer; then exports.

  python -m experiments.train_cascade --cascade configs/cascades/demo.py --workdir /tmp/runs
  python -m experiments.train_cascade --workdir /tmp/runs --stages tsr,ssr --export

Stage `name` trains in WORKDIR/<name> from its config (resuming if it holds
checkpoints); --export then writes its EMA weights to the cascade's checkpoint path.
The stages are independent (each trains on ground-truth inputs), so they may also run
as separate `experiments.train` processes at the same time (see the README).
"""

import logging
import os

from absl import app, flags
from ml_collections import config_flags

from videojax.runtime import enable_compilation_cache, quiet_library_logs

_CASCADE = config_flags.DEFINE_config_file(
    "cascade", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "cascades", "demo.py"),
    "Cascade config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent of the stages' workdirs.")
_STAGES = flags.DEFINE_list("stages", None, "Stages to train (default: all, in order).")
_STEPS = flags.DEFINE_integer("num_steps", None, "Override every stage's train.num_steps.")
_EXPORT = flags.DEFINE_bool("export", False, "Export each trained stage's EMA weights.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  enable_compilation_cache()
  from videojax.cascade import weights
  from videojax.cascade.stages import stages_from_config
  from videojax.train import trainer

  stages = stages_from_config(_CASCADE.value)  # the chain is valid before any training
  names = _STAGES.value or [s.name for s in stages]
  unknown = set(names) - {s.name for s in stages}
  if unknown:
    raise app.UsageError(f"Unknown stages {sorted(unknown)}; the cascade has "
                         f"{[s.name for s in stages]}.")
  for stage in stages:
    if stage.name not in names:
      continue
    config = stage.config
    if _STEPS.value:
      config.train.num_steps = _STEPS.value
    workdir = os.path.join(_WORKDIR.value, stage.name)
    logging.info("Training stage %s in %s", stage.name, workdir)
    metrics = trainer.train_and_evaluate(config, workdir)
    print(f"stage {stage.name}: {trainer.format_metrics(metrics)}")
    if _EXPORT.value:
      if not stage.checkpoint:
        raise app.UsageError(f"Stage {stage.name!r} has no checkpoint path to export to.")
      print(weights.export(workdir, stage.checkpoint))


if __name__ == "__main__":
  app.run(main)
