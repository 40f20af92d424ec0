"""Scale planner: what a stage's train step costs on a mesh, without allocating it.

`plan(config, {'data': 8, 'fsdp': 8}, 64)` ahead-of-time lowers and compiles the
stage's jitted train step (the trainer's recipe, `videojax.train.setup.train_setup`:
shardings from the logical axis rules, `donate_argnums=0`) and one denoiser call of its
sampler (the classifier-free guidance batch of 2B) on abstract inputs only
(`jax.eval_shape`, sharded `jax.ShapeDtypeStruct`s), so a 5B-parameter U-Net plans on
fake CPU devices (`jax_num_cpu_devices`, set before JAX starts its backend). Any
registered denoiser plans: nothing here reads its fields or parameter names.

It reports
  - the parameter count and the per-device bytes of parameters, optimizer state and
    EMA, from their shardings (each leaf's shard shape, so replicated leaves count whole),
  - XLA's memory analysis of the compiled step: arguments, outputs, their aliasing
    (donation), temporaries (activations and gradients) and generated code,
  - FLOPs: XLA's cost analysis of the compiled (partitioned, per-device) module, of the
    lowered (global, unpartitioned) module, and a matmul count of the traced forward
    program (`forward_flops`),
  - collective traffic: the collectives of the compiled HLO and their operand bytes,
and `format_table` turns plans into step times at an MFU on named accelerators.

Caveats: the numbers come from the XLA *CPU* compiler. Its fusion, scheduling and
buffer assignment differ from TPU and GPU, so temp bytes are an estimate of the
activation footprint, not a TPU/GPU measurement; collectives inside loops count once.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding

from videojax.cascade.sampling import SampleSettings
from videojax.diffusion import flow, samplers
from videojax.nn.stage import StageNetwork
from videojax.parallel import sharding
from videojax.train.setup import TrainSetup, train_setup

GiB = 2**30
# Peak dense bf16 TFLOP/s per chip (vendor figures, no sparsity).
ACCELERATORS = {"tpu_v4": 275e12, "tpu_v5e": 197e12, "tpu_v5p": 459e12, "h100": 989e12}
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all",
               "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}


def parse_mesh(spec: str) -> dict[str, int]:
  """'data=8,fsdp=8,tensor=1' -> {'data': 8, 'fsdp': 8, 'tensor': 1}.

  Raises:
    ValueError: a malformed entry, an unknown axis name or a size that is not a
      positive integer.
  """
  shape = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    name, eq, size = item.partition("=")
    if not eq or not size.strip().isdigit():
      raise ValueError(f"Mesh entry {item!r} in {spec!r} is not axis=size; write e.g. "
                       "'data=8,fsdp=8,tensor=1'.")
    shape[name.strip()] = int(size)
  return check_mesh(shape)


def check_mesh(mesh_shape: Mapping[str, int], num_devices: int | None = None
               ) -> dict[str, int]:
  """All three axes' sizes; checks names, sizes and (if given) the device count.

  Raises:
    ValueError: an axis not in ('data', 'fsdp', 'tensor'), a size < 1, or a product
      of sizes that differs from `num_devices`.
  """
  unknown = set(mesh_shape) - set(sharding.MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}; the mesh axes are "
                     f"{sharding.MESH_AXES}.")
  shape = {a: int(mesh_shape.get(a, 1)) for a in sharding.MESH_AXES}
  if min(shape.values()) < 1:
    raise ValueError(f"Mesh axis sizes must be >= 1, got {shape}.")
  if num_devices is not None and math.prod(shape.values()) != num_devices:
    raise ValueError(f"Mesh {shape} spans {math.prod(shape.values())} devices but "
                     f"{num_devices} were asked for; make the axis sizes multiply to "
                     f"{num_devices}.")
  return shape


def _shard_bytes(x: jax.ShapeDtypeStruct, s: NamedSharding, path: Any = ()) -> int:
  """Bytes of one device's shard of `x`; a ValueError naming `path` if `s` does not fit."""
  try:
    return math.prod(s.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
  except ValueError:
    ways = [math.prod(s.mesh.shape[a] for a in ((p,) if isinstance(p, str) else p or ()))
            for p in s.spec]
    i = next(i for i, (n, w) in enumerate(zip(x.shape, ways)) if n % w)
    raise ValueError(
        f"{jax.tree_util.keystr(path) or 'An input'} of shape {x.shape} cannot be sharded "
        f"{s.spec} on mesh {dict(s.mesh.shape)}: its dimension {i} ({x.shape[i]}) does not "
        f"split {ways[i]} ways. Choose mesh axis sizes that divide it, or map its logical "
        "axis to another mesh axis in config.mesh.rules.") from None


def shape_bytes(text: str) -> int:
  """Bytes of every HLO array shape ('f32[8,16]{1,0}', tuples too) in `text`."""
  total = 0
  for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
    if dtype in _DTYPE_BYTES:
      total += _DTYPE_BYTES[dtype] * math.prod(int(n) for n in dims.split(",") if n)
  return total


def collective_traffic(hlo_text: str) -> dict[str, dict[str, int]]:
  """Count and operand bytes of each collective in an HLO module's text.

  Async pairs count once (their '-start' op). The bytes are those of the operands as
  the (per-device, partitioned) module sees them; ops inside loop bodies count once.

  Returns:
    {kind: {'count': n, 'bytes': operand bytes}} for each kind in COLLECTIVES.
  """
  result_bytes: dict[str, int] = {}  # instruction name -> bytes of its result
  out = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
  op_re = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(-start)?\((.*)")
  for line in hlo_text.splitlines():
    line = re.sub(r"/\*.*?\*/", "", line)  # '/*index=5*/' comments in long operand lists
    lhs, eq, rhs = line.partition(" = ")
    if not eq:
      continue
    name = lhs.split()[-1].lstrip("%")
    m = op_re.search(" " + rhs)
    result_bytes[name] = shape_bytes(rhs if m is None else (" " + rhs)[:m.start()])
    if m is None:
      continue
    args, depth = m.group(3), 1
    for i, ch in enumerate(args):  # the operand list runs to the matching ')'
      depth += {"(": 1, ")": -1}.get(ch, 0)
      if depth == 0:
        args = args[:i]
        break
    size = shape_bytes(args)  # operands printed with their shapes
    if not size:  # or by name only
      size = sum(result_bytes.get(a.strip().lstrip("%"), 0) for a in args.split(","))
    out[m.group(1)]["count"] += 1
    out[m.group(1)]["bytes"] += size
  return out


def _matmul_flops(eqn) -> int:
  """2 x multiply-adds of one matmul-like equation (0 for any other primitive)."""
  name = eqn.primitive.name
  if name not in ("dot_general", "conv_general_dilated", "dot_product_attention_fwd_wrapper"):
    return 0  # (other equations may have no outputs, or outputs without shapes)
  out, (lhs, rhs) = math.prod(eqn.outvars[0].aval.shape), (v.aval.shape for v in eqn.invars[:2])
  if name == "dot_general":  # each output element sums over the contracted dimensions
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    return 2 * out * math.prod(lhs[d] for d in lhs_contract)
  if name == "conv_general_dilated":  # its window over its group's input features
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *window)
    return 2 * out * math.prod(rhs[d] for d in spec[2:]) * rhs[spec[1]]
  keys = rhs[1] if eqn.params.get("layout", 0) == 0 else rhs[2]  # cuDNN's: BTNH or BNTH
  return 4 * math.prod(lhs) * keys  # QK^T and AV per (query, key, head feature)


def _sub_jaxprs(params: Mapping[str, Any]) -> list[Any]:
  """The jaxprs among an equation's parameters (ClosedJaxprs opened)."""
  values = [w for v in params.values() for w in (v if isinstance(v, (tuple, list)) else (v,))]
  return [v.jaxpr if isinstance(v, jax.extend.core.ClosedJaxpr) else v for v in values
          if isinstance(v, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr))]


def _jaxpr_flops(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name, params = eqn.primitive.name, eqn.params
    if name == "cond":  # one branch runs: the costliest
      total += max(_jaxpr_flops(b.jaxpr) for b in params["branches"])
    elif name == "scan":
      total += params["length"] * _jaxpr_flops(params["jaxpr"].jaxpr)
    elif name == "shard_map":  # the body is one shard's program; every shard runs it
      mesh = params["mesh"]
      axes = params.get("newly_manual_axes", params.get("manual_axes", mesh.axis_names))
      total += math.prod(mesh.shape[a] for a in axes) * _jaxpr_flops(params["jaxpr"])
    elif name == "pallas_call":  # the kernel runs once per grid point
      total += math.prod(params["grid_mapping"].grid) * _jaxpr_flops(params["jaxpr"])
    else:  # jit, closed calls, remat, custom_jvp / custom_vjp, while (body and cond once)
      total += _matmul_flops(eqn) + sum(_jaxpr_flops(j) for j in _sub_jaxprs(params))
  return total


def jaxpr_flops(fn: Callable[..., Any], *args, **kwargs) -> int:
  """Matmul FLOPs of `fn(*args, **kwargs)` (2 per multiply-add), from its traced program.

  `jax.make_jaxpr` traces `fn` (arrays or `jax.ShapeDtypeStruct`s: nothing is computed),
  and every `dot_general` and `conv_general_dilated` is counted from its shapes and
  dimension numbers, whatever module or parameter names produced it. Sub-programs
  count as they run: jit, closed calls, remat, custom_jvp / custom_vjp once, `cond` its
  costliest branch, `scan` times its length, `shard_map` times its shards, a Pallas
  kernel times its grid. A `while_loop`'s trip count is not known from its program:
  its body (and condition) count once. cuDNN's fused attention counts from its shapes;
  other opaque kernels (custom calls without a jaxpr) count zero.

  Against XLA's `cost_analysis()`: elementwise ops, reductions and norms are left out
  here, and a convolution counts its whole kernel at every output position, as the
  closed form does, where XLA leaves out the taps that fall on zero padding. On small
  frames the second outweighs the first (the tiny U-Net: 1.10x XLA's count).
  """
  return _jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)


def forward_flops(network: StageNetwork, params: Any, z_shape: tuple[int, ...],
                  text_len: int) -> int:
  """Matmul FLOPs of one forward pass of a stage's network (`jaxpr_flops`).

  Args:
    network: the stage's network (any registered denoiser).
    params: its variables ({'params': ...}), arrays or ShapeDtypeStructs.
    z_shape: the denoiser's input shape [B, T, H, W, C] (`network.network_shape` of
      the videos: latents for a latent stage).
    text_len: text tokens per example (ignored by a network without text).

  Returns:
    2 x the multiply-adds of every matmul and convolution of the call; a train step
    costs about 3x this (the backward pass twice the forward).
  """
  z, logsnr, kw = network.abstract_inputs(tuple(z_shape), text_len or 1)
  return jaxpr_flops(lambda p, z, l, kw: network.apply(p, z, l, **kw), params, z, logsnr, kw)


def xla_cost(stage: Any) -> dict[str, float]:
  """XLA's cost analysis (a dict, or a list of one dict in some jax versions)."""
  try:
    cost = stage.cost_analysis()
  except (NotImplementedError, RuntimeError):  # not every backend / version has it
    return {}
  return dict((cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else cost or {})


def _compiled_stats(lowered, compile_start: float, compile: bool = True) -> dict[str, Any]:
  """Memory, FLOPs and collectives of a lowered computation, compiled now.

  Without `compile`, only the global FLOPs of the lowered module (memory and
  collectives need XLA's partitioned, compiled program).
  """
  if not compile:
    return {"compile_seconds": 0.0, "memory": {}, "flops_per_device": 0.0,
            "flops_lowered": float(xla_cost(lowered).get("flops", 0.0)), "collectives": {}}
  compiled = lowered.compile()
  seconds = time.time() - compile_start
  mem = compiled.memory_analysis()
  memory = {}
  if mem is not None:
    memory = {k: int(getattr(mem, f"{k}_size_in_bytes", 0)) for k in
              ("argument", "output", "alias", "temp", "generated_code")}
    # live at the peak: inputs, outputs not aliased to (donated) inputs, temporaries
    memory["peak"] = memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
  return {"compile_seconds": seconds, "memory": memory,
          "flops_per_device": float(xla_cost(compiled).get("flops", 0.0)),
          "flops_lowered": float(xla_cost(lowered).get("flops", 0.0)),
          "collectives": collective_traffic(compiled.as_text())}


def planned_network(config: ml_collections.ConfigDict) -> StageNetwork:
  """The stage's network as the planner compiles it: a denoiser that chunks attention
  queries on CPU only (`attn_query_chunk` < 0) plans unchunked, as TPUs and GPUs run it."""
  network = StageNetwork.from_config(config)
  if getattr(network.model, "attn_query_chunk", 0) < 0:
    network = network.clone(attn_query_chunk=0)
  return network


def analytic_train_flops(setup: TrainSetup) -> int:
  """3x the denoiser's forward matmul FLOPs (`forward_flops`) on the training batch
  (a latent stage's autoencoder is not counted)."""
  network = setup.network
  return 3 * forward_flops(network, setup.params_shape,
                           network.network_shape(setup.shapes["video"][0]), setup.text_len)


def plan(config: ml_collections.ConfigDict, mesh_shape: Mapping[str, int],
         num_devices: int | None = None, batch_size: int | None = None, *,
         sample: SampleSettings | None = None, frame_chunk: int = 0,
         compile_sampler: bool = True, compile: bool = True, name: str = ""
         ) -> dict[str, Any]:
  """Compiles a stage's train step (and one sampler call) on abstract inputs and measures it.

  Args:
    config: a stage config (configs/base.py, tsr.py, ssr.py).
    mesh_shape: sizes of the 'data', 'fsdp' and 'tensor' axes (missing ones are 1).
    num_devices: devices to span (default: the product of the sizes); the first
      `num_devices` of `jax.devices()` are used.
    batch_size: global training batch (default: config.data.batch_size); the sampler
      call takes the same number of videos (2x that with classifier-free guidance,
      2x again with time-reversal guidance).
    sample: sampling settings (default: the config's `sample` section).
    frame_chunk: SSR: frames per sampler call (0: all frames), as the cascade runs it.
    compile_sampler: also plan the sampler's denoiser call.
    compile: compile (minutes for a large U-Net on CPU); False only lowers, which gives
      the parameters, their per-device bytes and the global FLOPs, not memory
      analysis or collectives.
    name: a label for reports (the stage's name).

  Returns:
    A dict: name, devices, mesh, batch_size, video_shape, param_count, compute_dtype,
    per_device_bytes {params, opt_state, ema_params, batch}, train {compile_seconds,
    memory {argument, output, alias, temp, generated_code, peak}, flops_per_device,
    flops_lowered, collectives}, analytic_train_flops, and `sampler` (the same
    measurements of one denoiser call, plus calls_per_sample and analytic_flops) or None.

  Raises:
    ValueError: a bad mesh, too few devices, a batch the batch axes do not divide, or a
      parameter its sharding does not divide; all before anything is compiled.
  """
  num_devices = num_devices or math.prod(check_mesh(mesh_shape).values())
  shape = check_mesh(mesh_shape, num_devices)
  available = len(jax.devices())
  if num_devices > available:
    raise ValueError(f"Planning for {num_devices} devices but JAX sees {available}; start "
                     f"Python with XLA_FLAGS=--xla_force_host_platform_device_count="
                     f"{num_devices} (or jax.config.update('jax_num_cpu_devices', "
                     f"{num_devices}) before JAX initialises its backend).")
  batch_size = int(batch_size or config.data.batch_size)
  batch_ways = shape["data"] * shape["fsdp"]
  if batch_size % batch_ways:
    raise ValueError(f"Global batch {batch_size} does not divide over the batch axes "
                     f"data x fsdp = {batch_ways}; pass a batch that is a multiple of "
                     f"{batch_ways}.")
  sample = sample or SampleSettings.from_config(config.sample)
  if frame_chunk and config.data.frames % frame_chunk:
    raise ValueError(f"frame_chunk {frame_chunk} must divide the stage's {config.data.frames} "
                     "frames.")

  mesh = sharding.make_mesh(shape, jax.devices()[:num_devices])
  setup = train_setup(config, mesh, batch_size, network=planned_network(config))
  network, shapes = setup.network, setup.shapes
  abstract_state, state_shardings, batch = setup.abstract_state, setup.state_shardings, setup.batch

  result: dict[str, Any] = {
      "name": name, "devices": num_devices, "mesh": shape, "batch_size": batch_size,
      "video_shape": shapes["video"][0],  # a denoiser without `dtype` computes in its inputs'
      "compute_dtype": str(jnp.dtype(getattr(network.model, "dtype", None) or jnp.float32)),
      "param_count": setup.param_count,
      "per_device_bytes": {
          **{k: sum(jax.tree.leaves(jax.tree_util.tree_map_with_path(
              lambda p, x, s: _shard_bytes(x, s, p), getattr(abstract_state, k),
              getattr(state_shardings, k)))) for k in ("params", "opt_state", "ema_params")},
          "batch": sum(_shard_bytes(x, x.sharding) for x in batch.values())},
  }
  result["analytic_train_flops"] = analytic_train_flops(setup)

  with nn.logical_axis_rules(setup.rules), jax.set_mesh(mesh):
    start = time.time()
    lowered = setup.step.lower(abstract_state, batch, setup.key)
    result["train"] = _compiled_stats(lowered, start, compile)
    result["sampler"] = _plan_sampler(network, config, sample, batch_size, frame_chunk,
                                      abstract_state.ema_params, state_shardings.ema_params,
                                      mesh, compile) if compile_sampler else None
  return result


def _plan_sampler(network: StageNetwork, config, sample: SampleSettings, batch_size: int,
                  frame_chunk: int, params, param_shardings, mesh, compile: bool = True
                  ) -> dict[str, Any]:
  """One denoiser call of the stage's sampler (guided: one network call on 2B)."""
  d, t = config.data, frame_chunk or config.data.frames
  text_len = config.text.max_len if network.text_dim else 0
  z, logsnr, cond = network.abstract_inputs(  # latents for a latent stage
      network.network_shape((batch_size, t, d.height, d.width, network.video_channels)),
      text_len or 1)
  shard = lambda x: jax.ShapeDtypeStruct(  # noqa: E731
      x.shape, x.dtype, sharding=sharding.batch_sharding(mesh, x.ndim))
  z, logsnr, cond = shard(z), shard(logsnr), {k: shard(v) for k, v in cond.items()}

  def denoise(params, z, logsnr, cond):
    fn = sample.guide(lambda z, logsnr, **c: network.apply(params, z, logsnr, **c),
                      cond["text"].shape if network.text_dim else None)
    return fn(z, logsnr, **cond)

  start = time.time()
  lowered = jax.jit(denoise, in_shardings=(param_shardings, None, None, None),
                    out_shardings=sharding.batch_sharding(mesh, z.ndim)).lower(
                        params, z, logsnr, cond)
  stats = _compiled_stats(lowered, start, compile)
  network_batch = sample.network_batch(batch_size, bool(network.text_dim))
  is_flow = config.diffusion.get("formulation", "vp") == "flow"  # its own samplers
  calls = (flow if is_flow else samplers).network_calls(sample.sampler, sample.num_steps)
  stats.update(
      network_batch=network_batch, guided=bool(network.text_dim) and sample.guides,
      frames_per_call=t,
      calls_per_sample=(d.frames // t) * calls,
      analytic_flops=forward_flops(network, params, (network_batch,) + z.shape[1:],
                                   text_len))
  return stats


def step_seconds(flops: float, num_devices: int, peak_flops: float, mfu: float) -> float:
  """Seconds for `flops` (global) on `num_devices` chips of `peak_flops` at `mfu`."""
  if not 0.0 < mfu <= 1.0:
    raise ValueError(f"MFU must be in (0, 1], got {mfu}.")
  return flops / (num_devices * peak_flops * mfu)


def global_train_flops(result: Mapping[str, Any]) -> float:
  """The step's model FLOPs: XLA's count of the unpartitioned step, else the analytic one."""
  return result["train"]["flops_lowered"] or float(result["analytic_train_flops"])


def mesh_str(mesh: Mapping[str, int]) -> str:
  """{'data': 8, 'fsdp': 8, 'tensor': 1} -> 'data=8,fsdp=8,tensor=1' (parse_mesh's format)."""
  return ",".join(f"{a}={s}" for a, s in mesh.items())


def _gib(n: float | None) -> str:
  return "-" if n is None else f"{n / GiB:,.0f}" if n >= 100 * GiB else f"{n / GiB:.3g}"


def _tflop(flops: float) -> str:
  return f"{flops / 1e12:,.0f}" if flops >= 1e14 else f"{flops / 1e12:.3g}"


def _seconds(s: float) -> str:
  return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def format_table(results: list[Mapping[str, Any]], mfu: float = 0.45,
                 memory_gib: float = 16.0, accelerators: tuple[str, ...] = ("tpu_v5p", "h100")
                 ) -> str:
  """A markdown table of plans: memory per device, FLOPs and step times at `mfu`.

  Step time = global train FLOPs / (devices x peak bf16 FLOP/s x mfu); "fits" compares
  the compiled step's peak per-device bytes (arguments + unaliased outputs + temps)
  with `memory_gib`.
  """
  unknown = set(accelerators) - set(ACCELERATORS)
  if unknown:
    raise ValueError(f"Unknown accelerators {sorted(unknown)}; known: {sorted(ACCELERATORS)}.")
  head = (["stage", "devices", "mesh", "batch", "params", "params+opt+EMA GiB/dev",
           "temp GiB/dev", "peak GiB/dev", f"fits {memory_gib:g} GiB", "train TFLOP/step",
           "collective GiB/dev"] + [f"step @{mfu:.0%} {a}" for a in accelerators] +
          ["sampler call TFLOP", "sampler peak GiB/dev"])
  rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in results:
    train, dev = r["train"], r["per_device_bytes"]
    state = dev["params"] + dev["opt_state"] + dev["ema_params"]
    mem, peak = train["memory"], train["memory"].get("peak")
    flops = global_train_flops(r)
    coll = sum(c["bytes"] for c in train["collectives"].values()) if mem else None
    s = r.get("sampler") or {}
    cells = [r.get("name") or "-", str(r["devices"]), mesh_str(r["mesh"]),
             str(r["batch_size"]), f"{r['param_count'] / 1e6:,.0f}M", _gib(state),
             _gib(mem.get("temp")), _gib(peak),
             "-" if not mem else "yes" if peak <= memory_gib * GiB else "no",
             _tflop(flops), _gib(coll)]
    cells += [_seconds(step_seconds(flops, r["devices"], ACCELERATORS[a], mfu))
              for a in accelerators]
    cells += [_tflop(s.get("flops_lowered") or s["analytic_flops"]) if s else "-",
              _gib(s["memory"].get("peak")) if s else "-"]
    rows.append("| " + " | ".join(cells) + " |")
  return "\n".join(rows)


def format_report(result: Mapping[str, Any], mfu: float = 0.45, memory_gib: float = 16.0
                  ) -> str:
  """A plain-text report of one plan: every measurement, with where it comes from."""
  r, train, s = result, result["train"], result.get("sampler")
  flops, mem = global_train_flops(r), train["memory"]
  sizes = lambda d: ", ".join(f"{k} {_gib(v)} GiB" for k, v in d.items())
  lines = [(f"{r.get('name') or 'stage'}: {r['devices']} devices, mesh {mesh_str(r['mesh'])}, "
            f"global batch {r['batch_size']} of {tuple(r['video_shape'][1:])} videos, "
            f"compute {r['compute_dtype']}"),
           f"  parameters           {r['param_count']:,}",
           f"  per device (shards)  {sizes(r['per_device_bytes'])}",
           (f"  FLOPs / step         global {train['flops_lowered']:.3e} (XLA, unpartitioned), "
            f"analytic {r['analytic_train_flops']:.3e}"),
           f"  step @{mfu:.0%} MFU     " + ", ".join(
               f"{a} {_seconds(step_seconds(flops, r['devices'], p, mfu))}"
               for a, p in ACCELERATORS.items()) + " (peak dense bf16)"]
  if mem:
    lines += [(f"  compiled in          {train['compile_seconds']:.1f} s; per device "
               f"{train['flops_per_device']:.3e} FLOPs (x{r['devices']} = "
               f"{train['flops_per_device'] * r['devices'] / max(flops, 1):.2f} of global)"),
              (f"  XLA memory / device  {sizes(mem)}; fits {memory_gib:g} GiB: "
               f"{mem['peak'] <= memory_gib * GiB}"),
              "  collectives / device " + ", ".join(
                  f"{k} {c['count']} ops {_gib(c['bytes'])} GiB"
                  for k, c in train["collectives"].items() if c["count"])]
  if s:
    lines += [(f"  sampler call         network batch {s['network_batch']} x "
               f"{s['frames_per_call']} frames (guided: {s['guided']}), "
               f"{s['calls_per_sample']} calls per sample; FLOPs global "
               f"{s['flops_lowered']:.3e}, analytic {s['analytic_flops']:.3e}")]
    lines += [f"    memory / device {sizes(s['memory'])}"] if s["memory"] else []
  return "\n".join(lines)
