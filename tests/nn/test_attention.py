"""Spatial / temporal / cross attention blocks of the video U-Net.

Dependence tests randomise every parameter first (the output projections start at
zero, which would make each block the identity and every such test pass trivially).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.nn.attention import (CrossAttention, SpatialAttention, TemporalAttention,
                                   relative_position_bucket)

B, T, H, W, C = 2, 4, 3, 3, 8
L, D_TEXT = 5, 6


def _video(seed: int = 0, shape=(B, T, H, W, C)) -> jax.Array:
  return jax.random.normal(jax.random.PRNGKey(seed), shape)  # [B, T, H, W, C]


def _text(seed: int = 1) -> tuple[jax.Array, jax.Array]:
  emb = jax.random.normal(jax.random.PRNGKey(seed), (B, L, D_TEXT))  # [B, L, D_text]
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)  # [B, L]
  return emb, mask


def _randomize(params, seed: int = 7, scale: float = 0.4):
  """Every parameter replaced by N(0, scale^2) (norm scales by 1 + noise)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  new = [jnp.asarray(l) + scale * jax.random.normal(k, l.shape, l.dtype)
         for l, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, new)


def _setup(model, *args, randomize: bool = True):
  """init, unbox, optionally randomise; returns (params, jitted apply)."""
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), *args))
  if randomize:
    params = _randomize(params)
  return params, jax.jit(model.apply)


MODELS = {
    "spatial": (lambda **kw: SpatialAttention(num_heads=2, norm_groups=4, **kw),
                lambda x: (x,)),
    "temporal": (lambda **kw: TemporalAttention(head_dim=4, num_buckets=8, max_distance=16, **kw),
                 lambda x: (x, jnp.array([True, False]))),
    "cross": (lambda **kw: CrossAttention(num_heads=2, **kw), lambda x: (x, *_text())),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_fresh_block_is_identity_and_perturbed_is_not(name):
  make, args = MODELS[name]
  x = _video()
  model = make()
  params, apply = _setup(model, *args(x), randomize=False)
  out = apply(params, *args(x))
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_array_equal(out, x)  # zero-initialised output projection
  out2 = apply(_randomize(params), *args(x))
  assert out2.shape == x.shape and out2.dtype == x.dtype
  assert np.abs(np.asarray(out2 - x)).max() > 1e-2


def test_spatial_frames_are_independent():
  model = SpatialAttention(head_dim=4, norm_groups=2)
  x = _video()
  params, apply = _setup(model, x)
  x2 = x.at[:, 2].add(jax.random.normal(jax.random.PRNGKey(3), (B, H, W, C)))
  out, out2 = apply(params, x), apply(params, x2)
  diff = np.abs(np.asarray(out2 - out)).max(axis=(2, 3, 4))  # [B, T]
  np.testing.assert_array_equal(np.delete(diff, 2, axis=1), 0.0)
  assert (diff[:, 2] > 1e-3).all()  # within the frame, pixels do interact
  # and pixel (0, 0) depends on pixel (1, 1) of its frame
  x3 = x.at[:, :, 1, 1].add(1.0)
  assert np.abs(np.asarray(apply(params, x3)[:, :, 0, 0] - out[:, :, 0, 0])).min() > 1e-5


@pytest.mark.parametrize("causal", [True, False])
def test_temporal_causal_mask(causal):
  model = TemporalAttention(num_heads=2, causal=causal, num_buckets=8, max_distance=16)
  x = _video()
  params, apply = _setup(model, x)
  x2 = x.at[:, 2:].add(jax.random.normal(jax.random.PRNGKey(4), (B, T - 2, H, W, C)))
  out, out2 = apply(params, x), apply(params, x2)
  early = np.abs(np.asarray(out2[:, :2] - out[:, :2])).max()
  if causal:
    assert early == 0.0  # frames 0, 1 do not see frames 2, 3
  else:
    assert early > 1e-3  # the same test fails without the causal mask
  assert np.abs(np.asarray(out2[:, 2:] - out[:, 2:])).min() > 0


def test_temporal_is_image_makes_frames_independent():
  model = TemporalAttention(num_heads=2, num_buckets=8, max_distance=16)
  x = _video()
  is_image = jnp.array([True, False])
  params, apply = _setup(model, x, is_image)
  x2 = x.at[:, 1].add(jax.random.normal(jax.random.PRNGKey(5), (B, H, W, C)))
  out, out2 = apply(params, x, is_image), apply(params, x2, is_image)
  others = [0, 2, 3]
  image_diff = np.abs(np.asarray(out2[0, others] - out[0, others])).max()
  video_diff = np.abs(np.asarray(out2[1, others] - out[1, others])).min()
  assert image_diff == 0.0
  assert video_diff > 0.0
  # the image example's output per frame equals running that frame alone as a T=1 video
  single = apply(params, x[:1, 2:3], jnp.array([False]))
  np.testing.assert_allclose(single[0, 0], out[0, 2], atol=1e-5)


def test_temporal_pixels_are_independent():
  model = TemporalAttention(num_heads=2, num_buckets=8, max_distance=16)
  x = _video()
  params, apply = _setup(model, x)
  x2 = x.at[:, :, 1, 2].add(1.0)
  delta = np.abs(np.asarray(apply(params, x2) - apply(params, x)))  # [B, T, H, W, C]
  changed = delta.max(axis=(0, 1, 4)) > 0  # [H, W]
  expected = np.zeros((H, W), bool)
  expected[1, 2] = True
  np.testing.assert_array_equal(changed, expected)


def test_relative_position_bucket_known_values():
  # bidirectional, 8 buckets (4 a side), max_exact 2, max_distance 16.
  # n = q - k; large n: 2 + int(log(n / 2) / log(8) * 2), capped at 3; keys after the
  # query (rel > 0) get an offset of 4.
  rel = jnp.array([0, -1, -2, -3, -7, -8, -100, 1, 2, 3, 8, 100])
  want = [0, 1, 2, 2, 3, 3, 3, 5, 6, 6, 7, 7]
  got = relative_position_bucket(rel, bidirectional=True, num_buckets=8, max_distance=16)
  np.testing.assert_array_equal(got, want)
  # causal: 8 one-sided buckets, max_exact 4; future keys collapse to bucket 0.
  rel = jnp.array([0, 5, -1, -3, -4, -6, -9, -15, -100])
  want = [0, 0, 1, 3, 4, 5, 6, 7, 7]
  got = relative_position_bucket(rel, bidirectional=False, num_buckets=8, max_distance=16)
  np.testing.assert_array_equal(got, want)


def test_cross_attention_ignores_padding_and_handles_empty_text():
  model = CrossAttention(num_heads=2)
  x = _video()
  emb, mask = _text()
  params, apply = _setup(model, x, emb, mask)
  out = apply(params, x, emb, mask)
  emb2 = emb.at[0, 3:].set(100.0)  # padding of example 0
  np.testing.assert_array_equal(apply(params, x, emb2, mask), out)
  emb3 = emb.at[0, 1].add(1.0)  # a real token does matter
  assert np.abs(np.asarray(apply(params, x, emb3, mask)[0] - out[0])).max() > 1e-4
  empty = mask.at[0].set(False)
  out_empty = apply(params, x, emb2, empty)
  assert np.isfinite(np.asarray(out_empty)).all()
  np.testing.assert_array_equal(out_empty[0], x[0])  # adds nothing without text
  np.testing.assert_array_equal(out_empty[1], out[1])


def _layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _lin(x, p):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _softmax_attend(q, k, v, logits_extra, mask):
  """q [..., Tq, N, D], k/v [..., Tk, N, D]; extra/mask broadcast to [..., N, Tq, Tk]."""
  logits = np.einsum("...qnd,...knd->...nqk", q, k) / np.sqrt(q.shape[-1]) + logits_extra
  logits = np.where(mask, logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p = p / p.sum(-1, keepdims=True)
  return np.einsum("...nqk,...knd->...qnd", p, v)


def test_temporal_matches_naive_reference():
  n_heads = 2
  model = TemporalAttention(num_heads=n_heads, num_buckets=8, max_distance=16)
  x = _video()
  is_image = jnp.array([True, False])
  params, apply = _setup(model, x, is_image)
  out = np.asarray(apply(params, x, is_image), np.float64)

  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  xn = np.asarray(x, np.float64).transpose(0, 2, 3, 1, 4)  # [B, H, W, T, C]
  y = _layer_norm(xn, p["norm"])
  split = lambda a: a.reshape(*a.shape[:-1], n_heads, C // n_heads)
  q, k, v = (split(_lin(y, p[name])) for name in ("query", "key", "value"))
  pos = np.arange(T)
  buckets = np.asarray(relative_position_bucket(pos[None] - pos[:, None], num_buckets=8,
                                                max_distance=16))
  bias = p["rel_bias"][buckets].transpose(2, 0, 1)  # [N, T, T]
  mask = np.stack([np.eye(T, dtype=bool), np.ones((T, T), bool)])  # [B, T, T]
  o = _softmax_attend(q, k, v, bias, mask[:, None, None, None])  # [B, H, W, T, N, D]
  o = _lin(o.reshape(*o.shape[:-2], C), p["out"])
  want = np.asarray(x, np.float64) + o.transpose(0, 3, 1, 2, 4)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_cross_matches_naive_reference():
  n_heads = 2
  model = CrossAttention(num_heads=n_heads)
  x = _video()
  emb, mask = _text()
  params, apply = _setup(model, x, emb, mask)
  out = np.asarray(apply(params, x, emb, mask), np.float64)

  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  split = lambda a: a.reshape(*a.shape[:-1], n_heads, C // n_heads)
  y = _layer_norm(np.asarray(x, np.float64).reshape(B, T * H * W, C), p["norm"])
  q = split(_lin(y, p["query"]))
  e = np.asarray(emb, np.float64)
  k, v = split(_lin(e, p["key"])), split(_lin(e, p["value"]))
  o = _softmax_attend(q, k, v, 0.0, np.asarray(mask)[:, None, None, :])
  o = _lin(o.reshape(B, T * H * W, C), p["out"])
  want = np.asarray(x, np.float64) + o.reshape(B, T, H, W, C)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_bfloat16_compute_close_to_float32(name):
  make, args = MODELS[name]
  x = _video()
  params, apply32 = _setup(make(), *args(x))
  out32 = apply32(params, *args(x))
  out16 = jax.jit(make(dtype=jnp.bfloat16).apply)(params, *args(x))
  assert out16.dtype == x.dtype  # the residual stream keeps the input dtype
  assert np.isfinite(np.asarray(out16)).all()
  err = np.abs(np.asarray(out16 - out32)).max()
  scale = np.abs(np.asarray(out32 - x)).max()
  assert err < 0.1 * scale, (err, scale)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_parameter_has_logical_axes(name):
  make, args = MODELS[name]
  x = _video()
  variables = make().init(jax.random.PRNGKey(0), *args(x))
  specs = nn.get_partition_spec(variables)["params"]
  flat = jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))[0]
  n_params = len(jax.tree.leaves(nn.meta.unbox(variables)))
  assert len(flat) == n_params
  for path, spec in flat:
    assert isinstance(spec, jax.sharding.PartitionSpec), path
    assert any(a is not None for a in spec), (path, spec)
  if name == "temporal":
    assert specs["rel_bias"] == jax.sharding.PartitionSpec("relpos_buckets", "heads")
    assert variables["params"]["rel_bias"].value.shape == (8, 2)
  assert specs["query"]["kernel"] == jax.sharding.PartitionSpec("embed", "heads")
  assert specs["out"]["kernel"] == jax.sharding.PartitionSpec("heads", "embed")


def test_error_messages():
  key = jax.random.PRNGKey(0)
  x = _video()
  with pytest.raises(ValueError, match=r"rank 5 \[B, T, H, W, C\], got shape \(2, 3, 3, 8\)"):
    SpatialAttention(num_heads=2, norm_groups=4).init(key, x[:, 0])
  with pytest.raises(ValueError, match=r"multiple of num_heads=3, got 8 channels"):
    TemporalAttention(num_heads=3).init(key, x)
  with pytest.raises(ValueError, match=r"multiple of head_dim=3, got 8 channels"):
    SpatialAttention(head_dim=3, norm_groups=4).init(key, x)
  with pytest.raises(ValueError, match="set num_heads or head_dim"):
    CrossAttention().init(key, x, *_text())
  with pytest.raises(ValueError, match=r"is_image of shape \[B\] = \(2,\), got \(2, 1\)"):
    TemporalAttention(num_heads=2).init(key, x, jnp.zeros((2, 1), bool))
  emb, mask = _text()
  with pytest.raises(ValueError, match=r"text of shape \[B, L, D_text\] with B=2, got \(3, 5, 6\)"):
    CrossAttention(num_heads=2).init(key, x, jnp.zeros((3, L, D_TEXT)), mask)
  with pytest.raises(ValueError, match=r"text_mask of shape \[B, L\] = \(2, 5\), got \(2, 4\)"):
    CrossAttention(num_heads=2).init(key, x, emb, mask[:, :4])
  with pytest.raises(ValueError, match=r"width D_text=6, got 7"):
    CrossAttention(num_heads=2, text_dim=D_TEXT).init(key, x, jnp.zeros((B, L, 7)), mask)
  # a width mismatch against trained params surfaces as flax's own shape error
  params = CrossAttention(num_heads=2).init(key, x, emb, mask)
  with pytest.raises(Exception, match="shape"):
    CrossAttention(num_heads=2).apply(params, x, jnp.zeros((B, L, D_TEXT + 1)), mask)


@pytest.mark.parametrize("length, chunk", [(64, 16), (60, 16)])  # 60: a padded last chunk
def test_chunked_attention_equals_whole_and_bounds_backward_memory(length, chunk):
  from videojax.nn.attention import chunked_attention

  kq, kk, kv = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(kq, (3, length, 2, 8))
  k = jax.random.normal(kk, (3, length, 2, 8))
  v = jax.random.normal(kv, (3, length, 2, 8))

  def loss(fn):
    return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))

  whole = lambda q, k, v: jax.nn.dot_product_attention(q, k, v)  # noqa: E731
  chunked = lambda q, k, v: chunked_attention(q, k, v, chunk)  # noqa: E731
  np.testing.assert_allclose(chunked(q, k, v), whole(q, k, v), rtol=1e-5, atol=1e-6)
  g_whole = jax.grad(loss(whole), argnums=(0, 1, 2))(q, k, v)
  g_chunk = jax.grad(loss(chunked), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g_chunk, g_whole):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # Memory: at 1024 positions one [S, N, L, L] buffer of logits is 32 MiB. The chunked
  # backward never holds one: on CPU not even one (example, head)'s [L, L] block (a
  # loop of [128, L] blocks), elsewhere one chunk's probabilities at a time.
  big = [jax.ShapeDtypeStruct((4, 1024, 2, 8), jnp.float32)] * 3
  grad = jax.jit(jax.grad(loss(lambda q, k, v: chunked_attention(q, k, v, 128)),
                          argnums=(0, 1, 2)))
  temp = grad.lower(*big).compile().memory_analysis().temp_size_in_bytes
  logits = 4 * 2 * 1024 * 1024 * 4
  assert temp < (logits / 8 if jax.default_backend() == "cpu" else logits), (temp, logits)


@pytest.mark.parametrize("logits", [140, 200])  # chunks that leave padding rows
def test_cpu_chunked_temporal_and_cross_attention_equal_whole(monkeypatch, logits):
  from videojax.nn import chunks

  x = jax.random.normal(jax.random.PRNGKey(4), (2, 5, 3, 3, 8))  # 18 sequences of 5 frames
  emb, mask = _text()
  is_image = jnp.array([True, False])
  blocks = [(TemporalAttention(num_heads=2), (None,)), (TemporalAttention(num_heads=2),
                                                        (is_image,)),
            (CrossAttention(num_heads=2), (emb, mask))]
  for block, args in blocks:
    params = jax.tree.map(lambda p: p + 0.1, block.init(jax.random.PRNGKey(0), x, *args))
    whole = block.clone(attention_impl="xla")  # a named implementation: no CPU chunks

    def loss(m):
      return lambda p, x: jnp.sum(jnp.sin(m.apply(p, x, *args)))

    want, g_want = loss(whole)(params, x), jax.grad(loss(whole), argnums=(0, 1))(params, x)
    monkeypatch.setattr(chunks, "CPU_CHUNK", logits)
    got, g_got = loss(block)(params, x), jax.grad(loss(block), argnums=(0, 1))(params, x)
    monkeypatch.undo()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # The chunks are really there: the CPU path lowers to a loop of checkpointed chunks.
  monkeypatch.setattr(chunks, "CPU_CHUNK", 200)
  block, args = blocks[2]
  text = jax.jit(lambda p, x: block.apply(p, x, *args)).lower(
      block.init(jax.random.PRNGKey(0), x, *args), x).as_text()
  assert "while" in text


def test_chunked_attention_rejects_a_query_dependent_mask():
  from videojax.nn.attention import chunked_attention

  q = jnp.zeros((1, 8, 2, 4))
  with pytest.raises(ValueError, match=r"takes a key mask .* got mask of shape \(1, 1, 8, 8\)"):
    chunked_attention(q, q, q, 4, mask=jnp.ones((1, 1, 8, 8), bool))
