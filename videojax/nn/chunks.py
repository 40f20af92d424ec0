"""Cache-sized pieces of work for XLA's CPU backend.

On CPU, XLA writes every intermediate of a fused op to memory: the logits of an
attention, the hidden activations of a feed-forward, and the several buffers of their
backward passes. At video sizes those are tens to hundreds of MiB, and the step then
waits on memory rather than on arithmetic. Computed a chunk of rows at a time under
`jax.checkpoint`, a chunk's intermediates stay in cache and its backward pass
recomputes them from the chunk's inputs. On CPU this makes the forward and backward
passes of temporal attention, cross-attention and feed-forwards at video sizes
2.5-4x faster (benchmarks/results/vs_diffusers.md); results equal the whole
computation's.

Accelerators fuse these ops themselves (or have kernels), so the layers use chunks
only where `on_cpu()`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

CPU_CHUNK = 2**18  # elements of the widest intermediate a chunk holds: 1 MiB in float32


def on_cpu(implementation: str | None = None) -> bool:
  """True on XLA's CPU backend when no named kernel (`implementation`) is asked for."""
  return jax.default_backend() == "cpu" and implementation is None


def rows_per_chunk(width: int) -> int:
  """Rows of a [rows, width] intermediate that fit in `CPU_CHUNK` elements (at least 1)."""
  return max(1, CPU_CHUNK // max(1, width))


def equal_chunks(length: int, size: int) -> tuple[int, int]:
  """(n, size'): n equal chunks of size' <= size rows covering `length` (the last padded)."""
  n = -(-length // max(1, min(size, length)))
  return n, -(-length // n)


def checkpointed(fn, xs: tuple[Array, ...], size: int) -> Array:
  """fn(*xs) computed `size` rows of the leading axis at a time, under `jax.checkpoint`.

  Args:
    fn: a pure function of arrays (no Flax module calls: take the parameters out
      first) that acts row by row: row i of its output depends on row i of every x.
      No convolutions: XLA's CPU backend runs their input and kernel gradients 5-20x
      slower inside a loop body than outside (`benchmarks/cpu_floor.py`), which is
      why the residual blocks are not chunked.
    xs: arrays sharing the leading axis; padded with zeros to a multiple of the chunk
      (padding rows are computed and dropped, so fn must be finite on zeros).
    size: rows per chunk (at most; the chunks are made equal).

  Returns:
    fn(*xs), rows in order.
  """
  length = xs[0].shape[0]
  n, size = equal_chunks(length, size)
  if n == 1:  # one chunk: nothing to bound, and nothing to recompute
    return fn(*xs)
  xs = [jnp.pad(x, [(0, n * size - length)] + [(0, 0)] * (x.ndim - 1)) for x in xs]
  out = jax.lax.map(jax.checkpoint(lambda a: fn(*a)),
                    [x.reshape(n, size, *x.shape[1:]) for x in xs])
  return out.reshape(n * size, *out.shape[2:])[:length]
