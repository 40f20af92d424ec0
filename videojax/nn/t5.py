"""T5 v1.1 encoder in Flax linen, and a loader for Hugging Face checkpoints.

Imagen and Imagen Video condition on a frozen T5-XXL encoder. This is the encoder half
of T5 v1.1 as Hugging Face's `T5EncoderModel` computes it:

- token embedding (no scaling, no positional embedding);
- per layer: pre-RMS-norm self-attention with a relative position bias, then a
  pre-RMS-norm gated-GELU feed-forward, each added residually;
- the relative position bias table lives in the first layer in the checkpoint and is
  shared by all layers (here: one table at the encoder level, computed once);
- a final RMS norm. No biases anywhere; dropout is off (inference only).

T5 does not scale attention logits by 1/sqrt(d_kv): the scale is folded into the
initialisation of the query projection.

`load_t5_encoder(directory)` reads `config.json`, `model.safetensors` (or a sharded
`model.safetensors.index.json`) and `spiece.model` from a local directory, with no
torch or transformers. Every Hugging Face encoder key must be used and every
parameter found; decoder keys (`decoder.*`, `lm_head.*`) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videojax.nn.tokenizers import SentencePieceTokenizer

Array = jax.Array

# feed_forward_proj -> (gated, activation). 'gated-gelu' uses gelu_new (tanh), as HF does.
_FEED_FORWARD = {
    "gated-gelu": (True, "gelu_tanh"),
    "gated-silu": (True, "silu"),
    "gated-relu": (True, "relu"),
    "relu": (False, "relu"),
    "gelu": (False, "gelu"),
}
_ACTIVATIONS = {
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Sizes of a T5 encoder (field names as in Hugging Face's `config.json`).

  Defaults are T5 v1.1 XXL (google/t5-v1_1-xxl).
  """

  vocab_size: int = 32128
  d_model: int = 4096
  d_kv: int = 64  # per-head width; heads * d_kv need not equal d_model
  d_ff: int = 10240
  num_layers: int = 24
  num_heads: int = 64
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "gated-gelu"

  def __post_init__(self):
    if self.feed_forward_proj not in _FEED_FORWARD:
      raise ValueError(f"feed_forward_proj must be one of {sorted(_FEED_FORWARD)}, got "
                       f"{self.feed_forward_proj!r}.")
    for f in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
              "relative_attention_num_buckets", "relative_attention_max_distance"):
      if getattr(self, f) < 1:
        raise ValueError(f"T5Config.{f} must be positive, got {getattr(self, f)}.")

  @property
  def inner_dim(self) -> int:
    """Width of the concatenated heads: num_heads * d_kv."""
    return self.num_heads * self.d_kv

  @property
  def gated(self) -> bool:
    return _FEED_FORWARD[self.feed_forward_proj][0]

  @property
  def activation(self) -> str:
    return _FEED_FORWARD[self.feed_forward_proj][1]

  @classmethod
  def from_hf_json(cls, path: str) -> "T5Config":
    """Reads a Hugging Face T5 `config.json` (a file, or a directory holding one)."""
    if os.path.isdir(path):
      path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"No T5 config.json at {path!r}.")
    with open(path) as f:
      raw = json.load(f)
    names = {f.name for f in dataclasses.fields(cls)}
    missing = sorted({"vocab_size", "d_model", "d_kv", "d_ff", "num_layers",
                      "num_heads"} - set(raw))
    if missing:
      raise ValueError(f"{path} is missing T5 config fields {missing}.")
    return cls(**{k: v for k, v in raw.items() if k in names})

  @classmethod
  def preset(cls, name: str) -> "T5Config":
    """T5 v1.1 sizes: 'small', 'base', 'large', 'xl' or 'xxl' (google/t5-v1_1-*)."""
    if name not in T5_V1_1_PRESETS:
      raise ValueError(f"Unknown T5 preset {name!r}; expected one of "
                       f"{list(T5_V1_1_PRESETS)}.")
    return T5_V1_1_PRESETS[name]


# From the google/t5-v1_1-{small,base,large,xl,xxl} config.json files.
T5_V1_1_PRESETS: dict[str, T5Config] = {
    "small": T5Config(d_model=512, d_ff=1024, num_layers=8, num_heads=6),
    "base": T5Config(d_model=768, d_ff=2048, num_layers=12, num_heads=12),
    "large": T5Config(d_model=1024, d_ff=2816, num_layers=24, num_heads=16),
    "xl": T5Config(d_model=2048, d_ff=5120, num_layers=24, num_heads=32),
    "xxl": T5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64),
}


def relative_position_buckets(q_len: int, k_len: int, num_buckets: int,
                              max_distance: int, bidirectional: bool = True) -> Array:
  """T5's bucketing of key-minus-query offsets.

  Half the buckets (bidirectional) go to each direction; of those, the first half are
  exact offsets and the rest grow logarithmically up to `max_distance`, beyond which
  all offsets share the last bucket.

  Args:
    q_len: number of query positions.
    k_len: number of key positions.
    num_buckets: total number of buckets.
    max_distance: offset at which the last bucket starts.
    bidirectional: encoder attention (True) looks both ways.

  Returns:
    int32 [q_len, k_len] bucket ids in [0, num_buckets).
  """
  rel = jnp.arange(k_len)[None, :] - jnp.arange(q_len)[:, None]  # [Q, K] key - query
  buckets = jnp.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (rel > 0).astype(rel.dtype) * num_buckets
    rel = jnp.abs(rel)
  else:
    rel = -jnp.minimum(rel, 0)
  max_exact = num_buckets // 2
  is_small = rel < max_exact
  # float32 like the reference; offset 0 is clamped to 1 only to keep log finite.
  large = max_exact + (
      jnp.log(jnp.maximum(rel, 1).astype(jnp.float32) / max_exact)
      / math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(rel.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return (buckets + jnp.where(is_small, rel, large)).astype(jnp.int32)


def _linear(features: int, axes: tuple[str, str], std: float, dtype, param_dtype,
            name: str) -> nn.Dense:
  """Bias-free Dense with logical axis names (videojax.nn.layers.dense always adds a
  bias, T5 has none) and T5's normal(std) initialisation."""
  return nn.Dense(features, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                  name=name, kernel_init=nn.with_logical_partitioning(
                      nn.initializers.normal(std), axes))


class T5LayerNorm(nn.Module):
  """RMS norm: x / sqrt(mean(x^2) + eps) * scale, no mean subtraction, no bias."""

  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:  # [B, L, D] -> [B, L, D]
    scale = self.param("scale", nn.with_logical_partitioning(
        nn.initializers.ones_init(), ("embed",)), (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


class T5Attention(nn.Module):
  """Unscaled multi-head self-attention with an additive bias [1, H, L, L]."""

  config: T5Config
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, bias: Array, mask: Array) -> Array:
    # x [B, L, D], bias [1, H, L, L] float32, mask [B, 1, 1, L] bool -> [B, L, D]
    c = self.config
    b, length, _ = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q_std = (c.d_model * c.d_kv) ** -0.5  # the folded-in 1/sqrt(d_kv)

    def heads(name, std):
      y = _linear(c.inner_dim, ("embed", "heads"), std, name=name, **kw)(x)
      return y.reshape(b, length, c.num_heads, c.d_kv)  # [B, L, H, Dk]

    q, k, v = heads("q", q_std), heads("k", c.d_model ** -0.5), heads("v", c.d_model ** -0.5)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                        preferred_element_type=jnp.float32) + bias  # [B, H, L, L]
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    o = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, length, c.inner_dim)
    return _linear(c.d_model, ("heads", "embed"), c.inner_dim ** -0.5, name="o", **kw)(o)


class T5FeedForward(nn.Module):
  """Gated: wo(act(wi_0 x) * wi_1 x); plain: wo(act(wi x))."""

  config: T5Config
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:  # [B, L, D] -> [B, L, D]
    c = self.config
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    act = _ACTIVATIONS[c.activation]
    if c.gated:
      h = act(_linear(c.d_ff, ("embed", "mlp"), c.d_model ** -0.5, name="wi_0", **kw)(x))
      h = h * _linear(c.d_ff, ("embed", "mlp"), c.d_model ** -0.5, name="wi_1", **kw)(x)
    else:
      h = act(_linear(c.d_ff, ("embed", "mlp"), c.d_model ** -0.5, name="wi", **kw)(x))
    h = nn.with_logical_constraint(h, ("batch", None, "mlp"))  # [B, L, F]
    return _linear(c.d_model, ("mlp", "embed"), c.d_ff ** -0.5, name="wo", **kw)(h)


class T5Block(nn.Module):
  """Pre-norm residual self-attention then feed-forward."""

  config: T5Config
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, bias: Array, mask: Array) -> Array:  # [B, L, D]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    eps = self.config.layer_norm_epsilon
    x = x + T5Attention(self.config, name="attention", **kw)(
        T5LayerNorm(eps, name="attention_norm", **kw)(x), bias, mask)
    x = x + T5FeedForward(self.config, name="mlp", **kw)(
        T5LayerNorm(eps, name="mlp_norm", **kw)(x))
    return nn.with_logical_constraint(x, ("batch", None, "embed"))


class T5Encoder(nn.Module):
  """T5 (v1.1) encoder: token ids [B, L] and mask [B, L] -> embeddings [B, L, d_model].

  Padding keys (mask 0) are never attended to, so real positions' outputs do not
  depend on what the padding ids are. Outputs at padded positions are computed too
  (as Hugging Face does) but carry no meaning.

  Attributes:
    config: the sizes.
    dtype: computation dtype (softmax and norms run in float32 regardless).
    param_dtype: parameter dtype.
  """

  config: T5Config
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Array | None = None) -> Array:
    c = self.config
    if tokens.ndim != 2:
      raise ValueError(f"T5Encoder expects tokens [B, L], got shape {tokens.shape}.")
    if mask is None:
      mask = jnp.ones(tokens.shape, jnp.int32)
    if mask.shape != tokens.shape:
      raise ValueError(f"T5Encoder expects a mask of the tokens' shape {tokens.shape}, "
                       f"got {mask.shape}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    length = tokens.shape[1]
    x = nn.Embed(c.vocab_size, c.d_model, name="embed_tokens", **kw,
                 embedding_init=nn.with_logical_partitioning(
                     nn.initializers.normal(1.0), ("vocab", "embed")))(tokens)  # [B, L, D]
    x = nn.with_logical_constraint(x, ("batch", None, "embed"))
    table = self.param("relative_attention_bias", nn.with_logical_partitioning(
        nn.initializers.normal(c.d_model ** -0.5), ("relpos_buckets", "heads")),
        (c.relative_attention_num_buckets, c.num_heads), self.param_dtype)  # [NB, H]
    buckets = relative_position_buckets(length, length, c.relative_attention_num_buckets,
                                        c.relative_attention_max_distance)  # [L, L]
    bias = jnp.transpose(table.astype(jnp.float32)[buckets], (2, 0, 1))[None]  # [1, H, L, L]
    key_mask = (mask > 0)[:, None, None, :]  # [B, 1, 1, L]
    for i in range(c.num_layers):
      x = T5Block(c, name=f"block_{i}", **kw)(x, bias, key_mask)
    return T5LayerNorm(c.layer_norm_epsilon, name="final_norm", **kw)(x)


# ---------------------------------------------------------------------------
# Hugging Face checkpoints.

def hf_key_map(config: T5Config) -> dict[str, tuple[tuple[str, ...], bool]]:
  """Our parameter path -> (Hugging Face key, transpose?) for an encoder.

  Returns:
    {path tuple in our 'params' tree: (HF key, whether the torch [out, in] weight is
    transposed to our [in, out] kernel)}.
  """
  m: dict[tuple[str, ...], tuple[str, bool]] = {
      ("embed_tokens", "embedding"): ("shared.weight", False),
      ("relative_attention_bias",): (
          "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", False),
      ("final_norm", "scale"): ("encoder.final_layer_norm.weight", False),
  }
  ff = ("wi_0", "wi_1", "wo") if config.gated else ("wi", "wo")
  for i in range(config.num_layers):
    pre = f"encoder.block.{i}.layer"
    for p in "qkvo":
      m[(f"block_{i}", "attention", p, "kernel")] = (f"{pre}.0.SelfAttention.{p}.weight", True)
    m[(f"block_{i}", "attention_norm", "scale")] = (f"{pre}.0.layer_norm.weight", False)
    for p in ff:
      m[(f"block_{i}", "mlp", p, "kernel")] = (f"{pre}.1.DenseReluDense.{p}.weight", True)
    m[(f"block_{i}", "mlp_norm", "scale")] = (f"{pre}.1.layer_norm.weight", False)
  return m


def _is_ignored(key: str) -> bool:
  """Decoder and LM-head weights, which an encoder does not use."""
  return key.startswith(("decoder.", "lm_head."))


def params_from_hf(config: T5Config, state: Mapping[str, np.ndarray],
                   param_dtype=jnp.float32) -> dict[str, Any]:
  """Maps a Hugging Face T5 state dict (numpy arrays) to our encoder's variables.

  `shared.weight` and `encoder.embed_tokens.weight` are the same tied table: either is
  accepted, and both must then agree.

  Args:
    config: the encoder's sizes.
    state: {HF key: numpy array}, e.g. from `safetensors.numpy.load_file`.
    param_dtype: dtype of the returned parameters.

  Returns:
    {'params': tree}, to pass to `T5Encoder(config).apply`.

  Raises:
    ValueError: an encoder key is left unused, a parameter is not found (both named),
      or a shape differs from the config's (key and both shapes named).
  """
  state = dict(state)
  embed_alias = "encoder.embed_tokens.weight"
  if embed_alias in state:
    alias = state.pop(embed_alias)
    if "shared.weight" not in state:
      state["shared.weight"] = alias
    elif alias.shape != state["shared.weight"].shape or not np.array_equal(
        alias, state["shared.weight"]):
      raise ValueError(f"{embed_alias} differs from shared.weight: the checkpoint's "
                       "embeddings are not tied as T5 expects.")
  expected = jax.eval_shape(lambda: T5Encoder(config).init(
      jax.random.key(0), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32)))
  shapes = {path: leaf.shape for path, leaf in _flatten(nn.unbox(expected)["params"])}
  mapping = hf_key_map(config)
  assert set(mapping) == set(shapes), (sorted(set(mapping) ^ set(shapes)))

  missing = sorted(k for k, _ in mapping.values() if k not in state)
  used = {k for k, _ in mapping.values()}
  unused = sorted(k for k in state if k not in used and not _is_ignored(k))
  if missing or unused:
    raise ValueError(f"T5 checkpoint does not match config ({config.num_layers} layers, "
                     f"feed_forward_proj={config.feed_forward_proj!r}): missing keys "
                     f"{missing}; unused encoder keys {unused}.")
  flat = {}
  for path, (key, transpose) in mapping.items():
    value = np.asarray(state[key])
    value = value.T if transpose else value
    if value.shape != shapes[path]:
      given = state[key].shape
      want = shapes[path][::-1] if transpose else shapes[path]
      raise ValueError(f"T5 checkpoint key {key!r} has shape {tuple(given)}, expected "
                       f"{tuple(want)} for the config (d_model={config.d_model}, "
                       f"d_ff={config.d_ff}, heads={config.num_heads}, d_kv={config.d_kv}, "
                       f"vocab={config.vocab_size}).")
    flat[path] = jnp.asarray(value, param_dtype)
  return {"params": _unflatten(flat)}


def read_safetensors(directory: str) -> dict[str, np.ndarray]:
  """All tensors of `model.safetensors`, or of the shards listed in
  `model.safetensors.index.json`, as numpy arrays."""
  from safetensors.numpy import load_file

  single = os.path.join(directory, "model.safetensors")
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.isfile(single):
    return load_file(single)
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    state: dict[str, np.ndarray] = {}
    for shard in shards:
      state.update(load_file(os.path.join(directory, shard)))
    return state
  raise FileNotFoundError(f"No model.safetensors or model.safetensors.index.json in "
                          f"{directory!r} (save the model with safe_serialization=True).")


def load_t5_encoder(directory: str, max_len: int = 128, param_dtype=jnp.float32
                    ) -> tuple[T5Config, dict[str, Any], SentencePieceTokenizer]:
  """Loads a T5 encoder saved in the Hugging Face layout in a local directory.

  Args:
    directory: holds `config.json`, `model.safetensors` (or a sharded index) and
      `spiece.model`.
    max_len: the tokenizer's padded length.
    param_dtype: dtype of the returned parameters.

  Returns:
    (config, variables {'params': ...} for `T5Encoder(config).apply`, tokenizer).
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No T5 checkpoint directory at {directory!r}.")
  config = T5Config.from_hf_json(os.path.join(directory, "config.json"))
  params = params_from_hf(config, read_safetensors(directory), param_dtype)
  tokenizer = SentencePieceTokenizer(os.path.join(directory, "spiece.model"), max_len)
  return config, params, tokenizer


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for path, v in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return out
