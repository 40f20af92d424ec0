r"""Model FLOPs utilisation of a stage's train step on the local accelerator.

  python -m benchmarks.mfu --config configs/base.py:demo --config.model.dtype=bfloat16 \
      --config.model.base_channels=256 --config.data.batch_size=32 \
      [--config.model.attention_impl=cudnn] --accelerator h100 [--steps 10] [--repeats 5] \
      [--out benchmarks/results/mfu_h100.md]

Builds the stage's train step exactly as the trainer and the planner do
(`videojax.train.setup.train_setup` with the planner's network,
`videojax.train.plan.planned_network`: shardings from the logical axis rules, the state
donated), data-parallel over every local device, on random inputs of the training
batch's shapes, and times it: `--repeats` runs of `--steps` steps each after two
warm-up steps (the first compiles), the median per-step time reported with all runs.

FLOPs per step are counted two ways and both are reported:
  - analytic: 3x the forward pass's matmul FLOPs, counted in its traced program
    (`plan.forward_flops`; the backward pass costs twice the forward),
  - XLA: the compiled step's cost analysis, per device, times the devices.
MFU = analytic FLOPs / (step seconds x devices x peak dense bf16 FLOP/s of
`--accelerator`), the convention of PaLM's MFU: recomputation (remat) is not counted.
On CPU the U-Net runs its attention as chunked loops that XLA's cost analysis counts
once, so the XLA figure undercounts there; on GPU / TPU attention is one dense op.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import linen as nn
from ml_collections import config_flags

from videojax.parallel import sharding
from videojax.runtime import enable_compilation_cache
from videojax.train import plan as plan_lib
from videojax.train.setup import TrainSetup, train_setup

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py:demo",
                                          "Stage config file (overrides with --config.x=y).")
_ACCELERATOR = flags.DEFINE_enum("accelerator", "h100", sorted(plan_lib.ACCELERATORS),
                                 "Peak dense bf16 FLOP/s to divide by.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed run.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs (median reported).")
_OUT = flags.DEFINE_string("out", "", "Markdown report path ('' prints only).")


def random_batch(setup: TrainSetup, seed: int = 0) -> dict[str, jax.Array]:
  """Inputs of the batch's shapes and dtypes, placed with the batch's shardings."""
  rng = np.random.default_rng(seed)
  out = {}
  for k, abstract in setup.batch.items():
    if abstract.dtype == jnp.bool_:
      x = np.zeros(abstract.shape, bool)  # video examples
    elif jnp.issubdtype(abstract.dtype, jnp.integer):
      x = np.ones(abstract.shape, abstract.dtype)  # masks: every token / frame present
    else:
      x = rng.uniform(-1, 1, abstract.shape).astype(abstract.dtype)
    out[k] = jax.device_put(x, abstract.sharding)
  return out


def measure(config, steps: int, repeats: int) -> dict:
  """Compiles and times the train step; FLOPs, seconds and TFLOP/s (no MFU: no peak)."""
  devices = jax.devices()
  mesh = sharding.make_mesh({"data": len(devices)}, devices)
  batch_size = int(config.data.batch_size)
  setup = train_setup(config, mesh, batch_size, network=plan_lib.planned_network(config))
  analytic = plan_lib.analytic_train_flops(setup)
  with nn.logical_axis_rules(setup.rules), jax.set_mesh(mesh):
    start = time.perf_counter()
    compiled = setup.step.lower(setup.abstract_state, setup.batch, setup.key).compile()
    compile_seconds = time.perf_counter() - start
    xla = float(plan_lib.xla_cost(compiled).get("flops", 0.0)) * len(devices)
    state, batch = setup.init_state(), random_batch(setup)
    key = jax.random.PRNGKey(0)
    for _ in range(2):  # warm-up (autotuning, allocation)
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      for _ in range(steps):
        state, metrics = compiled(state, batch, key)
      jax.block_until_ready((state, metrics))
      times.append((time.perf_counter() - start) / steps)
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"Non-finite loss {float(metrics['loss'])}: the timing is of a "
                             "broken step; lower the learning rate or check the config.")
  step = statistics.median(times)
  return {"devices": len(devices), "device_kind": devices[0].device_kind,
          "platform": devices[0].platform, "batch_size": batch_size,
          "video_shape": setup.shapes["video"][0], "dtype": config.model.dtype,
          "remat": config.model.remat,
          "params": setup.param_count,
          "analytic_flops": float(analytic), "xla_flops": xla,
          "compile_seconds": compile_seconds, "step_seconds": step, "all_seconds": times,
          "tflops_per_second": analytic / step / 1e12}


def report(r: dict, accelerator: str, command: str) -> str:
  peak = plan_lib.ACCELERATORS[accelerator]
  mfu = r["tflops_per_second"] * 1e12 / (r["devices"] * peak)
  ratio = r["xla_flops"] / r["analytic_flops"] if r["analytic_flops"] else float("nan")
  return "\n".join([
      "# Train-step MFU", "", "```", command, "```", "",
      (f"jax {jax.__version__} ({r['platform']}), {r['devices']} x {r['device_kind']}, "
      f"{platform.machine()}; {r['params'] / 1e6:.1f}M parameters, batch {r['batch_size']}, "
      f"video {tuple(r['video_shape'][1:])}, compute {r['dtype']}, remat {r['remat']}."), "",
      ("| analytic GFLOP/step | XLA GFLOP/step | XLA / analytic | compile (s) | step (s), "
      "median | achieved TFLOP/s | peak TFLOP/s per device | MFU |"),
      "|---|---|---|---|---|---|---|---|",
      (f"| {r['analytic_flops'] / 1e9:.1f} | {r['xla_flops'] / 1e9:.1f} | {ratio:.3f} | "
      f"{r['compile_seconds']:.1f} | {r['step_seconds']:.4f} | {r['tflops_per_second']:.3f} | "
      f"{peak / 1e12:.0f} ({accelerator}) | {mfu:.1%} |"), "",
      "Runs (s per step): " + ", ".join(f"{t:.4f}" for t in r["all_seconds"]), ""])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _STEPS.value < 1 or _REPEATS.value < 1:
    raise app.UsageError("--steps and --repeats must be at least 1.")
  enable_compilation_cache()
  r = measure(_CONFIG.value, _STEPS.value, _REPEATS.value)
  text = report(r, _ACCELERATOR.value, "python -m benchmarks.mfu " + " ".join(sys.argv[1:]))
  print(text)
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      f.write(text)


if __name__ == "__main__":
  app.run(main)
