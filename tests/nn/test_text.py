"""Text conditioning: the trainable encoder, the null input and dropout, the cache."""

import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.data import pipeline
from videojax.nn import text as T
from videojax.nn.tokenizers import WordTokenizer

CAPTIONS = ["a red circle moving left on a black background",
            "a blue square moving up on a white background",
            "a green triangle moving down on a gray background", ""]


@pytest.fixture(scope="module")
def encoder():
  tok = WordTokenizer.from_captions(CAPTIONS, max_len=12)
  module = T.SmallTextEncoder(vocab_size=tok.vocab_size, width=32, depth=2, num_heads=4,
                              max_len=12)
  ids, mask = tok.encode_batch(CAPTIONS)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), ids, mask)
  return T.TextEncoder("small-test", module, nn.meta.unbox(params), tok, dim=32, frozen=False)


def test_small_encoder_shapes_padding_and_axes(encoder):
  ids, mask = encoder.tokenize(CAPTIONS)
  emb, out_mask = encoder.encode(ids, mask)
  assert emb.shape == (4, 12, 32) and np.all(np.isfinite(emb))
  np.testing.assert_array_equal(out_mask, mask)
  # Padding ids do not change real tokens' embeddings.
  ids2 = np.where(mask > 0, ids, 3)
  np.testing.assert_allclose(encoder.encode(ids2, mask)[0][mask > 0], emb[mask > 0], atol=1e-5)
  # An all-padding (empty) caption stays finite.
  assert mask[3].sum() == 0 and np.all(np.isfinite(emb[3]))
  specs = jax.tree.leaves(nn.get_partition_spec(encoder.module.init(
      jax.random.PRNGKey(0), ids, mask)), is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
  assert sum(1 for s in specs if len(s) and any(a is not None for a in s)) >= 10


def test_encode_is_the_module_apply_eagerly_and_inside_a_trace(encoder):
  """encode() goes through the exported-program cache when called eagerly and through
  plain jit under a trace (a trainable encoder in a train step); both are the module."""
  ids, mask = encoder.tokenize(CAPTIONS)
  want = encoder.module.apply(encoder.params, ids, mask)
  # float32 through differently fused programs: ~1e-6 apart (1.2e-6 seen), not bitwise.
  np.testing.assert_allclose(encoder.encode(ids, mask)[0], want, atol=1e-5)
  traced = jax.jit(lambda p, t, m: encoder.encode(t, m, params=p)[0])(encoder.params, ids, mask)
  np.testing.assert_allclose(traced, want, atol=1e-5)


def test_guidance_dropout_rate_and_null_inputs():
  b, length, dim = 4000, 6, 8
  emb = jnp.ones((b, length, dim))
  mask = jnp.ones((b, length), jnp.int32)
  out, out_mask, dropped = T.guidance_dropout(jax.random.PRNGKey(0), emb, mask, 0.1)
  rate = float(dropped.mean())
  assert abs(rate - 0.1) < 4 * np.sqrt(0.1 * 0.9 / b), rate  # binomial, 4 sigma
  np.testing.assert_array_equal(out[dropped], 0.0)  # empty null input
  np.testing.assert_array_equal(out_mask[dropped], 0)
  np.testing.assert_array_equal(out[~dropped], 1.0)  # kept examples unchanged
  learned = T.NullText(3, dim).apply(T.NullText(3, dim).init(jax.random.PRNGKey(1)))
  out, out_mask, dropped = T.guidance_dropout(jax.random.PRNGKey(2), emb, mask, 1.0, learned)
  assert bool(dropped.all())
  null_emb, null_mask = T.null_text(b, length, dim, learned)  # the same input at sampling
  np.testing.assert_array_equal(out, null_emb)
  np.testing.assert_array_equal(out_mask[0], [1, 1, 1, 0, 0, 0])
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
    T.guidance_dropout(jax.random.PRNGKey(0), emb, mask, 1.5)


def test_cache_equals_running_the_encoder_and_feeds_the_pipeline(encoder, tmp_path):
  path = T.cache_path(str(tmp_path), "toy", "tiny", encoder.name, 12)
  cache = T.EmbeddingCache.build(encoder, CAPTIONS * 3, path)
  assert len(cache.captions) == 4
  emb, mask = encoder.encode_captions(CAPTIONS)
  loaded = T.EmbeddingCache.load(path)
  for i, c in enumerate(CAPTIONS):
    e, m = loaded.lookup(c.encode())
    np.testing.assert_allclose(e, emb[i], atol=2e-3)  # stored as float16
    np.testing.assert_array_equal(m, mask[i])
  with pytest.raises(FileExistsError, match="exists"):
    T.EmbeddingCache.build(encoder, CAPTIONS, path)
  with pytest.raises(KeyError, match="not in the embedding cache"):
    loaded.lookup("a purple circle")
  # It stands in for its encoder (Cascade.load(..., encoder=cache)) on captions it holds.
  assert loaded.dim == encoder.dim
  got_emb, got_mask = loaded.encode_captions([CAPTIONS[1], CAPTIONS[0]])
  np.testing.assert_allclose(got_emb, np.asarray(emb)[[1, 0]], atol=2e-3)
  np.testing.assert_array_equal(got_mask, np.asarray(mask)[[1, 0]])
  with pytest.raises(KeyError, match="not in the embedding cache"):
    loaded.encode_captions([CAPTIONS[0], "a purple circle"])
  # The input pipeline reads embeddings by caption.
  source = [{"video": np.zeros((4, 8, 8, 3), np.uint8), "caption": c.encode()} for c in CAPTIONS]
  batch = pipeline.make_dataset(source, pipeline.StageView("base", 4, 8, 8), batch_size=4,
                                seed=0, text_cache=loaded, shuffle=False)[0]
  want = np.stack([loaded.lookup(c)[0] for c in CAPTIONS])
  np.testing.assert_array_equal(batch["text_embeddings"], want)


def test_truncation_warns_and_empty_caption_is_not_null(caplog):
  tok = WordTokenizer.from_captions(CAPTIONS, max_len=4)
  with caplog.at_level(logging.WARNING):
    ids, mask = tok.encode(CAPTIONS[0])
  assert "truncated to max_len=4" in caplog.text and mask.sum() == 4
  ids, mask = tok.encode("")
  assert mask.sum() == 0  # encoded like any text: the encoder still sees it


def test_build_pretrained_encoders_through_one_interface():
  import os
  t5_dir = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "t5_tiny")
  for kind, path, dim in (("t5", t5_dir, 32), ("minilm", None, 384)):
    enc = T.build_text_encoder(kind, path=path, max_len=10)
    emb, mask = enc.encode_captions(["a red circle moving left", ""])
    assert emb.shape == (2, 10, dim) and mask.shape == (2, 10) and enc.frozen
    assert np.all(np.isfinite(emb)) and mask[1].sum() >= 1  # '' still has eos / [CLS][SEP]
  with pytest.raises(ValueError, match="needs path="):
    T.build_text_encoder("t5")
  with pytest.raises(ValueError, match="Unknown text encoder 'clip'"):
    T.build_text_encoder("clip")


def test_cache_built_concurrently_keeps_the_first_published_file(encoder, tmp_path):
  """A second builder that finishes after the first keeps the first one's file, and
  neither leaves a temporary file behind (stages launched side by side share a cache)."""
  path = str(tmp_path / "cache.npz")

  class PublishesMidBuild:  # another process finishes its build while this one encodes
    name, dim = encoder.name, encoder.dim

    def encode_captions(self, captions):
      if not os.path.exists(path):
        T.EmbeddingCache.build(encoder, CAPTIONS[:1], path)
      return encoder.encode_captions(captions)

  T.EmbeddingCache.build(PublishesMidBuild(), CAPTIONS, path)
  assert T.EmbeddingCache.load(path).captions == [CAPTIONS[0]]  # not replaced
  assert os.listdir(tmp_path) == ["cache.npz"]
