r"""Scale planner: memory, FLOPs, collectives and step time of a stage on a mesh.

  python -m experiments.plan --config configs/base.py:imagen_video \
      --mesh data=8,fsdp=8,tensor=1 --devices 64 --batch 64 [--mfu 0.45]
  python -m experiments.plan --cascade configs/cascades/imagen_video.py --stages base,ssr3 \
      --mesh data=8,fsdp=8 --mesh data=4,fsdp=16 --devices 64 --batch 64 --out plan.md

Compiles the stage's train step and one sampler call ahead of time on `--devices` fake
CPU devices, from abstract shapes only (nothing the size of the model is allocated),
and prints videojax.train.plan's report and table. The fake devices must exist
before JAX starts its backend, so --devices is read from the command line before
anything imports JAX.
"""

import os
import sys


def _early_devices(argv: list[str]) -> int | None:
  """The value of --devices in `argv` ('--devices=N' or '--devices N'), if any."""
  for i, arg in enumerate(argv):
    if arg.startswith("--devices="):
      value = arg.split("=", 1)[1]
    elif arg == "--devices" and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    return int(value) if value.isdigit() else None
  return None


if __name__ == "__main__":  # before JAX is imported: fake CPU devices
  _n = _early_devices(sys.argv[1:])
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if _n:
    _flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
              if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(_flags + [
        f"--xla_force_host_platform_device_count={_n}"])

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config file.",
                                          lock_config=True)
_CASCADE = flags.DEFINE_string("cascade", None, "Instead of --config: a cascade config; "
                               "plans its stages with their sampling settings.")
_STAGES = flags.DEFINE_list("stages", None, "With --cascade: stages to plan (default all).")
_MESH = flags.DEFINE_multi_string("mesh", None, "Mesh 'data=8,fsdp=8,tensor=1'; repeat "
                                  "the flag to plan several meshes.")
_DEVICES = flags.DEFINE_integer("devices", None, "Devices to plan for (fake CPU devices).")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch (default: the config's).")
_MFU = flags.DEFINE_float("mfu", 0.45, "Model FLOPs utilisation for the step times.")
_MEMORY = flags.DEFINE_float("memory_gib", 16.0, "Per-device memory the step must fit in.")
_ACCEL = flags.DEFINE_list("accelerators", ["tpu_v5p", "h100"],
                           "Accelerators of the table's step-time columns.")
_DTYPE = flags.DEFINE_string("dtype", "", "Override model.dtype ('bfloat16'); '' keeps it.")
_SAMPLER = flags.DEFINE_bool("sampler", True, "Also plan one sampler call.")
_COMPILE = flags.DEFINE_bool("compile", True, "Compile (memory, collectives); --nocompile "
                             "only lowers: parameters, state bytes, FLOPs, step times.")
_OUT = flags.DEFINE_string("out", None, "Append the command, table and reports (markdown).")
flags.mark_flags_as_required(["mesh", "devices"])


def _targets():
  """[(name, config, SampleSettings or None, frame_chunk)] from --config or --cascade."""
  from videojax.cascade import stages as stages_lib

  if (_CONFIG.value is None) == (_CASCADE.value is None):
    raise app.UsageError("Pass exactly one of --config and --cascade.")
  if _CONFIG.value is not None:
    return [("", _CONFIG.value, None, 0)]
  stages = stages_lib.stages_from_config(stages_lib.load_config_file(_CASCADE.value))
  if _STAGES.value:
    by_name = {s.name: s for s in stages}
    missing = set(_STAGES.value) - set(by_name)
    if missing:
      raise app.UsageError(f"Unknown stages {sorted(missing)}; the cascade has "
                           f"{sorted(by_name)}.")
    stages = [by_name[n] for n in _STAGES.value]
  return [(s.name, s.config, s.sample, s.frame_chunk) for s in stages]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from videojax.train import plan as plan_lib
  from videojax.runtime import enable_compilation_cache, quiet_library_logs

  quiet_library_logs()

  meshes = [plan_lib.parse_mesh(m) for m in _MESH.value]
  for m in meshes:  # every mesh is checked before anything compiles
    plan_lib.check_mesh(m, _DEVICES.value)
  targets = _targets()
  enable_compilation_cache()
  results, skipped = [], []
  for name, config, sample, chunk in targets:
    if _DTYPE.value:
      config = config.copy_and_resolve_references()  # a locked config takes new values
      config.model.dtype = _DTYPE.value
    for mesh in meshes:
      try:
        result = plan_lib.plan(config, mesh, _DEVICES.value, _BATCH.value, sample=sample,
                               frame_chunk=chunk, compile_sampler=_SAMPLER.value,
                               compile=_COMPILE.value, name=name)
      except ValueError as e:  # this stage cannot run on this mesh: say why, plan the rest
        skipped.append(f"{name or 'stage'} on {plan_lib.mesh_str(mesh)}: {e}")
        print(skipped[-1], flush=True)
        continue
      results.append(result)
      print(plan_lib.format_report(result, _MFU.value, _MEMORY.value), flush=True)
  table = plan_lib.format_table(results, _MFU.value, _MEMORY.value, tuple(_ACCEL.value))
  print(table)
  if _OUT.value:
    with open(_OUT.value, "a") as f:
      f.write("```\npython -m experiments.plan " + " ".join(sys.argv[1:]) + "\n```\n\n"
              + table + "\n\n```\n"
              + "\n".join([plan_lib.format_report(r, _MFU.value, _MEMORY.value)
                           for r in results] + [f"not planned: {s}" for s in skipped])
              + "\n```\n\n")


if __name__ == "__main__":
  app.run(main)
