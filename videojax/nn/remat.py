"""Rematerialisation that XLA's CPU compiler keeps.

`jax.checkpoint` marks the recomputation of the backward pass with an optimization
barrier over the saved inputs and the incoming cotangent; the GPU and TPU compilers
keep it, so each recomputation waits for its cotangent and its intermediates live for
one block's backward pass. XLA's CPU compiler drops the barrier: CSE can merge the
recomputation back into the forward pass, and the scheduler may run every
recomputation as soon as the forward pass ends, so on CPU remat saves nothing and
can cost more (tests/nn/test_remat.py). That matters beyond CPU training: the scale
planner (`videojax.train.plan`) compiles on CPU to tell what fits on a TPU or GPU.

`recompute_in_backward` keeps `jax.checkpoint`'s residuals (its `policy` decides what
is saved) but adds to each of them, before the backward pass, a zero computed from the
cotangent: the values are unchanged, but no compiler can start the recomputation
before the cotangent exists or merge it with the forward pass (whose inputs lack the
zero). It is elementwise, so every residual keeps its sharding; a `lax.cond` around
the backward pass would tie it too, but makes the SPMD partitioner gather the
parameters inside it. `remat` applies it to a Flax module on CPU and is
`flax.linen.remat` elsewhere. It halves the planned temporaries of demo-sized U-Nets,
but not of every model: the Imagen Video base's plan on 64 devices gets worse with it
(36.6 -> 150 GiB of temporaries per device; docs/findings.md).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import lift


def _zero_from(ct: Any) -> jax.Array | None:
  """A float32 zero computed from the cotangent (from one finite-masked element: exact
  for any cotangent), which no compiler folds to a constant; None when the cotangent has
  no floating-point element."""
  leaves = [x for x in jax.tree.leaves(ct)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact) and jnp.size(x)]
  if not leaves:
    return None
  first = jnp.ravel(leaves[0])[0].astype(jnp.float32)
  return jnp.where(jnp.isfinite(first), first, 0.0) * 0.0


def _tied(tree: Any, zero: jax.Array) -> Any:
  """Every floating-point leaf plus `zero`: the same values, now computed after it."""
  def tie(x):
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact):
      return x + zero.astype(x.dtype)
    return x
  return jax.tree.map(tie, tree)


def recompute_in_backward(fn: Callable, policy: Callable | None = None) -> Callable:
  """`fn` with `jax.checkpoint(fn, policy=policy)`'s gradient, recomputed just in time.

  Same values and gradients as `fn`; positional arguments only.
  """
  checkpointed = jax.checkpoint(fn, policy=policy)

  @jax.custom_vjp
  def wrapped(*args):
    return fn(*args)

  def fwd(*args):
    return jax.vjp(checkpointed, *args)  # the residuals: what `policy` saves

  def bwd(vjp_fn, ct):
    zero = _zero_from(ct)
    return vjp_fn(ct) if zero is None else _tied(vjp_fn, zero)(ct)

  wrapped.defvjp(fwd, bwd)
  return wrapped


def _lifted_recompute(fn, variables=True, rngs=True, policy=None):
  """`flax.core.lift.checkpoint` with `recompute_in_backward` in place of `jax.remat`."""

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
    def pure(variable_groups, rng_groups, *args):
      scope = scope_fn(variable_groups, rng_groups)
      y = fn(scope, *args)
      return y, repack_fn(scope)

    return recompute_in_backward(pure, policy)(variable_groups, rng_groups, *args)

  return lift.pack(inner, (variables,), (variables,), (rngs,), name="remat")


def remat(module: type[nn.Module], policy: Callable | None = None,
          backend: str | None = None) -> type[nn.Module]:
  """`flax.linen.remat(module, policy=policy)`, recomputing just in time on CPU.

  Args:
    module: the Flax module class; its `__call__` takes positional arguments only.
    policy: a `jax.checkpoint_policies` policy (None: save nothing but the inputs).
    backend: the backend to build for (None: `jax.default_backend()`).
  """
  if (backend or jax.default_backend()) != "cpu":
    return nn.remat(module, policy=policy)
  return nn.transforms.lift_transform(_lifted_recompute, module, policy=policy)
