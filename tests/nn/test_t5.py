"""T5 encoder: a tiny Hugging Face checkpoint loads and reproduces transformers' output.

The fixture in tests/assets/t5_tiny/ is written by
benchmarks/reference/make_tiny_t5.py (torch + transformers, run once, outside the
library's environment).
"""

from __future__ import annotations

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from videojax.nn import t5

ASSETS = os.path.join(os.path.dirname(__file__), "..", "assets", "t5_tiny")


@pytest.fixture(scope="module")
def ref():
  with open(os.path.join(ASSETS, "reference.json")) as f:
    r = json.load(f)
  return dict(r, token_ids=np.asarray(r["token_ids"], np.int32),
              mask=np.asarray(r["mask"], np.int32),
              hidden=np.asarray(r["last_hidden_state"], np.float32))


@pytest.fixture(scope="module")
def loaded(ref):
  return t5.load_t5_encoder(ASSETS, max_len=ref["max_len"])


@pytest.fixture(scope="module")
def encode(loaded):
  config, _, _ = loaded
  return jax.jit(t5.T5Encoder(config).apply)


@pytest.fixture(scope="module")
def state():
  return load_file(os.path.join(ASSETS, "model.safetensors"))


def _copy_with_state(tmp_path, state) -> str:
  """A checkpoint directory with the fixture's config and tokenizer and `state`."""
  d = tmp_path / "ckpt"
  d.mkdir()
  for name in ("config.json", "spiece.model"):
    shutil.copy(os.path.join(ASSETS, name), d / name)
  save_file(state, str(d / "model.safetensors"))
  return str(d)


def test_checkpoint_loads_with_every_key_used(loaded, state):
  config, params, tokenizer = loaded
  assert (config.d_model, config.d_ff, config.num_layers, config.num_heads,
          config.d_kv) == (32, 64, 2, 4, 8)
  assert config.feed_forward_proj == "gated-gelu"
  used = {k for k, _ in t5.hf_key_map(config).values()}
  assert set(state) - {"encoder.embed_tokens.weight"} == used
  expected = jax.eval_shape(lambda: t5.T5Encoder(config).init(
      jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32)))
  assert (jax.tree.map(lambda x: x.shape, nn.unbox(expected))
          == jax.tree.map(lambda x: x.shape, params))
  assert tokenizer.vocab_size == config.vocab_size


def test_matches_transformers_reference(ref, loaded, encode):
  _, params, _ = loaded
  out = np.asarray(encode(params, jnp.asarray(ref["token_ids"]), jnp.asarray(ref["mask"])))
  assert out.shape == tuple(ref["last_hidden_state_shape"])
  real = ref["mask"].astype(bool)
  np.testing.assert_allclose(out[real], ref["hidden"][real], atol=1e-4, rtol=0)
  assert np.abs(ref["hidden"][real]).max() > 0.5  # the comparison is not vacuous


def test_padding_does_not_change_real_positions(ref, loaded, encode):
  _, params, _ = loaded
  ids, mask = ref["token_ids"], ref["mask"]
  base = np.asarray(encode(params, jnp.asarray(ids), jnp.asarray(mask)))
  noisy = np.where(mask > 0, ids, np.random.default_rng(0).integers(2, 100, ids.shape))
  out = np.asarray(encode(params, jnp.asarray(noisy, jnp.int32), jnp.asarray(mask)))
  real = mask.astype(bool)
  np.testing.assert_allclose(out[real], base[real], atol=1e-6)
  # The shortest caption alone, unpadded, gives the same embeddings.
  n = int(mask[2].sum())
  alone = t5.T5Encoder(loaded[0]).apply(params, jnp.asarray(ids[2:3, :n]),
                                        jnp.ones((1, n), jnp.int32))
  np.testing.assert_allclose(np.asarray(alone)[0], base[2, :n], atol=1e-5)


def test_position_bias_matters(ref, loaded, encode):
  """A zeroed bias table changes the outputs: the reference exercises it."""
  _, params, _ = loaded
  zeroed = jax.tree.map(lambda x: x, params)
  zeroed["params"]["relative_attention_bias"] = jnp.zeros_like(
      params["params"]["relative_attention_bias"])
  a = encode(params, jnp.asarray(ref["token_ids"]), jnp.asarray(ref["mask"]))
  b = encode(zeroed, jnp.asarray(ref["token_ids"]), jnp.asarray(ref["mask"]))
  assert float(jnp.abs(a - b).max()) > 1e-2


def test_tokenizer_reproduces_reference_ids(ref, loaded):
  _, _, tokenizer = loaded
  ids, mask = tokenizer.encode_batch(ref["texts"])
  np.testing.assert_array_equal(ids, ref["token_ids"])
  np.testing.assert_array_equal(mask, ref["mask"])


def _bucket_reference(rel: int, num_buckets: int, max_distance: int) -> int:
  """HF's `_relative_position_bucket` (bidirectional) for one key-minus-query offset."""
  half = num_buckets // 2
  bucket = half if rel > 0 else 0
  rel, max_exact = abs(rel), half // 2
  if rel < max_exact:
    return bucket + rel
  large = max_exact + int(np.float32(np.log(np.float32(rel / max_exact))
                                     / np.float32(np.log(max_distance / max_exact))
                                     * (half - max_exact)))
  return bucket + min(large, half - 1)


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16)])
def test_relative_position_buckets_match_t5(num_buckets, max_distance):
  n = 300
  got = np.asarray(t5.relative_position_buckets(n, n, num_buckets, max_distance))
  want = np.array([[_bucket_reference(k - q, num_buckets, max_distance) for k in range(n)]
                   for q in range(n)])
  np.testing.assert_array_equal(got, want)
  row = got[0]  # keys to the right of query 0: exact, then log-spaced, then saturated
  assert list(row[1:num_buckets // 4 + 1]) == list(
      range(num_buckets // 2 + 1, num_buckets // 2 + num_buckets // 4 + 1))
  assert row[max_distance] == row[-1] == num_buckets - 1 and np.all(np.diff(row[1:]) >= 0)


def test_decoder_keys_ignored_and_embedding_alias(state, loaded):
  config, params, _ = loaded
  extra = dict(state, **{"decoder.block.0.layer.0.SelfAttention.q.weight": np.zeros((3, 3)),
                         "lm_head.weight": np.zeros((3, 3))})
  t5.params_from_hf(config, extra)
  alias = {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v
           for k, v in state.items()}
  got = t5.params_from_hf(config, alias)
  np.testing.assert_array_equal(got["params"]["embed_tokens"]["embedding"],
                                params["params"]["embed_tokens"]["embedding"])


def test_renamed_key_fails_naming_it(state, tmp_path):
  key = "encoder.block.1.layer.1.DenseReluDense.wi_0.weight"
  bad = dict(state)
  bad["encoder.block.1.layer.1.DenseReluDense.wi_zero.weight"] = bad.pop(key)
  with pytest.raises(ValueError, match=r"missing keys \[.*wi_0.*\].*unused.*wi_zero"):
    t5.load_t5_encoder(_copy_with_state(tmp_path, bad))


def test_missing_and_unused_keys_fail(state, loaded):
  config = loaded[0]
  missing = {k: v for k, v in state.items() if k != "encoder.final_layer_norm.weight"}
  with pytest.raises(ValueError, match="encoder.final_layer_norm.weight"):
    t5.params_from_hf(config, missing)
  extra = dict(state, **{"encoder.block.2.layer.0.layer_norm.weight": np.ones(32, np.float32)})
  with pytest.raises(ValueError, match=r"unused encoder keys \['encoder.block.2"):
    t5.params_from_hf(config, extra)


def test_wrong_shape_fails_naming_key_and_shapes(state, loaded):
  key = "encoder.block.0.layer.0.SelfAttention.k.weight"
  bad = dict(state, **{key: np.zeros((32, 16), np.float32)})
  with pytest.raises(ValueError, match=rf"{key}.*\(32, 16\).*\(32, 32\)"):
    t5.params_from_hf(loaded[0], bad)


def test_sharded_checkpoint(state, tmp_path, loaded):
  d = tmp_path / "sharded"
  d.mkdir()
  for name in ("config.json", "spiece.model"):
    shutil.copy(os.path.join(ASSETS, name), d / name)
  keys = sorted(state)
  shards = {"model-00001-of-00002.safetensors": keys[::2],
            "model-00002-of-00002.safetensors": keys[1::2]}
  for name, ks in shards.items():
    save_file({k: state[k] for k in ks}, str(d / name))
  with open(d / "model.safetensors.index.json", "w") as f:
    json.dump({"weight_map": {k: n for n, ks in shards.items() for k in ks}}, f)
  _, params, _ = t5.load_t5_encoder(str(d))
  jax.tree.map(np.testing.assert_array_equal, params, loaded[1])


def test_every_param_has_logical_axes(loaded):
  config = loaded[0]
  boxed = jax.eval_shape(lambda: t5.T5Encoder(config).init(
      jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32)))
  leaves = jax.tree_util.tree_leaves_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves
  for path, leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), path
    assert len(leaf.names) == leaf.value.ndim and all(leaf.names), (path, leaf.names)
  p = boxed["params"]
  assert p["embed_tokens"]["embedding"].names == ("vocab", "embed")
  assert p["relative_attention_bias"].names == ("relpos_buckets", "heads")
  assert p["block_0"]["attention"]["q"]["kernel"].names == ("embed", "heads")
  assert p["block_0"]["attention"]["o"]["kernel"].names == ("heads", "embed")
  assert p["block_0"]["mlp"]["wi_0"]["kernel"].names == ("embed", "mlp")
  assert p["block_0"]["mlp"]["wo"]["kernel"].names == ("mlp", "embed")


def test_presets():
  sizes = {n: (c.d_model, c.d_ff, c.num_layers, c.num_heads, c.d_kv)
           for n, c in t5.T5_V1_1_PRESETS.items()}
  assert sizes == {"small": (512, 1024, 8, 6, 64), "base": (768, 2048, 12, 12, 64),
                   "large": (1024, 2816, 24, 16, 64), "xl": (2048, 5120, 24, 32, 64),
                   "xxl": (4096, 10240, 24, 64, 64)}
  for c in t5.T5_V1_1_PRESETS.values():
    assert (c.vocab_size, c.feed_forward_proj, c.relative_attention_num_buckets) == (
        32128, "gated-gelu", 32)
  # XXL encoder: 32128*4096 embeddings + 24 * (4*4096^2 + 3*4096*10240 + 2*4096) + ...
  xxl = t5.T5Config.preset("xxl")
  shapes = jax.eval_shape(lambda: t5.T5Encoder(xxl).init(
      jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32)))
  count = sum(x.size for x in jax.tree.leaves(nn.unbox(shapes)))
  assert count == 4_762_310_656
  assert abs(count - 4.76e9) / 4.76e9 < 0.01


def test_config_and_input_errors(tmp_path, loaded):
  with pytest.raises(ValueError, match="feed_forward_proj"):
    t5.T5Config(feed_forward_proj="swiglu")
  with pytest.raises(ValueError, match="Unknown T5 preset"):
    t5.T5Config.preset("huge")
  (tmp_path / "config.json").write_text(json.dumps({"d_model": 8}))
  with pytest.raises(ValueError, match="missing T5 config fields"):
    t5.T5Config.from_hf_json(str(tmp_path))
  config, params, _ = loaded
  with pytest.raises(ValueError, match=r"mask of the tokens' shape \(2, 5\)"):
    t5.T5Encoder(config).apply(params, jnp.zeros((2, 5), jnp.int32),
                               jnp.ones((2, 4), jnp.int32))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    t5.read_safetensors(str(tmp_path))
