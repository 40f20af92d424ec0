r"""One prepared accelerator run: correctness of the GPU paths, then speed.

  benchmarks/gpu/bench.sh                # on the GPU machine (installs carried wheels)
  python -m benchmarks.gpu.bench --dry_run --out /tmp/gpu_dry.md   # CPU, tiny sizes

Parts, in order, each written to the report as soon as it is done (a run stopped by
its time limit keeps what it measured):
  1. environment: device, driver, versions.
  2. attention: every attention layer (spatial, temporal with relative-position bias,
     causal, is_image frames, cross-attention with padding and an example without
     text) and a whole U-Net with random (not zero-initialised) weights, run with
     `attention_impl='cudnn'` and with 'xla' in bfloat16, each against a float32 'xla'
     reference: cuDNN passes if its error is at most twice XLA's bf16 error or 1e-2
     relative (the error of bf16 itself), whichever is larger.
  3. a tiny stage's train step (configs/base.py:tiny, bf16) repeated on one batch: the
     mean loss of the last 10 of 200 steps must fall below 0.75x that of the first 10.
  4. speed against PyTorch: our U-Net's AdamW training step against diffusers'
     UNet3DConditionModel at `benchmarks/vs_diffusers.py` size 3 (parameters and FLOPs
     checked to agree within 10%), bf16, alternating runs, medians; theirs eager with
     scaled-dot-product attention, and under torch.compile when time is left. MFU of
     our step: 3 x the forward's dot + conv FLOPs per second over the chip's dense
     bf16 peak (`--peak_tflops`).
  5. the shipped demo cascade's sampling time per video at batch 1 and 16, prompts
     embedded from the moving_shapes caption cache (`--text_cache`).
`--dry_run` runs every part on CPU at tiny sizes ('xla' stands in for 'cudnn', size 1
for size 3, batch 2 for 16) so the script is tested where no GPU is at hand.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from videojax.nn import attention as attn_lib
from videojax.nn.denoisers import build
from videojax.runtime import enable_compilation_cache

H100_PEAK_TFLOPS = 989.0  # dense bf16, H100 / H200 SXM datasheet


class Report:
  """Markdown sections, rewritten to `path` after each one."""

  def __init__(self, path: str, title: str):
    self.path, self.parts = path, [f"# {title}\n"]

  def add(self, text: str) -> None:
    self.parts.append(text.rstrip() + "\n")
    print(text, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    with open(self.path, "w") as f:
      f.write("\n".join(self.parts))


def _version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def environment(args) -> str:
  dev = jax.devices()[0]
  smi = "nvidia-smi: not available"
  try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True,
                         timeout=20).stdout.strip() or smi
  except (OSError, subprocess.SubprocessError):
    pass
  versions = ", ".join(f"{n} {_version(n)}" for n in
                       ("jax", "jaxlib", "flax", "optax", "torch", "diffusers"))
  return "\n".join([
      "## Environment", "",
      f"- device: {dev.device_kind} ({dev.platform}), {jax.device_count()} device(s); {smi}",
      f"- Python {platform.python_version()} on {platform.machine()}; {versions}",
      f"- command: `{' '.join([os.path.basename(sys.executable), '-m', 'benchmarks.gpu.bench'] + sys.argv[1:])}`",
      f"- mode: {'dry run (CPU stand-ins, tiny sizes)' if args.dry_run else 'full'}"])


# ---------------------------------------------------------------------------
# 2. attention kernels


def _randomize(params, key, scale=0.3):
  """Noise of every parameter's shape (arrays or ShapeDtypeStructs): zero-initialised
  output projections would make any attention kernel look right."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [scale * jax.random.normal(k, x.shape, x.dtype)
                                   for k, x in zip(keys, leaves)])


def _rel_err(a, b, base) -> float:
  """||a - b|| / ||b - base||: the error relative to what the layer adds."""
  a, b, base = (np.asarray(x, np.float64) for x in (a, b, base))
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b - base), 1e-30))


def attention_cases(tiny: bool):
  """(name, module factory impl, dtype -> module, inputs, residual input)."""
  k = iter(jax.random.split(jax.random.PRNGKey(1), 16))
  b, t, h, w, c = (2, 4, 8, 8, 32) if tiny else (4, 16, 32, 32, 256)
  x = jax.random.normal(next(k), (b, t, h, w, c))
  text = jax.random.normal(next(k), (b, 12, 64))
  mask = jnp.ones((b, 12), jnp.int32).at[0, 7:].set(0).at[1, :].set(0)  # padding; no text
  is_image = jnp.array([True] + [False] * (b - 1))
  kw = dict(head_dim=min(64, c // 2))
  return [
      ("spatial", lambda i, d: attn_lib.SpatialAttention(attention_impl=i, dtype=d, **kw),
       (x,), x),
      ("temporal (relative-position bias)",
       lambda i, d: attn_lib.TemporalAttention(attention_impl=i, dtype=d, **kw), (x,), x),
      ("temporal, causal, is_image example",
       lambda i, d: attn_lib.TemporalAttention(attention_impl=i, dtype=d, causal=True, **kw),
       (x, is_image), x),
      ("cross (padding, an example without text)",
       lambda i, d: attn_lib.CrossAttention(attention_impl=i, dtype=d, **kw),
       (x, text, mask), x),
  ]


def unet_case(tiny: bool):
  fields = dict(base_channels=32 if tiny else 128, channel_mult=(1, 2), num_res_blocks=1,
                head_dim=32 if tiny else 64, temporal_conv_levels=(0, 1),
                spatial_attn_levels=(0, 1), temporal_attn_levels=(0, 1),
                cross_attn_levels=(0, 1), temporal_downsample=(False,), text_dim=64)
  b, t, hw = (2, 4, 8) if tiny else (2, 8, 32)
  k = iter(jax.random.split(jax.random.PRNGKey(2), 4))
  z = jax.random.normal(next(k), (b, t, hw, hw, 3))
  text = jax.random.normal(next(k), (b, 12, 64))
  mask = jnp.ones((b, 12), jnp.int32).at[0, 5:].set(0)
  make = lambda i, d: build(dict(fields, name="unet3d", attention_impl=i, dtype=d))  # noqa: E731
  return make, (z, jnp.zeros((b,))), dict(text=text, text_mask=mask)


def check_attention(args) -> tuple[str, bool]:
  fused = "xla" if args.dry_run else "cudnn"
  plain = None if args.dry_run else "xla"  # CPU: the library's loops vs XLA's dense op
  rows, ok = [], True

  def compare(name, make, inputs, kwargs, base):
    nonlocal ok
    ref_mod = make("xla", jnp.float32)
    shapes = jax.eval_shape(ref_mod.init, jax.random.PRNGKey(0), *inputs, **kwargs)
    params = _randomize(shapes, jax.random.PRNGKey(3))  # no init program to compile
    run = lambda impl, d: np.asarray(jax.jit(make(impl, d).apply)(  # noqa: E731
        params, *inputs, **kwargs), np.float32)
    ref = run("xla", jnp.float32)
    dt = jnp.bfloat16
    e_plain, e_fused = _rel_err(run(plain, dt), ref, base), _rel_err(run(fused, dt), ref, base)
    tol = max(2 * e_plain, 1e-2)
    passed = e_fused <= tol and np.isfinite(e_fused)
    ok &= passed
    rows.append(f"| {name} | {e_plain:.2e} | {e_fused:.2e} | {tol:.1e} | "
                f"{'pass' if passed else 'FAIL'} |")

  for name, make, inputs, base in attention_cases(args.dry_run):
    compare(name, make, inputs, {}, base)
  make, inputs, kwargs = unet_case(args.dry_run)
  compare("whole U-Net (random weights)", make, inputs, kwargs, 0.0)
  args.fused_ok = ok
  head = [f"## Attention kernels: '{fused}' against '{plain or 'loops'}', bf16", "",
          "Relative error ||out - ref|| / ||ref - x|| (of what the layer adds; the whole "
          "U-Net: of its output) against float32 'xla'; tolerance max(2 x the bf16 'xla' "
          "error, 1e-2).", "",
          f"| layer | bf16 {plain or 'loops'} | bf16 {fused} | tolerance | |", "|---|---|---|---|---|"]
  return "\n".join(head + rows), ok


# ---------------------------------------------------------------------------
# 3. a tiny stage trains


def tiny_training(args) -> tuple[str, bool]:
  from benchmarks.mfu import random_batch
  from configs import base as base_config
  from videojax.parallel import sharding
  from videojax.train import plan as plan_lib
  from videojax.train.setup import train_setup

  config = base_config.get_config("tiny")
  config.model.dtype = "bfloat16"
  config.model.attention_impl = None if args.dry_run else "cudnn"
  config.optim.warmup_steps = 1
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  setup = train_setup(config, mesh, config.data.batch_size,
                      network=plan_lib.planned_network(config))
  losses = []
  with nn.logical_axis_rules(setup.rules), jax.set_mesh(mesh):
    state, batch, key = setup.init_state(), random_batch(setup), jax.random.PRNGKey(0)
    for _ in range(args.tiny_steps):
      state, metrics = setup.step(state, batch, key)  # same batch and noise: must fit
      losses.append(float(metrics["loss"]))
  first, last = np.mean(losses[:10]), np.mean(losses[-10:])
  ok = bool(np.all(np.isfinite(losses)) and last < 0.75 * first)
  return "\n".join([
      "## A tiny stage trains (configs/base.py:tiny, bf16, "
      f"attention {config.model.attention_impl or 'default'})", "",
      f"{args.tiny_steps} steps on one batch (the noise changes with the step): mean loss "
      f"of the first 10 {first:.4f}, of the last 10 {last:.4f} ({last / first:.2f}x); "
      f"{'pass' if ok else 'FAIL'} (must fall below 0.75x)."]), ok


# ---------------------------------------------------------------------------
# 4. speed against PyTorch, MFU


def vs_torch(args, deadline: float) -> str:
  from benchmarks import vs_diffusers as vs

  size = 1 if args.dry_run else 3
  batch = 1 if args.dry_run else args.batch
  device = "cpu" if args.dry_run else "cuda"
  # cuDNN's kernel only where the attention check passed; XLA's otherwise.
  impl = None if args.dry_run else ("cudnn" if getattr(args, "fused_ok", False) else "xla")
  ours, theirs = vs.our_counts(size, xla=False), vs.their_counts(size)
  p_ratio, f_ratio = ours["params"] / theirs["params"], ours["flops"] / theirs["flops"]
  counts_ok = abs(p_ratio - 1) <= 0.10 and abs(f_ratio - 1) <= 0.10
  start = time.perf_counter()
  compiled = vs.compile_our_step(size, batch, "bfloat16", impl)
  compile_s = time.perf_counter() - start
  xla_cost = compiled[2].cost_analysis()
  xla_cost = xla_cost[0] if isinstance(xla_cost, (list, tuple)) else xla_cost
  print(f"vs torch: counts done, our step compiled in {compile_s:.0f} s", flush=True)
  runs = {"ours": vs.our_step(size, compiled, random_params=True),
          "theirs (eager)": vs.their_step(size, device, batch, "bfloat16")}
  times = {k: statistics.median(v) for k, v in
           vs.time_alternating(runs, args.repeats).items()}
  compiled_note = "not run (dry run)" if args.dry_run else "not run (out of time)"
  if not args.dry_run and time.time() < deadline - 150:
    try:
      start = time.perf_counter()
      run = vs.their_step(size, device, batch, "bfloat16", compile=True)
      run()  # compiles
      compiled_note = f"compiled in {time.perf_counter() - start:.0f} s"
      more = vs.time_alternating({"ours": runs["ours"], "theirs (torch.compile)": run},
                                 args.repeats)
      times["theirs (torch.compile)"] = statistics.median(more["theirs (torch.compile)"])
      times["ours (2nd)"] = statistics.median(more["ours"])
    except Exception as e:  # noqa: BLE001 (reported, the rest of the run goes on)
      compiled_note = f"failed: {type(e).__name__}: {str(e)[:200]}"
  train_flops = 3 * ours["flops"] * batch  # forward dot + conv FLOPs, x3 for fwd + bwd
  t_ours = times["ours"]
  peak = args.peak_tflops * 1e12
  lines = [
      f"## Training step against PyTorch (diffusers UNet3DConditionModel), size {size}", "",
      f"{vs.describe(size).replace('[1,', f'[{batch},')}, bf16 compute (ours: "
      f"attention_impl={impl}; theirs: torch.autocast, SDPA), float32 parameters and "
      f"AdamW in both; {args.repeats} alternating repeats, medians.", "",
      "| | params | forward GFLOP per example (dot + conv) |", "|---|---|---|",
      f"| ours | {ours['params'] / 1e6:.1f}M | {ours['flops'] / 1e9:.1f} |",
      f"| theirs | {theirs['params'] / 1e6:.1f}M | {theirs['flops'] / 1e9:.1f} |",
      f"| ratio | {p_ratio:.3f} | {f_ratio:.3f} ({'within' if counts_ok else 'NOT within'} 10%) |",
      "", "| step | seconds | theirs / ours | TFLOP/s (3 x forward) | MFU |",
      "|---|---|---|---|---|"]
  for name, t in times.items():
    flops = train_flops if name.startswith("ours") else 3 * theirs["flops"] * batch
    lines.append(f"| {name} | {t:.4f} | {t / t_ours:.2f} | {flops / t / 1e12:.1f} | "
                 f"{flops / t / peak:.1%} |")
  lines += ["", f"Our compile: {compile_s:.1f} s; XLA's cost analysis of our step: "
            f"{float(xla_cost.get('flops', 0)) / 1e12:.2f} TFLOP (analytic "
            f"{train_flops / 1e12:.2f}). torch.compile: {compiled_note}. MFU against "
            f"{args.peak_tflops:.0f} TFLOP/s dense bf16 (targets: ours >= 45%, "
            "theirs / ours >= 1.5)."]
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# 5. cascade sampling


def cascade_sampling(args) -> str:
  from videojax.cascade.chain import Cascade
  from videojax.nn.text import EmbeddingCache

  cache = EmbeddingCache.load(args.text_cache)
  cascade = Cascade.load(encoder=cache)
  prompts = [c for c in cache.captions if c][:max(args.sample_batches)]
  rows = ["## The demo cascade's sampling time", "",
          f"Shipped config (`configs/cascades/demo.py`), {jax.devices()[0].device_kind}; "
          f"medians of {args.repeats} warm runs (first call, which compiles, excluded).", "",
          "| batch | first call (s) | per batch (s) | per video (s) |", "|---|---|---|---|"]
  for b in args.sample_batches:
    start = time.perf_counter()
    video = cascade.sample(prompts[:b], seed=0)
    first = time.perf_counter() - start
    times = []
    for r in range(args.repeats):
      start = time.perf_counter()
      video = cascade.sample(prompts[:b], seed=r + 1)
      times.append(time.perf_counter() - start)
    t = statistics.median(times)
    rows.append(f"| {b} | {first:.1f} | {t:.3f} | {t / b:.4f} |")
    print(rows[-1], video.shape, flush=True)
  return "\n".join(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dry_run", action="store_true")
  parser.add_argument("--out", default=None, help="report (default: "
                      "benchmarks/results/gpu_<device>.md)")
  parser.add_argument("--budget", type=float, default=420, help="seconds for the whole run")
  parser.add_argument("--batch", type=int, default=8, help="examples per step, size 3")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--tiny_steps", type=int, default=200)
  parser.add_argument("--peak_tflops", type=float, default=H100_PEAK_TFLOPS)
  parser.add_argument("--text_cache", default=os.path.join(
      ".gpu_data", "moving_shapes", "base", "text_cache_minilm_16.npz"))
  parser.add_argument("--sample_batches", default="1,16")
  args = parser.parse_args()
  args.sample_batches = [int(b) for b in args.sample_batches.split(",")]
  if args.dry_run:
    args.sample_batches = [1, 2]
    args.repeats, args.tiny_steps = 2, 200
  deadline = time.time() + args.budget
  enable_compilation_cache()
  kind = jax.devices()[0].device_kind.lower().replace(" ", "_")
  out = args.out or os.path.join("benchmarks", "results", f"gpu_{kind}.md")
  report = Report(out, f"videojax on {jax.devices()[0].device_kind}")
  report.add(environment(args))
  failed = []
  parts = [("attention", check_attention), ("tiny training", tiny_training),
           ("cascade sampling", cascade_sampling),
           ("vs torch", lambda a: vs_torch(a, deadline))]
  for name, part in parts:
    if time.time() > deadline:
      report.add(f"## {name}\n\nNot run: the run's {args.budget:.0f} s budget was spent.")
      failed.append(name)
      continue
    start = time.time()
    try:
      result = part(args)
      text, ok = result if isinstance(result, tuple) else (result, True)
    except (Exception, SystemExit):  # noqa: BLE001 (reported; the other parts still run)
      text, ok = f"## {name}\n\nFAILED:\n\n```\n{traceback.format_exc()[-3000:]}\n```", False
    report.add(text + f"\n\n({name}: {time.time() - start:.0f} s)")
    if not ok:
      failed.append(name)
  report.add(f"Failed or not run: {', '.join(failed) or 'none'}.")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
