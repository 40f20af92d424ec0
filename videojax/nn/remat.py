"""Rematerialisation that XLA's CPU compiler keeps.

`jax.checkpoint` marks the recomputation of the backward pass with an optimization
barrier over the saved inputs and the incoming cotangent; the GPU and TPU compilers
keep it, so each recomputation waits for its cotangent and its intermediates live for
one block's backward pass. XLA's CPU compiler drops the barrier: CSE can merge the
recomputation back into the forward pass, and the scheduler may run every
recomputation as soon as the forward pass ends. Either way nothing is saved: a 16-layer
toy's gradient takes 384 MiB of temporaries with `jax.checkpoint` against 264 MiB
without it, and the U-Net's the same with remat as without (tests/nn/test_remat.py).
That matters beyond CPU training: the scale planner (`videojax.parallel.plan`)
compiles on CPU to tell what fits on a TPU or GPU.

`recompute_in_backward` keeps `jax.checkpoint`'s residuals (its `policy` decides what
is saved) but runs the backward pass inside a `lax.cond` whose predicate reads the
cotangent; both branches are that backward pass, so the result is the same whatever
the predicate, and no compiler can start the recomputation before the cotangent exists
or merge it with the forward pass. `remat` applies it to a Flax module on CPU and is
`flax.linen.remat` elsewhere.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import lift

_UNLIKELY_BITS = 0x7FC00001  # a NaN payload: the predicate is True for every real value


def _opaque_true(ct: Any) -> jax.Array | None:
  """A bool that is True for any cotangent but that a compiler cannot fold, or None when
  the cotangent has no floating-point element to read."""
  leaves = [x for x in jax.tree.leaves(ct)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact) and jnp.size(x)]
  if not leaves:
    return None
  first = jnp.ravel(leaves[0])[0].astype(jnp.float32)
  return jax.lax.bitcast_convert_type(first, jnp.int32) != _UNLIKELY_BITS


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
    pred = _opaque_true(ct)
    if pred is None:
      return vjp_fn(ct)
    backward = lambda f, c: f(c)  # noqa: E731
    return jax.lax.cond(pred, backward, backward, vjp_fn, ct)

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
