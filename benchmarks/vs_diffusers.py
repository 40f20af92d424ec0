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
`attention_head_dim=8` (a historical misnomer: it is the number of heads handed to the
blocks, which then build C / 8 heads of width 8) -> head_dim=8; a temporal conv in
every residual block of every level. What differs, per layer: diffusers' spatial and
temporal transformers carry proj_in/proj_out and a GEGLU feed-forward (4x), its
temporal layer has two self-attentions, its TemporalConvLayer is four GroupNorm-SiLU-
conv(3x1x1) layers where ours is one, and a temporal transformer (`transformer_in`)
follows its input conv; ours has attention blocks without feed-forward, FiLM
(scale and shift) where it adds the time embedding, a wider noise-level MLP and an
attention-pooled text vector in the conditioning embedding. Its attention layers are
therefore about four times ours in parameters, so ours gets one more residual stage
per level (num_res_blocks = layers_per_block + 1); the attention levels are then
those where diffusers has cross-attention blocks (all but the last), plus, at size 2,
temporal and cross attention at the last level and in the middle block (where
diffusers' mid block has them too) to bring the parameter count within 5%.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jax_core

from videojax.nn.unet3d import UNet3D, count_params, example_inputs, from_config

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

# The two benchmark sizes, in diffusers' terms; input is [B, C, T, H, W].
SIZES = {
    1: dict(block_out_channels=(32, 64), layers_per_block=1, frames=8, height=32, width=32,
            text_len=16),
    2: dict(block_out_channels=(32, 64, 128), layers_per_block=2, frames=16, height=64,
            width=64, text_len=77),
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
              cross_attention_dim=CROSS_DIM, attention_head_dim=8, norm_num_groups=32)


def our_fields(size: int) -> dict:
  """UNet3D fields matching `diffusers_config(size)` (the mapping is in the docstring)."""
  s = SIZES[size]
  chans = s["block_out_channels"]
  levels = len(chans)
  attn = tuple(range(levels - 1))  # diffusers' CrossAttn*Block3D levels
  fields = dict(
      in_channels=CHANNELS, out_channels=CHANNELS, base_channels=chans[0],
      channel_mult=tuple(c // chans[0] for c in chans),
      # one stage more per level: our attention blocks have no feed-forward and one
      # temporal conv instead of four (see the module docstring)
      num_res_blocks=s["layers_per_block"] + 1,
      temporal_conv_levels=tuple(range(levels)), spatial_attn_levels=attn,
      temporal_attn_levels=attn, cross_attn_levels=attn,
      temporal_downsample=(False,) * (levels - 1), head_dim=8, text_dim=CROSS_DIM)
  if size == 2:
    # temporal and cross attention also at the last level (so in the middle block too,
    # as in diffusers' mid block): +6% parameters for <1% FLOPs. Spatial attention
    # there would add as much again and overshoot.
    fields.update(temporal_attn_levels=tuple(range(levels)),
                  cross_attn_levels=tuple(range(levels)))
  return fields


# ---------------------------------------------------------------------------
# Counting


def dot_conv_flops(jaxpr) -> int:
  """2 x multiply-adds of every dot_general and convolution in a jaxpr (recursively)."""
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
    for value in eqn.params.values():  # pjit, remat, custom_vjp... carry sub-jaxprs
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(sub, jax_core.ClosedJaxpr):
          total += dot_conv_flops(sub.jaxpr)
        elif isinstance(sub, jax_core.Jaxpr):
          total += dot_conv_flops(sub)
  return total


def our_inputs(size: int, model: UNet3D) -> tuple:
  """Abstract (z, logsnr, kwargs) for the model at this size."""
  s = SIZES[size]
  z_shape = (1, s["frames"], s["height"], s["width"], CHANNELS)  # [B, T, H, W, C]
  z = jax.ShapeDtypeStruct(z_shape, jnp.float32)
  logsnr = jax.ShapeDtypeStruct((1,), jnp.float32)
  return z, logsnr, example_inputs(model, z_shape, s["text_len"])


def our_counts(size: int) -> dict:
  """Parameters and forward FLOPs (XLA's and dot + conv) of our U-Net at this size."""
  model = from_config(our_fields(size))
  z, logsnr, kw = our_inputs(size, model)
  params = jax.eval_shape(lambda r, z, s, kw: model.init(r, z, s, **kw),
                          jax.random.PRNGKey(0), z, logsnr, kw)
  fwd = lambda p, z, s, kw: model.apply(p, z, s, **kw)  # noqa: E731
  cost = jax.jit(fwd).lower(params, z, logsnr, kw).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one per device
  return dict(params=count_params(model, z.shape, SIZES[size]["text_len"]),
              xla_flops=float(cost["flops"]),
              flops=dot_conv_flops(jax.make_jaxpr(fwd)(params, z, logsnr, kw).jaxpr))


def their_inputs(size: int, device: str = "cpu") -> tuple:
  s = SIZES[size]
  gen = torch.Generator().manual_seed(0)
  shape = (1, CHANNELS, s["frames"], s["height"], s["width"])  # [B, C, T, H, W]
  x = torch.randn(shape, generator=gen).to(device)
  text = torch.randn((1, s["text_len"], CROSS_DIM), generator=gen).to(device)
  return x, torch.tensor([500], device=device), text


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


def our_step(size: int):
  """A closure running one jitted AdamW training step of our U-Net; returns the loss."""
  model = from_config(our_fields(size))
  z_abs, _, kw_abs = our_inputs(size, model)
  keys = jax.random.split(jax.random.PRNGKey(0), 4 + len(kw_abs))
  z = jax.random.normal(keys[0], z_abs.shape)
  target = jax.random.normal(keys[1], z_abs.shape)
  logsnr = jnp.zeros((1,))
  kw = {k: (jnp.ones(v.shape) if k.endswith("mask") else jax.random.normal(keys[4 + i], v.shape))
        for i, (k, v) in enumerate(sorted(kw_abs.items()))}
  params = nn.meta.unbox(jax.jit(model.init)(keys[2], z, logsnr, **kw)["params"])
  tx = optax.adamw(1e-4)
  state = {"params": params, "opt": tx.init(params)}

  def step(state, z, target):
    def loss_fn(p):
      return jnp.mean((model.apply({"params": p}, z, logsnr, **kw) - target)**2)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

  step = jax.jit(step, donate_argnums=0)

  def run() -> float:
    nonlocal state
    state, loss = step(state, z, target)
    return float(jax.block_until_ready(loss))  # the update is done when the loss is

  return run


def their_step(size: int):
  """A closure running one AdamW training step of diffusers' U-Net; returns the loss."""
  torch.manual_seed(0)
  model = diffusers.UNet3DConditionModel(**diffusers_config(size)).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
  x, t, text = their_inputs(size)
  target = torch.randn_like(x)

  def run() -> float:
    opt.zero_grad(set_to_none=True)
    out = model(x, t, encoder_hidden_states=text, return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(out, target)
    loss.backward()
    opt.step()
    return float(loss.detach())

  return run


def time_alternating(runs: dict, repeats: int, warmup: int = 2) -> dict:
  """Seconds per call of each closure, alternating between them; warm-up calls excluded."""
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


# ---------------------------------------------------------------------------


def describe(size: int) -> str:
  s = SIZES[size]
  return (f"{size}: {s['block_out_channels']} x{s['layers_per_block']}, "
          f"[1, {CHANNELS}, {s['frames']}, {s['height']}, {s['width']}], {s['text_len']} tok")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="all", choices=("1", "2", "all"))
  parser.add_argument("--repeats", type=int, default=7,
                      help="timed steps per model (0: sizes and FLOPs only)")
  parser.add_argument("--out", default=None, help="also write the markdown tables here")
  args = parser.parse_args()
  torch.set_num_threads(THREADS)
  sizes = (1, 2) if args.size == "all" else (int(args.size),)

  model_rows = ["| size | params ours | params theirs | ratio | GFLOP ours (XLA) | "
                "GFLOP ours (dot+conv) | GFLOP theirs | ratio (dot+conv) |",
                "|---|---|---|---|---|---|---|---|"]
  step_rows = ["| size | step ours (s) | step theirs (s) | theirs / ours | GFLOP/s ours | "
               "GFLOP/s theirs |", "|---|---|---|---|---|---|"]
  notes = []
  for size in sizes:
    ours, theirs = our_counts(size), their_counts(size)
    p_ratio, f_ratio = ours["params"] / theirs["params"], ours["flops"] / theirs["flops"]
    model_rows.append(
        f"| {describe(size)} | {ours['params'] / 1e6:.3f}M | {theirs['params'] / 1e6:.3f}M | "
        f"{p_ratio:.3f} | {ours['xla_flops'] / 1e9:.2f} | {ours['flops'] / 1e9:.2f} | "
        f"{theirs['flops'] / 1e9:.2f} | {f_ratio:.3f} |")
    print(model_rows[-1], flush=True)
    if abs(p_ratio - 1) > PARAM_TOL or abs(f_ratio - 1) > FLOP_TOL:
      notes.append(f"size {size}: parameters ({p_ratio:.3f}) or FLOPs ({f_ratio:.3f}) "
                   f"differ by more than {PARAM_TOL:.0%} / {FLOP_TOL:.0%}.")
      print("WARNING:", notes[-1], flush=True)
    if args.repeats > 0:
      times = time_alternating({"ours": our_step(size), "theirs": their_step(size)},
                               args.repeats)
      t_ours, t_theirs = (statistics.median(times[k]) for k in ("ours", "theirs"))
      step_rows.append(
          f"| {size} | {t_ours:.3f} | {t_theirs:.3f} | {t_theirs / t_ours:.2f} | "
          f"{3 * ours['flops'] / t_ours / 1e9:.1f} | {3 * theirs['flops'] / t_theirs / 1e9:.1f} |")
      print(step_rows[-1], flush=True)

  header = (f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
            f"({THREADS} threads), diffusers {diffusers.__version__}; "
            f"{platform.processor() or platform.machine()}, {jax.local_device_count()} "
            f"device(s); {args.repeats} alternating repeats, medians, warm-up excluded.")
  text = "\n".join(model_rows)
  if args.repeats > 0:
    text += "\n\n" + "\n".join(step_rows)
  print("\n" + header + "\n\n" + text)
  for note in notes:
    print("WARNING:", note)
  if args.out:
    with open(args.out, "w") as f:
      f.write("# Training step: videojax UNet3D vs diffusers UNet3DConditionModel\n\n"
              f"{header}\n\n{text}\n" + "".join(f"\n{n}\n" for n in notes))


if __name__ == "__main__":
  main()
