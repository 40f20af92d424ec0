"""Fitting a frame field onto a trained, frozen stage from cached network outputs.

A U-Net with `frame_conditioning` and `frame_field` (`videojax.nn.conditioning.
FrameConditioning`) adds a per-frame map of the caption, the frame's place in time and
the pixel's place in the frame to the features its output conv reads. With the module's
FiLM output (`frame_cond/out`) held at zero, nothing else in the network depends on
the module, and the output conv is linear, so for every input

    network(z) = frozen(z) + conv_out(field),   frozen(z): the network with no field

exactly (`field_output`; the test checks it).

The frozen stage therefore runs once, in inference, over a fixed set of (clip, noise
level, noise) examples, and the field is fitted on those cached outputs with the
stage's own loss at the cost of a small MLP and one convolution per step: no backward
pass through the U-Net.

What it is for: the demo base (`configs/base.py:demo`) learned every attribute of a
caption but the sign of the motion ("left" / "right"), whose use needs the word, the
frame's time and the place in the frame at once (see `FrameConditioning`). Fitted this
way on 4096 training clips, the field learns the sign's prior where sampling decides
it (log-SNR -20 to -3); fitted on 512 clips it only memorises the captions
(benchmarks/results/direction_field.md).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from videojax import diffusion
from videojax.nn import text as text_lib
from videojax.nn import denoisers, unet3d
from videojax.nn.conditioning import FrameConditioning

FIELD_MODULE = "frame_cond"
FROZEN_PART = "out"  # FrameConditioning's FiLM output: held at zero (see the docstring)


def with_field(params: Any, config: ml_collections.ConfigDict, seed: int = 0
               ) -> tuple[Any, ml_collections.ConfigDict]:
  """A trained stage's (params, config) with a frame field added (zero: same function).

  A stage that has a (fitted) field already is returned as it is, to be fitted further.
  Raises ValueError (from the U-Net) for a model that cannot have one, for a stage
  without text, and for one whose field module already drives its FiLM.
  """
  if not config.model.text_dim:
    raise ValueError("A frame field reads the caption; this stage has no text "
                     "(model.text_dim = 0).")
  config = ml_collections.ConfigDict(config.to_dict())
  has = dict(params["params"].get(FIELD_MODULE, {})) if config.model.get(
      "frame_field", False) else {}
  if has and any(np.any(np.asarray(a) != 0) for a in jax.tree.leaves(has[FROZEN_PART])):
    raise ValueError(f"This stage's {FIELD_MODULE}/{FROZEN_PART} (its per-frame FiLM) is "
                     "not zero, so the rest of the network depends on the field module "
                     "and it cannot be fitted alone; fine-tune it with the trainer.")
  if has:  # nothing to add
    return params, config
  config.model.frame_conditioning = True
  config.model.frame_field = True
  model = denoisers.build(config.model)
  d = config.data
  z = jnp.zeros((1, d.frames, d.height, d.width, model.in_channels))
  init = jax.jit(lambda: nn.meta.unbox(model.init(
      jax.random.PRNGKey(seed), z, jnp.zeros((1,)), text=jnp.zeros((1, 1, model.text_dim)),
      text_mask=jnp.ones((1, 1)))))()  # also runs the U-Net's input checks
  module = {**init["params"][FIELD_MODULE], **has}  # fitted parts kept, new ones at zero
  return {**params, "params": {**params["params"], FIELD_MODULE: module}}, config


def field_output(model: unet3d.UNet3D, params: Any, emb: jax.Array, text: jax.Array,
                 text_mask: jax.Array, shape: tuple[int, ...]
                 ) -> jax.Array:
  """conv_out(field): the network is frozen + conv_out(field).

  Args:
    model, params: the U-Net with a field and its parameters.
    emb: [B, E] the clip's conditioning embedding (the output of `cond_emb`).
    text, text_mask: [B, L, D], [B, L].
    shape: (B, T, H, W, C_in) of the noisy input.

  Returns:
    [B, T, H, W, C_out].
  """
  _, t, h, w, _ = shape
  p = params["params"]
  _, field = FrameConditioning(*model.frame_conditioning_sizes()).apply(
      {"params": p[FIELD_MODULE]}, emb, t, text, text_mask, None, (h, w))  # [B, T, H, W, C]
  kernel = jnp.asarray(p["out"]["kernel"], jnp.float32)  # [1, 3, 3, C, C_out]: linear
  out = jax.lax.conv_general_dilated(field, kernel, (1, 1, 1), "SAME",
                                     dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  return out


def frozen_outputs(model: unet3d.UNet3D, params: Any) -> Callable:
  """`fn(z, logsnr, text, text_mask) -> (output with no field, emb)`, jitted."""

  def no_field(p):
    fc = jax.tree.map(jnp.zeros_like, p["params"][FIELD_MODULE])
    return {**p, "params": {**p["params"], FIELD_MODULE: fc}}

  def fn(z, logsnr, text, text_mask):
    out, state = model.apply(no_field(params), z, logsnr, text=text, text_mask=text_mask,
                             capture_intermediates=lambda m, _: m.name == "cond_emb",
                             mutable=["intermediates"])
    return out, state["intermediates"]["cond_emb"]["__call__"][0]

  return jax.jit(fn)


def draw_logsnr(rng: np.random.Generator, n: int, low: float, high: float,
                floor_fraction: float, floor: float) -> np.ndarray:
  """Noise levels of the cached examples: `floor_fraction` of them at `floor` (the
  schedule's lowest level, where sampling starts), the rest uniform in [low, high]."""
  if not 0.0 <= floor_fraction <= 1.0 or low > high:
    raise ValueError(f"Need 0 <= floor_fraction <= 1 and low <= high; got "
                     f"{floor_fraction}, [{low}, {high}].")
  at_floor = rng.random(n) < floor_fraction
  return np.where(at_floor, floor, rng.uniform(low, high, n)).astype(np.float32)


def cache_examples(model: unet3d.UNet3D, params: Any, config: ml_collections.ConfigDict,
                   batches: Iterator[dict[str, np.ndarray]], num_examples: int,
                   logsnr: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
  """Runs the frozen stage once over `num_examples` training examples.

  Each example gets its noise level from `logsnr` [num_examples], fresh Gaussian noise,
  and the null text with the stage's guidance-dropout rate (so the field learns the
  unconditional prediction too, which guidance subtracts).

  Returns:
    numpy arrays: frozen [N, T, H, W, C] (the network without the field), target (the
    regression target of the stage's parameterization), emb [N, E], text, text_mask.
  """
  if len(logsnr) != num_examples:
    raise ValueError(f"logsnr has {len(logsnr)} levels for {num_examples} examples.")
  fn = frozen_outputs(model, params)
  kind = config.diffusion.parameterization
  rate = float(config.train.cond_dropout)
  out: dict[str, list[np.ndarray]] = {k: [] for k in ("frozen", "target", "emb", "text",
                                                      "text_mask")}
  done, key = 0, jax.random.PRNGKey(seed)
  while done < num_examples:
    batch = next(batches)
    if "text_embeddings" not in batch:
      raise ValueError("The batches need text_embeddings (a frozen encoder's cache).")
    n = min(len(batch["video"]), num_examples - done)
    x = jnp.asarray(batch["video"][:n], jnp.float32)
    ls = jnp.asarray(logsnr[done:done + n])
    key, k_eps, k_drop = jax.random.split(key, 3)
    eps = jax.random.normal(k_eps, x.shape)
    text, mask, _ = text_lib.guidance_dropout(k_drop, jnp.asarray(batch["text_embeddings"][:n]),
                                              jnp.asarray(batch["text_mask"][:n]), rate)
    frozen, emb = fn(diffusion.diffuse(x, eps, ls), ls, text, mask)
    target = diffusion.regression_target(kind, x, eps, ls)
    for k, v in zip(out, (frozen, target, emb, text, mask)):
      out[k].append(np.asarray(v))
    done += n
  return {k: np.concatenate(v) for k, v in out.items()}


def fit(model: unet3d.UNet3D, params: Any, cache: dict[str, np.ndarray], *, steps: int,
        batch_size: int = 128, learning_rate: float = 3e-3, seed: int = 0,
        log_every: int = 0, log: Callable[[int, float], None] | None = None) -> Any:
  """Fits the field's parameters (all of FrameConditioning but its FiLM output) to
  `cache` with Adam on the mean squared error of the stage's regression target.

  Returns:
    `params` with the fitted field.
  """
  n = len(cache["frozen"])
  if n < batch_size:
    raise ValueError(f"{n} cached examples are fewer than batch_size {batch_size}.")
  shape = cache["frozen"].shape[1:]
  fc = params["params"][FIELD_MODULE]
  labels = {k: "frozen" if k == FROZEN_PART else "fit" for k in fc}
  tx = optax.multi_transform({"fit": optax.adam(learning_rate),
                              "frozen": optax.set_to_zero()}, labels)

  def loss_fn(fc, b):
    p = {**params, "params": {**params["params"], FIELD_MODULE: fc}}
    out = field_output(model, p, b["emb"], b["text"], b["text_mask"],
                       (len(b["emb"]),) + shape)
    return jnp.mean((b["frozen"] + out - b["target"]) ** 2)

  @jax.jit
  def step(fc, opt_state, b):
    loss, grads = jax.value_and_grad(loss_fn)(fc, b)
    updates, opt_state = tx.update(grads, opt_state, fc)
    return optax.apply_updates(fc, updates), opt_state, loss

  opt_state = tx.init(fc)
  rng = np.random.default_rng(seed)
  for i in range(1, steps + 1):
    idx = rng.integers(0, n, batch_size)
    fc, opt_state, loss = step(fc, opt_state, {k: v[idx] for k, v in cache.items()})
    if log is not None and log_every and (i % log_every == 0 or i == steps):
      log(i, float(loss))
  return {**params, "params": {**params["params"], FIELD_MODULE: fc}}
