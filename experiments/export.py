r"""Exports a training run's EMA weights (and config) for sampling and shipping.

  python -m experiments.export --workdir /tmp/runs/base --out videojax/assets/demo/base

Writes OUT/params.msgpack (float16 by default) and OUT/config.json; refuses to write
over an existing export.
"""

from absl import app, flags

from videojax.runtime import quiet_library_logs

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (holding checkpoints/).")
_OUT = flags.DEFINE_string("out", None, "Export directory.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_DTYPE = flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "Storage dtype.")
_KEY = flags.DEFINE_enum("key", "ema_params", ["ema_params", "params"],
                         "The EMA parameters or the raw ones.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  from videojax.cascade import weights

  print(weights.export(_WORKDIR.value, _OUT.value, step=_STEP.value, dtype=_DTYPE.value,
                       key=_KEY.value))


if __name__ == "__main__":
  app.run(main)
