"""Rematerialisation: the same values and gradients as without it, only the inputs (or
what the policy names) saved for the backward pass, which recomputes the rest, and fewer
temporaries in the compiled gradient than without remat."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals
from jax.extend.core import ClosedJaxpr, Jaxpr

from configs import unet3d as unet_configs
from videojax.nn.remat import recompute_in_backward, remat
from videojax.nn.unet3d import UNet3D

FULL = None  # jax.checkpoint's default policy: save nothing but the inputs
SAVE_DOTS = jax.checkpoint_policies.dots_with_no_batch_dims_saveable


def _layer(x, w):  # three [1024, 256] products, each through a tanh
  return jnp.tanh(jnp.tanh(jnp.tanh(x @ w) @ w) @ w)


def _stack(layer):
  def loss(ws, x):
    for w in ws:
      x = layer(x, w)
    return jnp.sum(x**2)
  return loss


WS = [jax.random.normal(jax.random.PRNGKey(i), (256, 256)) * 0.05 for i in range(8)]
X = jax.random.normal(jax.random.PRNGKey(9), (1024, 256))


def _temp_bytes(fn, *args):
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("policy", [FULL, SAVE_DOTS])
def test_gradient_equals_the_plain_one(policy):
  ref = jax.jit(jax.value_and_grad(_stack(_layer)))(WS, X)
  got = jax.jit(jax.value_and_grad(_stack(recompute_in_backward(_layer, policy))))(WS, X)
  np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
  for g, r in zip(got[1], ref[1]):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def _saved(capsys, fn, *args):
  """The residuals `fn`'s gradient keeps: ('f32[1024,256]', 'from the argument x' or
  'output of tanh from ...'), as `jax.ad_checkpoint.print_saved_residuals` lists them."""
  capsys.readouterr()
  print_saved_residuals(fn, *args)
  return [tuple(line.split(" ", 1)) for line in capsys.readouterr().out.splitlines() if line]


def _count(jaxpr, primitive):
  """Equations of `primitive` in `jaxpr` and every program nested in it."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == primitive
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, ClosedJaxpr):
          sub = sub.jaxpr
        if isinstance(sub, Jaxpr):
          n += _count(sub, primitive)
  return n


def test_saves_what_the_policy_names_and_recomputes_the_rest(capsys):
  """One layer `tanh(tanh(tanh(x w) w) w)`: without remat its gradient keeps the tanh
  outputs; under the default policy only the arguments x and w; with `SAVE_DOTS` the
  arguments and the three products. The tanhs not kept are evaluated again."""
  x, w = X, WS[0]
  plain = _saved(capsys, _layer, x, w)
  assert sum(source.startswith("output of tanh") for _, source in plain) == 3, plain
  full = _saved(capsys, recompute_in_backward(_layer), x, w)
  assert [kind for kind, _ in full] == ["f32[1024,256]", "f32[256,256]"], full
  assert all(source.startswith("from the argument") for _, source in full), full
  dots = _saved(capsys, recompute_in_backward(_layer, SAVE_DOTS), x, w)
  computed = sorted(source.split()[2] for _, source in dots
                    if not source.startswith("from the argument"))
  assert computed == ["dot_general"] * 3 and len(dots) == 5, dots

  def tanhs(layer):  # tanh evaluations in the program of the gradient
    return _count(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(layer(x, w))))(x).jaxpr, "tanh")
  assert tanhs(_layer) == 3
  for policy in (FULL, SAVE_DOTS):
    assert tanhs(recompute_in_backward(_layer, policy)) == 6, policy


def test_recomputing_lowers_the_compiled_temporaries():
  """Eight layers of three products: without remat the compiled gradient holds every
  layer's intermediates; recomputing just in time holds the eight layers' inputs and
  about one layer's worth at a time."""
  if jax.default_backend() != "cpu":
    pytest.skip("measured on the CPU compiler, where the tests run")
  grad = lambda layer: jax.grad(_stack(layer))  # noqa: E731
  plain = _temp_bytes(grad(_layer), WS, X)
  ours = _temp_bytes(grad(recompute_in_backward(_layer)), WS, X)
  activation = X.size * 4
  assert ours < plain / 2 and ours <= (len(WS) + 6) * activation, (plain, ours)


class _Block(nn.Module):
  @nn.compact
  def __call__(self, x, flag):
    y = nn.Dense(x.shape[-1])(jnp.tanh(x))
    y = nn.Dropout(0.5, deterministic=False)(y)
    return x + jnp.where(flag[:, None], y, 0.0)


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_flax_module_with_dropout_rngs_and_a_bool_argument(backend, capsys):
  """The lifted transform, as built for each backend: same parameters, values and
  gradients as the bare module, the dropout mask drawn from the same rng stream in the
  recomputation, and no activation kept for the backward pass."""
  x, flag = jnp.ones((4, 8)), jnp.array([True, False, True, True])
  bare, lifted = _Block(), remat(_Block, backend=backend)()
  rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
  params = bare.init(rngs, x, flag)
  assert jax.tree.structure(lifted.init(rngs, x, flag)) == jax.tree.structure(params)

  def loss(model, p):
    return jnp.sum(model.apply(p, x, flag, rngs={"dropout": jax.random.PRNGKey(2)})**3)
  ref = jax.value_and_grad(lambda p: loss(bare, p))(params)
  got = jax.value_and_grad(lambda p: loss(lifted, p))(params)
  np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
  for g, r in zip(jax.tree.leaves(got[1]), jax.tree.leaves(ref[1])):
    np.testing.assert_allclose(g, r, rtol=1e-5)

  def kept(model):  # [B, D]-shaped residuals computed in the forward pass
    run = lambda p, x: model.apply(p, x, flag, rngs={"dropout": jax.random.PRNGKey(2)})  # noqa
    return [s for kind, s in _saved(capsys, run, params, x)
            if kind.endswith("[4,8]") and not s.startswith("from the argument")]
  assert len(kept(bare)) >= 3  # tanh(x), the dropout mask, ...
  assert kept(lifted) == []


def test_unet_remat_lowers_the_compiled_temporaries():
  """The U-Net's `remat='full'`: its compiled gradient's temporaries drop by more than
  half (about two thirds at this size)."""
  if jax.default_backend() != "cpu":
    pytest.skip("measured on the CPU compiler, where the tests run")
  tiny = unet_configs.get_config("tiny").model.to_dict()
  z, logsnr = jnp.zeros((4, 4, 16, 16, 3)), jnp.zeros((4,))
  text, mask = jnp.zeros((4, 5, 12)), jnp.ones((4, 5), bool)

  def temp(policy):
    model = UNet3D(**{**tiny, "remat": policy})
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, logsnr, text=text,
                                               text_mask=mask))
    loss = lambda p: jnp.mean(model.apply(p, z, logsnr, text=text, text_mask=mask)**2)  # noqa
    return _temp_bytes(jax.grad(loss), params)

  none, full = temp("none"), temp("full")
  assert full < none / 2, (none, full)
