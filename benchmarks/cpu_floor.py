r"""What XLA's CPU kernels reach on the operations of the size-2 training step.

  python -m benchmarks.cpu_floor [--repeats 5] [--out benchmarks/results/cpu_floor.md]

The side-by-side benchmark (`benchmarks.vs_diffusers`) times whole steps. This one
times the kinds of operation the size-2 step is made of, at its shapes, forward plus
backward where the step differentiates them, and reports each one's rate (GFLOP/s:
2 per multiply-add, the backward counted as twice the forward) and how many of the
cores it kept busy (process CPU time / wall time). All rows are timed in rounds (one
run of each row per round) and the table gives medians, so that the machine's drift
hits every row alike.

Rows:
  - matmul: a 2048^3 float32 matrix product, the machine's reference rate.
  - attention: `chunked_attention` on CPU (the FlashAttention recurrence per frame and
    head) at level 0 of size 2: 16 frames of 64 x 64 positions, 4 heads of width 8.
  - attention dot: the forward's inner product alone, [128, 8] x [8, 4096], 2048 times
    in a loop (one layer's worth).
  - exp: the forward's exponentials alone, [128, 4096], 2048 times in a loop.
  - conv: the residual blocks' 1x3x3 convolutions (C -> C) at each level of size 2,
    16 frames at 64 x 64 (32 channels), 32 x 32 (64) and 16 x 16 (128).
  - conv grads in a loop: the 32-channel one's input and kernel gradients computed two
    frames at a time in `lax.map` (as `videojax.nn.chunks.checkpointed` would): XLA's
    CPU backend runs these gradient convolutions far slower inside a loop body, which
    is why the residual blocks are not chunked.
  - dense: a 4x feed-forward's first projection on 65536 tokens of width 32.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from videojax.nn.attention import chunked_attention

Array = jax.Array
FRAMES = 16
BLOCKS = 2048  # query blocks of 128 in one level-0 attention layer: 16 x 4 x 32


def _conv(x: Array, k: Array) -> Array:
  return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO",
                                                                           "NHWC"))


def _rows() -> dict[str, tuple]:
  """name -> (jitted fn, args, GFLOP per call)."""
  keys = iter(jax.random.split(jax.random.PRNGKey(0), 32))
  normal = lambda *shape: jax.random.normal(next(keys), shape)  # noqa: E731
  rows = {}
  a = normal(2048, 2048)
  rows["matmul 2048^3"] = (jax.jit(lambda a: a @ a), (a,), 2 * 2048**3 / 1e9)

  s, length, heads, d = FRAMES, 64 * 64, 4, 8
  q, k, v, g = (normal(s, length, heads, d) for _ in range(4))
  fwd_flops = 4 * s * heads * length * length * d / 1e9  # two products of 2 L K D
  rows["attention fwd"] = (jax.jit(lambda q, k, v: chunked_attention(q, k, v, -1)),
                           (q, k, v), fwd_flops)
  rows["attention fwd+bwd"] = (jax.jit(jax.grad(
      lambda q, k, v: jnp.sum(chunked_attention(q, k, v, -1) * g), argnums=(0, 1, 2))),
      (q, k, v), 3 * fwd_flops)
  qc, kk = normal(128, d), normal(length, d)
  rows["attention dot [128,8]x[8,4096] x2048"] = (jax.jit(lambda qc, kk: lax.fori_loop(
      0, BLOCKS, lambda i, acc: acc + jnp.dot(qc + acc[0, :d], kk.T)[:, :d],
      jnp.zeros((128, d)))), (qc, kk), BLOCKS * 2 * 128 * length * d / 1e9)
  rows["exp [128,4096] x2048"] = (jax.jit(lambda x: lax.fori_loop(
      0, BLOCKS, lambda i, acc: acc + jnp.exp(acc * 1e-9 - 1.0), x)),
      (jnp.zeros((128, length)),), 0.0)

  for side, c in ((64, 32), (32, 64), (16, 128)):
    x, kern = normal(FRAMES, side, side, c), normal(3, 3, c, c) * 0.05
    gy = normal(FRAMES, side, side, c)  # the output's cotangent
    flops = 2 * FRAMES * side * side * c * c * 9 / 1e9
    rows[f"conv 1x3x3 {c}ch {side}x{side} fwd"] = (jax.jit(_conv), (x, kern), flops)
    rows[f"conv 1x3x3 {c}ch {side}x{side} fwd+bwd"] = (jax.jit(jax.grad(
        lambda x, k, gy=gy: jnp.sum(_conv(x, k) * gy), argnums=(0, 1))), (x, kern), 3 * flops)
    if c == 32:
      pairs = lambda t: t.reshape(FRAMES // 2, 2, *t.shape[1:])  # noqa: E731
      rows["conv 32ch grads, whole"] = (jax.jit(lambda x, k, gy=gy: jax.vjp(
          _conv, x, k)[1](gy)), (x, kern), 2 * flops)
      rows["conv 32ch grads, lax.map of 2 frames"] = (jax.jit(lambda x, k, gy=gy: lax.map(
          lambda a: jax.vjp(_conv, a[0], k)[1](a[1]), (pairs(x), pairs(gy)))),
          (x, kern), 2 * flops)

  tokens, w = normal(65536, 32), normal(32, 128)
  gd = normal(65536, 128)
  rows["dense [65536,32]x[32,128] fwd+bwd"] = (jax.jit(jax.grad(
      lambda t, w: jnp.sum((t @ w) * gd), argnums=(0, 1))), (tokens, w),
      3 * 2 * 65536 * 32 * 128 / 1e9)
  return rows


def measure(repeats: int) -> dict[str, dict[str, float]]:
  """name -> {'seconds': median wall, 'cores': median CPU / wall, 'gflops': per call}."""
  rows = _rows()
  for fn, args, _ in rows.values():  # compile and warm up
    jax.block_until_ready(fn(*args))
  samples = {name: [] for name in rows}
  for _ in range(repeats):
    for name, (fn, args, _) in rows.items():
      cpu, start = time.process_time(), time.perf_counter()
      jax.block_until_ready(fn(*args))
      wall = time.perf_counter() - start
      samples[name].append((wall, (time.process_time() - cpu) / wall))
  return {name: {"seconds": statistics.median(w for w, _ in got),
                 "cores": statistics.median(c for _, c in got),
                 "gflops": rows[name][2]} for name, got in samples.items()}


def table(results: dict[str, dict[str, float]]) -> str:
  lines = ["| operation | ms per call | GFLOP per call | GFLOP/s | cores busy |",
           "|---|---|---|---|---|"]
  for name, r in results.items():
    rate = f"{r['gflops'] / r['seconds']:.1f}" if r["gflops"] else "-"
    lines.append(f"| {name} | {1e3 * r['seconds']:.1f} | {r['gflops']:.2f} | {rate} | "
                 f"{r['cores']:.2f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  text = (f"jax {jax.__version__} ({jax.default_backend()}), {os.cpu_count()} CPU threads on "
          f"{platform.processor() or platform.machine()}; medians of {args.repeats} rounds.\n\n"
          + table(measure(args.repeats)))
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write("# XLA CPU: rates on the size-2 step's operations\n\n```\npython -m "
              f"benchmarks.cpu_floor --repeats {args.repeats} --out {args.out}\n```\n\n"
              + text + "\n")


if __name__ == "__main__":
  main()
