r"""Training-step speed of our UNet3D against diffusers' UNet3DConditionModel (CPU).

Both networks are built at matched sizes (see `SIZES` and `our_fields`), their
parameter counts and forward FLOPs are compared, and a full training step (forward,
MSE loss, backward, AdamW update) of each is timed in alternating runs (ours, theirs,
ours, ...) so that drifts in machine load hit both alike. Warm-up steps (our compile,
their first allocation) are excluded; the table gives medians.

  python -m benchmarks.vs_diffusers [--size 1|2|all] [--repeats 7] [--out FILE]

`--repeats 0` only builds the models and compares sizes and FLOPs (deterministic;
no timing). Needs the `bench` extra (`pip install -e .[bench]`, torch CPU wheels).

FLOPs: theirs from `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions,
attention; 2 per multiply-add) over a forward on the meta device (shapes only, nothing
computed); ours twice: XLA's `cost_analysis()` of the jitted forward, which also
counts elementwise work (norms, softmax, activations), and the dot + convolution
FLOPs of the forward's jaxpr, which count what FlopCounterMode counts. The agreement
check uses the latter. GFLOP/s = 3 x forward dot + conv FLOPs / step time (backward
is about twice the forward).

Mapping (diffusers -> ours). Shared: block_out_channels -> base_channels *
channel_mult; in/out channels 4; cross_attention_dim -> text_dim; diffusers'
`attention_head_dim=8` (a historical misnomer: the blocks receive it as a head count
and build C / 8 heads of width 8) -> head_dim=8; a temporal conv in every residual
block of every level; no temporal down-sampling; layers_per_block -> num_res_blocks
(both have one more on the way up). diffusers' transformer blocks map to our
attention layers plus `attn_ff_mult=4` (a GEGLU feed-forward after the spatial and
the temporal attention), its TemporalConvLayer (four GroupNorm-SiLU-conv(3x1x1)) to
`temporal_conv_layers=4`, its middle block's attention to `mid_attn`. What differs:
diffusers' blocks carry proj_in/proj_out and its temporal transformer two
self-attentions (ours one), and a temporal transformer (`transformer_in`) follows
its input conv; ours has FiLM (scale and shift) where it adds the time embedding, a
wider noise-level MLP and an attention-pooled text vector. At size 2 that one-to-one
mapping agrees within the tolerances (`our_fields`); at size 1 `transformer_in` is
11% of diffusers' FLOPs, made up by a wider feed-forward (see `our_fields`).
`our_fields(size, matched=False)` is the mapping without those options. Matching the
counts with an extra residual stage per level instead would put 7 level-0 spatial
attention layers against diffusers' 5, so the options are the closer match.

Memory: torch's CPU SDPA is a flash kernel; ours on CPU is a FlashAttention
recurrence per (frame, head) for spatial attention and cache-sized checkpointed
chunks for temporal and cross attention (`videojax.nn.attention`); the table gives
our step's XLA memory and ours is not timed where it exceeds the available RAM.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jax_core

from videojax.nn import denoisers
from videojax.nn.stage import StageNetwork
from videojax.nn.unet3d import UNet3D

try:
  import diffusers
  import torch
  from torch.utils.flop_counter import FlopCounterMode
except ImportError as e:  # the bench extra is not part of the main install
  raise SystemExit(f"benchmarks.vs_diffusers needs torch and diffusers ({e}); install "
                   "them with: pip install -e .[bench] --extra-index-url "
                   "https://download.pytorch.org/whl/cpu") from None

CROSS_DIM = 64  # text embedding width (diffusers' cross_attention_dim, our text_dim)
CHANNELS = 4  # latent channels in and out
THREADS = 2

# The benchmark sizes, in diffusers' terms; input is [B, C, T, H, W]. Sizes 1 and 2 fit
# a 2-core CPU; size 3 is for one GPU (benchmarks/gpu/bench.py): a latent video U-Net of
# 16 frames of 32x32 latents (256x256 pixels through an 8x autoencoder), 1024-wide text.
SIZES = {
    1: dict(block_out_channels=(32, 64), layers_per_block=1, frames=8, height=32, width=32,
            text_len=16),
    2: dict(block_out_channels=(32, 64, 128), layers_per_block=2, frames=16, height=64,
            width=64, text_len=77),
    3: dict(block_out_channels=(256, 512, 1024), layers_per_block=1, frames=16, height=32,
            width=32, text_len=77, cross_dim=1024, head_dim=64),
}
PARAM_TOL, FLOP_TOL = 0.05, 0.10  # the agreement the comparison asks for


def diffusers_config(size: int) -> dict:
  """UNet3DConditionModel arguments: cross-attention blocks on every level but the last."""
  s = SIZES[size]
  levels = len(s["block_out_channels"])
  return dict(in_channels=CHANNELS, out_channels=CHANNELS,
              block_out_channels=s["block_out_channels"],
              layers_per_block=s["layers_per_block"],
              down_block_types=("CrossAttnDownBlock3D",) * (levels - 1) + ("DownBlock3D",),
              up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (levels - 1),
              cross_attention_dim=s.get("cross_dim", CROSS_DIM), attention_head_dim=8,
              norm_num_groups=32)


def our_fields(size: int, matched: bool = True) -> dict:
  """UNet3D fields for `diffusers_config(size)` (the mapping is in the module docstring).

  Args:
    size: 1 or 2.
    matched: False gives the bare mapping (a stage per diffusers layer, attention where
      diffusers has cross-attention blocks, no feed-forward), which falls 30-36% short
      in parameters and 23-39% in FLOPs; True adds diffusers' transformer-block parts
      (feed-forwards, 4-conv temporal branches, middle-block attention), which agree.
  """
  s = SIZES[size]
  chans = s["block_out_channels"]
  levels = len(chans)
  attn = tuple(range(levels - 1))  # diffusers' CrossAttn*Block3D levels
  fields = dict(
      in_channels=CHANNELS, out_channels=CHANNELS, base_channels=chans[0],
      channel_mult=tuple(c // chans[0] for c in chans), num_res_blocks=s["layers_per_block"],
      temporal_conv_levels=tuple(range(levels)), spatial_attn_levels=attn,
      temporal_attn_levels=attn, cross_attn_levels=attn,
      temporal_downsample=(False,) * (levels - 1), head_dim=s.get("head_dim", 8),
      text_dim=s.get("cross_dim", CROSS_DIM))
  if not matched:
    return fields
  # diffusers' transformer blocks: a GEGLU feed-forward after the spatial and temporal
  # attention, a 4-conv temporal branch in every residual block, attention in the
  # middle block (see the module docstring).
  fields.update(attn_ff_mult=4, temporal_conv_layers=4, mid_attn=True)
  if size == 1:
    # diffusers' transformer_in (a width-64 temporal transformer after its input conv,
    # 11% of its FLOPs here) has no counterpart: a wider feed-forward and a fifth
    # temporal conv make up its FLOPs, and the middle block's attention is left out
    # (with it the parameters come out 6-16% over).
    fields.update(attn_ff_mult=8, temporal_conv_layers=5, mid_attn=False)
  return fields


# ---------------------------------------------------------------------------
# Counting


def dot_conv_flops(jaxpr) -> int:
  """2 x multiply-adds of every dot_general and convolution in a jaxpr (recursively).

  A scan body (the query chunks of our CPU spatial attention) counts once per iteration;
  XLA's `cost_analysis()` counts a loop body once, so it undercounts those.
  """
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * out * math.prod(lhs[d] for d in contract)
    elif name == "conv_general_dilated":
      spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
      rhs = eqn.invars[1].aval.shape
      total += 2 * out * rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])
    times = eqn.params.get("length", 1) if name == "scan" else 1  # chunked attention
    for value in eqn.params.values():  # pjit, remat, custom_vjp... carry sub-jaxprs
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(sub, jax_core.ClosedJaxpr):
          total += times * dot_conv_flops(sub.jaxpr)
        elif isinstance(sub, jax_core.Jaxpr):
          total += times * dot_conv_flops(sub)
  return total


def our_model(size: int, **run_fields) -> UNet3D:
  """Our U-Net at this size (`our_fields`), with run fields (dtype, attention_impl)."""
  return denoisers.build({"name": "unet3d", **our_fields(size), **run_fields})


def our_inputs(size: int, model: UNet3D, batch: int = 1) -> tuple:
  """Abstract (z, logsnr, kwargs) for the model at this size: a base stage's inputs
  (text, no conditioning video), as diffusers' U-Net takes."""
  s = SIZES[size]
  z_shape = (batch, s["frames"], s["height"], s["width"], CHANNELS)  # [B, T, H, W, C]
  return StageNetwork(model).abstract_inputs(z_shape, s["text_len"])


def our_counts(size: int, xla: bool = True) -> dict:
  """Parameters and forward FLOPs (XLA's and dot + conv) of our U-Net at this size.

  Attention runs as XLA's dense ops here (whatever kernel a timed run uses), so that
  the jaxpr shows its products."""
  model = our_model(size, attention_impl="xla")
  z, logsnr, kw = our_inputs(size, model)
  params = jax.eval_shape(lambda r, z, s, kw: model.init(r, z, s, **kw),
                          jax.random.PRNGKey(0), z, logsnr, kw)

  def fwd(p, z, s, kw):
    return model.apply(p, z, s, **kw)

  xla_flops = float("nan")  # xla=False: skip compiling the forward (minutes for size 3)
  if xla:
    cost = jax.jit(fwd).lower(params, z, logsnr, kw).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one per device
    xla_flops = float(cost["flops"])
  return dict(params=StageNetwork(model).param_count(z.shape, SIZES[size]["text_len"]),
              xla_flops=xla_flops,
              flops=dot_conv_flops(jax.make_jaxpr(fwd)(params, z, logsnr, kw).jaxpr))


def their_inputs(size: int, device: str = "cpu", batch: int = 1) -> tuple:
  s = SIZES[size]
  gen = torch.Generator().manual_seed(0)
  shape = (batch, CHANNELS, s["frames"], s["height"], s["width"])  # [B, C, T, H, W]
  x = torch.randn(shape, generator=gen).to(device)
  text = torch.randn((batch, s["text_len"], s.get("cross_dim", CROSS_DIM)),
                     generator=gen).to(device)
  return x, torch.full((batch,), 500, device=device), text


def their_counts(size: int) -> dict:
  """Parameters and forward FLOPs of diffusers' U-Net; on the meta device (no compute)."""
  with torch.device("meta"):
    model = diffusers.UNet3DConditionModel(**diffusers_config(size))
  x, t, text = their_inputs(size, "meta")
  counter = FlopCounterMode(display=False)
  with counter, torch.no_grad():
    model(x, t, encoder_hidden_states=text)
  return dict(params=sum(p.numel() for p in model.parameters()),
              flops=counter.get_total_flops())


# ---------------------------------------------------------------------------
# Training steps


def compile_our_step(size: int, batch_size: int = 1, dtype: str = "float32",
                     attention_impl: str | None = None):
  """Our jitted AdamW training step, compiled for abstract inputs (nothing allocated).

  Args:
    size: a key of SIZES.
    batch_size: examples per step.
    dtype: compute dtype ('bfloat16': float32 parameters and optimizer, bf16 compute,
      as torch.autocast does for theirs).
    attention_impl: UNet3D.attention_impl (None, 'xla', 'cudnn').

  Returns:
    (model, optimizer, compiled step (state, batch) -> (state, loss), abstract batch).
  """
  model = our_model(size, dtype=dtype, attention_impl=attention_impl)
  tx = optax.adamw(1e-4)
  z, logsnr, cond = our_inputs(size, model, batch_size)
  batch = dict(z=z, target=z, logsnr=logsnr, **cond)
  variables = jax.eval_shape(lambda r, z, s, kw: model.init(r, z, s, **kw),
                             jax.random.PRNGKey(0), z, logsnr, cond)
  params = nn.meta.unbox(variables["params"])
  state = {"params": params, "opt": jax.eval_shape(tx.init, params)}

  def step(state, batch):
    kw = {k: v for k, v in batch.items() if k not in ("z", "target", "logsnr")}

    def loss_fn(p):
      out = model.apply({"params": p}, batch["z"], batch["logsnr"], **kw)
      return jnp.mean((out.astype(jnp.float32) - batch["target"])**2)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

  compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
  return model, tx, compiled, batch


def step_bytes(compiled) -> int:
  """Memory a compiled step needs beyond its outputs: XLA's temporaries plus arguments."""
  mem = compiled.memory_analysis()
  return mem.temp_size_in_bytes + mem.argument_size_in_bytes


def our_step(size: int, compiled_step=None, random_params: bool = False):
  """A closure running one AdamW training step of our U-Net; returns the loss.

  random_params: fill the parameters with small noise from their shapes instead of
  running `model.init` (which compiles the whole forward pass again: minutes at size 3).
  """
  model, tx, compiled, abstract = compiled_step or compile_our_step(size)
  keys = iter(jax.random.split(jax.random.PRNGKey(0), len(abstract) + 1))
  batch = {k: (jnp.ones(v.shape) if k.endswith("mask") else jax.random.normal(next(keys), v.shape))
           for k, v in abstract.items()}
  batch["logsnr"] = jnp.zeros(abstract["logsnr"].shape)
  cond = {k: v for k, v in batch.items() if k not in ("z", "target", "logsnr")}
  init = lambda key: model.init(key, batch["z"], batch["logsnr"], **cond)  # noqa: E731
  if random_params:
    shapes = nn.meta.unbox(jax.eval_shape(init, next(keys))["params"])
    leaves, tree = jax.tree.flatten(shapes)
    params = jax.tree.unflatten(tree, [0.02 * jax.random.normal(k, x.shape, x.dtype) for k, x
                                       in zip(jax.random.split(next(keys), len(leaves)), leaves)])
  else:
    params = nn.meta.unbox(jax.jit(init)(next(keys))["params"])
  state = {"params": params, "opt": tx.init(params)}

  def run() -> float:
    nonlocal state
    state, loss = compiled(state, batch)
    return float(jax.block_until_ready(loss))  # the update is done when the loss is

  return run


def their_step(size: int, device: str = "cpu", batch_size: int = 1,
               dtype: str = "float32", compile: bool = False):
  """A closure running one AdamW training step of diffusers' U-Net; returns the loss.

  dtype 'bfloat16' runs the forward and backward under `torch.autocast` (float32
  parameters and AdamW, as ours); attention is diffusers' default processor, PyTorch's
  scaled_dot_product_attention. `compile` wraps the model in `torch.compile`.
  """
  torch.manual_seed(0)
  model = diffusers.UNet3DConditionModel(**diffusers_config(size)).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
  x, t, text = their_inputs(size, device, batch_size)
  target = torch.randn_like(x)
  forward = torch.compile(model) if compile else model
  autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                            enabled=dtype == "bfloat16")

  def run() -> float:
    opt.zero_grad(set_to_none=True)
    with autocast:
      out = forward(x, t, encoder_hidden_states=text, return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(out.float(), target)
    loss.backward()
    opt.step()
    return float(loss.detach())  # waits for the GPU: the step is done when the loss is

  return run


def time_alternating(runs: dict, repeats: int, warmup: int = 1) -> dict:
  """Seconds per call of each closure, alternating between them; warm-up calls excluded.

  One warm-up call each is enough: our step is compiled before, and torch allocates
  the AdamW moments on the first `step()`.
  """
  for run in runs.values():
    for _ in range(warmup):
      run()
  times = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      start = time.perf_counter()
      loss = run()
      times[name].append(time.perf_counter() - start)
      if not np.isfinite(loss):
        raise RuntimeError(f"{name}'s training step gave a non-finite loss ({loss}).")
  return times


def available_bytes() -> int | None:
  """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


# ---------------------------------------------------------------------------


def describe(size: int) -> str:
  s = SIZES[size]
  return (f"{size}: {s['block_out_channels']} x{s['layers_per_block']}, "
          f"[1, {CHANNELS}, {s['frames']}, {s['height']}, {s['width']}], {s['text_len']} tok")


def compare(size: int, repeats: int, rows: dict, notes: list) -> None:
  """Counts (and, with repeats > 0, times) one size; appends table rows and notes."""
  ours, theirs = our_counts(size), their_counts(size)
  compiled = compile_our_step(size)
  need, avail = step_bytes(compiled[2]), available_bytes()
  p_ratio, f_ratio = ours["params"] / theirs["params"], ours["flops"] / theirs["flops"]
  rows["model"].append(
      f"| {describe(size)} | {ours['params'] / 1e6:.3f}M | {theirs['params'] / 1e6:.3f}M | "
      f"{p_ratio:.3f} | {ours['xla_flops'] / 1e9:.2f} | {ours['flops'] / 1e9:.2f} | "
      f"{theirs['flops'] / 1e9:.2f} | {ours['xla_flops'] / theirs['flops']:.3f} | "
      f"{f_ratio:.3f} | {need / 2**30:.1f} |")
  print(rows["model"][-1], flush=True)
  if abs(p_ratio - 1) > PARAM_TOL or abs(f_ratio - 1) > FLOP_TOL:
    notes.append(f"size {size}: parameters ({p_ratio:.3f}) or FLOPs ({f_ratio:.3f}) differ "
                 f"by more than {PARAM_TOL:.0%} / {FLOP_TOL:.0%}.")
    print("WARNING:", notes[-1], flush=True)
  if repeats <= 0:
    return
  runs = {"theirs": their_step(size)}
  if avail is not None and need > avail:
    # Running it would only end in the OOM killer (and take other processes with it).
    notes.append(f"size {size}: our step needs {need / 2**30:.1f} GiB (XLA's temporaries: "
                 f"attention logits are materialised), {avail / 2**30:.1f} GiB is available; "
                 "ours not timed.")
    print("WARNING:", notes[-1], flush=True)
  else:
    runs = {"ours": our_step(size, compiled), **runs}
  times = {k: statistics.median(v) for k, v in time_alternating(runs, repeats).items()}
  t_ours, t_theirs = times.get("ours"), times["theirs"]

  def fmt(t, flops):  # seconds and GFLOP/s (3x the forward's FLOPs a step)
    return ("-", "-") if t is None else (f"{t:.3f}", f"{3 * flops / t / 1e9:.1f}")

  (s_ours, g_ours), (s_theirs, g_theirs) = fmt(t_ours, ours["flops"]), fmt(t_theirs,
                                                                            theirs["flops"])
  speedup = "-" if t_ours is None else f"{t_theirs / t_ours:.2f}"
  rows["step"].append(f"| {size} | {s_ours} | {s_theirs} | {speedup} | {g_ours} | {g_theirs} |")
  print(rows["step"][-1], flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="all", choices=("1", "2", "all"))
  parser.add_argument("--repeats", type=int, default=7,
                      help="timed steps per model (0: sizes and FLOPs only)")
  parser.add_argument("--out", default=None, help="also write the markdown tables here")
  args = parser.parse_args()
  # Both frameworks on the same THREADS cores: torch by its setting, XLA's CPU thread
  # pool (sized when the backend starts, below) by the process's affinity.
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:THREADS])
  torch.set_num_threads(THREADS)
  sizes = (1, 2) if args.size == "all" else (int(args.size),)

  rows = {"model": [("| size | params ours | params theirs | ratio | GFLOP ours (XLA) | "
                     "GFLOP ours (dot+conv) | GFLOP theirs | ratio XLA | ratio dot+conv | "
                     "our step memory (GiB) |"), "|---" * 10 + "|"],
          "step": [("| size | step ours (s) | step theirs (s) | theirs / ours | GFLOP/s ours | "
                    "GFLOP/s theirs |"), "|---" * 6 + "|"]}
  notes = []
  for size in sizes:
    compare(size, args.repeats, rows, notes)

  header = (f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}, "
            f"diffusers {diffusers.__version__}; {THREADS} threads each on "
            f"{platform.processor() or platform.machine()}; forward FLOPs per example; "
            f"{args.repeats} alternating repeats, medians, warm-up excluded.")
  text = "\n".join(rows["model"])
  if args.repeats > 0:
    text += "\n\n" + "\n".join(rows["step"])
  print("\n" + header + "\n\n" + text)
  for note in notes:
    print("WARNING:", note)
  if args.out:
    with open(args.out, "w") as f:
      f.write("# Training step: videojax UNet3D vs diffusers UNet3DConditionModel\n\n"
              f"{header}\n\n{text}\n" + "".join(f"\n{n}\n" for n in notes))


if __name__ == "__main__":
  main()
