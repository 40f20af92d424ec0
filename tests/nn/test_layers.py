"""Factorized space-time layers: identity initialisation, independence, FiLM."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.nn import layers as L

X = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 4, 8))  # [B, T, H, W, C]


def _randomise(variables, seed=1):
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, l.shape)
                                   for k, l in zip(keys, leaves)])


def test_temporal_conv_starts_as_identity_and_mixes_neighbours_only():
  layer = L.TemporalConv(8)
  variables = layer.init(jax.random.PRNGKey(0), X)
  np.testing.assert_array_equal(layer.apply(variables, X), X)
  trained = _randomise(nn.meta.unbox(variables))
  y = layer.apply(trained, X)
  assert not np.allclose(y, X)
  # A 3x1x1 kernel: frame 0's output sees frames 0 and 1 only, and no other pixel.
  x2 = X.at[:, 3].add(1.0).at[:, 0, 1, 1].add(1.0)
  y2 = layer.apply(trained, x2)
  np.testing.assert_allclose(y2[:, 0, 0], y[:, 0, 0], atol=1e-6)
  assert not np.allclose(y2[:, 2], y[:, 2])


def test_temporal_conv_bypassed_for_images():
  layer = L.TemporalConv(8)
  trained = _randomise(nn.meta.unbox(layer.init(jax.random.PRNGKey(0), X)))
  is_image = jnp.array([True, False])
  y = layer.apply(trained, X, is_image)
  np.testing.assert_array_equal(y[0], X[0])
  np.testing.assert_allclose(y[1], layer.apply(trained, X)[1], atol=1e-6)


def test_film_identity_at_init_then_affine():
  film = L.FiLM()
  emb = jax.random.normal(jax.random.PRNGKey(2), (2, 6))
  variables = film.init(jax.random.PRNGKey(0), X, emb)
  np.testing.assert_array_equal(film.apply(variables, X, emb), X)
  trained = _randomise(nn.meta.unbox(variables))
  y = film.apply(trained, X, emb)
  # Per example and channel one scale and one shift, the same at every (t, h, w).
  scale = film.apply(trained, X + 1.0, emb) - y  # [B, T, H, W, C], = 1 + s
  shift = y - scale * X
  for q in (scale, shift):
    np.testing.assert_allclose(q, jnp.broadcast_to(q[:, :1, :1, :1], q.shape), atol=1e-5)
  assert not np.allclose(scale, 1.0) and not np.allclose(shift, 0.0)


def test_per_frame_and_conv_axes():
  conv = L.conv3d(4, (1, 3, 3))
  variables = conv.init(jax.random.PRNGKey(0), X)
  spec = nn.get_partition_spec(variables)["params"]["kernel"]
  assert tuple(spec) == L.CONV_AXES
  y = L.per_frame(lambda f: f.sum(axis=(1, 2)), X)
  np.testing.assert_allclose(y, X.sum(axis=(2, 3)), rtol=1e-6)


def test_temporal_conv_channel_error():
  with pytest.raises(ValueError, match="TemporalConv has 4 channels, input has 8"):
    L.TemporalConv(4).init(jax.random.PRNGKey(0), X)


@pytest.mark.parametrize("kernel,strides,padding", [
    ((1, 3, 3), (1, 1, 1), "SAME"), ((1, 3, 3), (1, 2, 2), "SAME"),  # spatial: 2-D path
    ((3, 1, 1), (1, 1, 1), ((2, 0), (0, 0), (0, 0))),  # temporal, causal: 2-D path
    ((3, 1, 1), (1, 1, 1), ((1, 1), (0, 0), (0, 0))),
    ((3, 3, 3), (2, 2, 2), "SAME"), ((1, 1, 1), (1, 1, 1), "SAME")])  # 3-D op; 1x1x1
def test_factorized_conv_equals_flax_conv(kernel, strides, padding):
  # Conv runs factorized kernels as 2-D convolutions; with the same parameters it must
  # compute what flax's 3-D nn.Conv computes.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8, 6, 4))
  ref = nn.Conv(7, kernel, strides=strides, padding=padding)
  params = ref.init(jax.random.PRNGKey(1), x)
  ours = L.Conv(7, kernel, strides=strides, padding=padding)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == \
      jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)


def test_temporal_conv_stack_identity_receptive_field_and_images():
  layer = L.TemporalConv(8, layers=3, groups=4)
  variables = layer.init(jax.random.PRNGKey(0), X)
  np.testing.assert_array_equal(layer.apply(variables, X), X)  # only the last conv is zero
  params = nn.meta.unbox(variables)["params"]
  assert sorted(params) == ["Conv_0", "Conv_1", "Conv_2", "GroupNorm_0", "GroupNorm_1"]
  np.testing.assert_array_equal(params["Conv_2"]["kernel"], 0.0)
  assert float(jnp.abs(params["Conv_0"]["kernel"]).sum()) > 0
  trained = _randomise(nn.meta.unbox(variables))
  y = layer.apply(trained, X)
  # Three 3x1x1 convs reach 3 frames each way: frame 0 sees frames 0-3, not frame 4.
  # (The per-frame GroupNorm keeps it so; a norm over T would not.)
  np.testing.assert_allclose(layer.apply(trained, X.at[:, 4].add(1.0))[:, 0], y[:, 0],
                             atol=1e-5)
  assert not np.allclose(layer.apply(trained, X.at[:, 3].add(1.0))[:, 0], y[:, 0], atol=1e-3)
  # Causal: frame 2 sees only frames <= 2.
  causal = L.TemporalConv(8, layers=3, groups=4, causal=True)
  yc = causal.apply(trained, X)
  np.testing.assert_allclose(causal.apply(trained, X.at[:, 3:].add(1.0))[:, :3], yc[:, :3],
                             atol=1e-5)
  y_img = layer.apply(trained, X, jnp.array([True, False]))
  np.testing.assert_array_equal(y_img[0], X[0])
  np.testing.assert_allclose(y_img[1], y[1], atol=1e-6)
  with pytest.raises(ValueError, match="at least one layer, got layers=0"):
    L.TemporalConv(8, layers=0).init(jax.random.PRNGKey(0), X)


def test_one_layer_temporal_conv_keeps_its_parameters():
  # Shipped weights name the single conv 'Conv_0' with no norm: layers=1 must keep that.
  params = nn.meta.unbox(L.TemporalConv(8).init(jax.random.PRNGKey(0), X))["params"]
  assert sorted(params) == ["Conv_0"]


def test_feed_forward_is_identity_at_init_then_geglu_per_token():
  ff = L.FeedForward(mult=2)
  variables = ff.init(jax.random.PRNGKey(0), X)
  np.testing.assert_array_equal(ff.apply(variables, X), X)
  p = _randomise(nn.meta.unbox(variables))["params"]
  assert p["value_kernel"].shape == p["gate_kernel"].shape == (8, 16)
  assert p["out_kernel"].shape == (16, 8)
  y = ff.apply({"params": p}, X)
  # Closed form: x + W_out (a * gelu(g)) + b_out with a, g = W_value, W_gate LN(x) + b.
  mu, var = X.mean(-1, keepdims=True), X.var(-1, keepdims=True)
  ln = (X - mu) / jnp.sqrt(var + 1e-6) * p["norm_scale"] + p["norm_bias"]
  a = ln @ p["value_kernel"] + p["value_bias"]
  g = ln @ p["gate_kernel"] + p["gate_bias"]
  want = X + (a * jax.nn.gelu(g)) @ p["out_kernel"] + p["out_bias"]
  np.testing.assert_allclose(y, want, atol=1e-4)
  # Per token: changing one (t, h, w) position changes the output there only.
  y2 = ff.apply({"params": p}, X.at[1, 2, 3, 0].add(1.0))
  changed = np.argwhere(np.any(np.abs(np.asarray(y2 - y)) > 1e-6, axis=-1))
  np.testing.assert_array_equal(changed, [[1, 2, 3, 0]])


def test_feed_forward_in_cpu_chunks_equals_whole(monkeypatch):
  from videojax.nn import chunks

  ff = L.FeedForward(mult=2)
  p = _randomise(nn.meta.unbox(ff.init(jax.random.PRNGKey(0), X)))
  loss = lambda p, x: jnp.sum(jnp.sin(ff.apply(p, x)))  # noqa: E731
  want, g_want = loss(p, X), jax.grad(loss, argnums=(0, 1))(p, X)
  monkeypatch.setattr(chunks, "CPU_CHUNK", 16 * 7)  # 7 tokens a chunk: 160 = 23 x 7 - 1
  assert "while" in jax.jit(lambda p, x: ff.apply(p, x)).lower(p, X).as_text()
  got, g_got = loss(p, X), jax.grad(loss, argnums=(0, 1))(p, X)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # Logical axes on every parameter (the sharding rules name them).
  specs = nn.get_partition_spec(ff.init(jax.random.PRNGKey(0), X))["params"]
  assert tuple(specs["value_kernel"]) == ("embed", "mlp")
  assert tuple(specs["out_kernel"]) == ("mlp", "embed")
