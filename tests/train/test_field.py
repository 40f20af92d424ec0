"""Fitting a frame field on a frozen stage: the exact decomposition it rests on, the fit,
its input errors, and the command end to end on the tiny dataset."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base as base_config
from tests.train.conftest import tiny_config
from videojax.cascade import weights
from videojax.nn import denoisers
from videojax.train import field

B, L = 6, 5
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stage():
  """The tiny base config and its randomly 'trained' parameters (no field)."""
  config = base_config.get_config("tiny")
  model = denoisers.build(config.model)
  d = config.data
  z = jnp.zeros((1, d.frames, d.height, d.width, 3))
  shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
      jax.random.PRNGKey(0), z, jnp.zeros((1,)), text=jnp.zeros((1, L, 384)),
      text_mask=jnp.ones((1, L)))))
  leaves, tree = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, s.shape)
                                     for k, s in zip(keys, leaves)])
  return config, params


def _inputs(config, seed=2):
  d = config.data
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  z = jax.random.normal(k[0], (B, d.frames, d.height, d.width, 3))
  text = jax.random.normal(k[1], (B, L, 384))
  mask = jnp.ones((B, L)).at[0].set(0.0).at[1, 3:].set(0.0)  # a null and a short caption
  return z, jnp.linspace(-20.0, 2.0, B), text, mask


def _randomised_field(params, scale=0.3, seed=4):
  """The field's parameters moved off their zeros (as after fitting), FiLM output left at 0."""
  fc = params["params"][field.FIELD_MODULE]
  leaves, tree = jax.tree.flatten({k: v for k, v in fc.items() if k != field.FROZEN_PART})
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  moved = jax.tree.unflatten(tree, [v + scale * jax.random.normal(k, v.shape)
                                    for k, v in zip(keys, leaves)])
  return {**params, "params": {**params["params"],
                               field.FIELD_MODULE: {**moved, field.FROZEN_PART:
                                                    fc[field.FROZEN_PART]}}}


def test_adding_a_field_keeps_the_function_and_the_network_is_frozen_plus_field():
  config, params = _stage()
  z, ls, text, mask = _inputs(config)
  plain = denoisers.build(config.model).apply(params, z, ls, text=text, text_mask=mask)
  p, c = field.with_field(params, config)
  assert c.model.frame_field and not config.model.get("frame_field", False)  # input kept
  again, _ = field.with_field(p, c)  # a stage with a field: returned as it is
  assert again is p
  model = denoisers.build(c.model)
  np.testing.assert_allclose(model.apply(p, z, ls, text=text, text_mask=mask), plain,
                             atol=1e-5)
  p = _randomised_field(p)
  full = model.apply(p, z, ls, text=text, text_mask=mask)
  frozen, emb = field.frozen_outputs(model, p)(z, ls, text, mask)
  np.testing.assert_allclose(frozen, plain, atol=1e-5)  # no field: the original network
  added = field.field_output(model, p, emb, text, mask, z.shape)
  assert float(jnp.abs(added).mean()) > 1e-2  # the field does change the output...
  scale = max(1.0, float(jnp.abs(full).max()))
  np.testing.assert_allclose(frozen + added, full, rtol=1e-4,
                             atol=1e-5 * scale)  # ...exactly so


def test_fit_recovers_a_field_and_leaves_the_film_output_at_zero():
  """Targets made by a known field on top of the frozen network: the fit
  from zero removes most of the error, and only the field's part of the module moves."""
  config, params = _stage()
  p, c = field.with_field(params, config)
  model = denoisers.build(c.model)
  teacher = _randomised_field(p, scale=0.5, seed=7)
  z, ls, text, mask = (jnp.concatenate([a] * 4) for a in _inputs(config))
  frozen, emb = field.frozen_outputs(model, p)(z, ls, text, mask)
  target = frozen + field.field_output(model, teacher, emb, text, mask, z.shape)
  cache = {k: np.asarray(v) for k, v in dict(frozen=frozen, target=target, emb=emb, text=text,
                                             text_mask=mask).items()}
  before = float(np.mean((cache["frozen"] - cache["target"]) ** 2))
  losses = []
  fitted = field.fit(model, p, cache, steps=300, batch_size=8, learning_rate=1e-2,
                     log_every=100, log=lambda i, loss: losses.append((i, loss)))
  assert [i for i, _ in losses] == [100, 200, 300]
  pred = cache["frozen"] + field.field_output(model, fitted, cache["emb"], cache["text"],
                                              cache["text_mask"], z.shape)
  after = float(np.mean((pred - cache["target"]) ** 2))
  assert before > 1e-3 and after < 0.2 * before, (before, after)
  fc = fitted["params"][field.FIELD_MODULE]
  for leaf in jax.tree.leaves(fc[field.FROZEN_PART]):
    np.testing.assert_array_equal(leaf, 0.0)
  for name in set(p["params"]) - {field.FIELD_MODULE}:  # the network itself is untouched
    jax.tree.map(np.testing.assert_array_equal, fitted["params"][name], p["params"][name])


def test_input_errors():
  config, params = _stage()
  no_text = base_config.get_config("tiny")
  no_text.model.text_dim = 0
  with pytest.raises(ValueError, match="reads the caption"):
    field.with_field(params, no_text)
  down = base_config.get_config("tiny")
  down.model.temporal_downsample = (True,) * len(down.model.temporal_downsample)
  with pytest.raises(ValueError, match="without temporal down-sampling"):
    field.with_field(params, down)
  p, c = field.with_field(params, config)
  film = jax.tree.map(jnp.ones_like, p["params"][field.FIELD_MODULE][field.FROZEN_PART])
  trained = {"params": {**p["params"], field.FIELD_MODULE: {
      **p["params"][field.FIELD_MODULE], field.FROZEN_PART: film}}}
  with pytest.raises(ValueError, match="cannot be fitted alone"):
    field.with_field(trained, c)
  with pytest.raises(ValueError, match="floor_fraction"):
    field.draw_logsnr(np.random.default_rng(0), 4, 0.0, -1.0, 0.5, -20.0)
  levels = field.draw_logsnr(np.random.default_rng(0), 4000, -8.0, 0.0, 0.25, -20.0)
  assert abs(np.mean(levels == -20.0) - 0.25) < 0.03
  assert np.all((levels == -20.0) | ((levels >= -8.0) & (levels <= 0.0)))
  model = denoisers.build(c.model)
  with pytest.raises(ValueError, match="fewer than batch_size"):
    field.fit(model, p, {"frozen": np.zeros((3, 4, 8, 8, 3))}, steps=1, batch_size=8)


def test_fit_field_command_end_to_end(tiny_data_dir, tmp_path):
  """An exported tiny stage -> a fitted export that loads, has a field, and keeps the
  stage's network; a second run refuses to write over it before any compute."""
  config = tiny_config(tiny_data_dir, steps=1)
  _, params = _stage()
  src, out = str(tmp_path / "stage"), str(tmp_path / "fitted")
  weights.save(src, params, config, dtype="float32")
  env = dict(os.environ, VIDEOJAX_JAX_CACHE=jax.config.jax_compilation_cache_dir or "")
  cmd = [sys.executable, "-m", "experiments.fit_field", "--weights", src, "--out", out,
         "--examples=16", "--steps=3", "--batch_size=8", "--dtype=float32"]
  run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  fitted, c = weights.load(out)
  assert c.model.frame_field and c.model.frame_conditioning
  for name in params["params"]:
    jax.tree.map(np.testing.assert_array_equal, fitted["params"][name], params["params"][name])
  assert any(np.any(a != 0) for a in jax.tree.leaves(fitted["params"]["frame_cond"]["field"]))
  before = os.path.getmtime(os.path.join(out, weights.PARAMS))
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and "exists" in again.stderr
  assert "cached" not in again.stderr  # refused before any compute
  assert os.path.getmtime(os.path.join(out, weights.PARAMS)) == before
