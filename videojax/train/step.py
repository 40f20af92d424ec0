"""The training state, optimizer and the pure train step of a diffusion stage.

`train_step(state, batch, rng) -> (state, metrics)` is pure: its randomness is
`fold_in(rng, state.step)`, so a run repeats exactly from (seed, step). The step
combines the network (`nn/`) with the diffusion math (`diffusion/`):
  - the stage's formulation (`diffusion.formulation`): variance-preserving diffusion
    with noise levels from the stage's schedule (VDM's low-discrepancy sampler) and the
    v- (or eps-, x0-) objective with the configured weighting, or flow matching
    (`diffusion.flow`: times uniform or logit-normal, optionally shifted, the velocity
    objective; the network gets each time's log-SNR), with a frame mask so that
    frames given as conditioning (TSR) do not count,
  - noise-conditioning augmentation of a conditioning video (SSR, TSR), and with
    `diffusion.residual` the difference of the video to the conditioning's bicubic
    upsampling / frame blending as what is diffused (`diffusion_target`),
  - classifier-free guidance dropout of the text (empty null input),
  - AdamW with warmup and cosine decay, gradient clipping, gradient accumulation
    (optax.MultiSteps), parameter freezing by name (a regex of trainable paths), and
    an EMA of the parameters in the state (with warmup).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from videojax import diffusion
from videojax.diffusion import flow
from videojax.nn.conditioning import check_residual, conditioning_reference
from videojax.nn.stage import StageNetwork
from videojax.nn.text import guidance_dropout

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  step: Array  # int32 []
  params: Any
  ema_params: Any
  opt_state: Any


def trainable_mask(params: Any, pattern: str | None) -> Any:
  """True for parameters whose '/'-joined path matches `pattern` (None: all)."""
  if not pattern:
    return jax.tree.map(lambda _: True, params)
  regex = re.compile(pattern)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  mask = {k: bool(regex.search(k)) for k in flat}
  if not any(mask.values()):
    raise ValueError(f"No parameter path matches trainable pattern {pattern!r}; "
                     f"paths look like {next(iter(flat))!r}.")
  return flax.traverse_util.unflatten_dict(mask, sep="/")


def make_optimizer(optim: ml_collections.ConfigDict, params: Any = None
                   ) -> tuple[optax.GradientTransformation, Callable[[Array], Array]]:
  """(optimizer, learning-rate schedule) from a config's `optim` section.

  Fields: learning_rate, warmup_steps, total_steps, end_lr_fraction, weight_decay,
  b1, b2, grad_clip, grad_accum_steps, trainable (regex of trainable parameter paths,
  '' for all; needs `params` to build the mask).
  """
  if optim.total_steps <= optim.warmup_steps:
    raise ValueError(f"optim.total_steps ({optim.total_steps}) must exceed "
                     f"optim.warmup_steps ({optim.warmup_steps}).")
  lr = optax.warmup_cosine_decay_schedule(
      0.0, optim.learning_rate, optim.warmup_steps, optim.total_steps,
      end_value=optim.learning_rate * optim.end_lr_fraction)
  tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip),
                   optax.adamw(lr, b1=optim.b1, b2=optim.b2,
                               weight_decay=optim.weight_decay))
  if optim.trainable:
    if params is None:
      raise ValueError("Freezing parameters (optim.trainable) needs the parameter tree.")
    labels = jax.tree.map(lambda t: "train" if t else "freeze",
                          trainable_mask(params, optim.trainable))
    tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
  if optim.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=optim.grad_accum_steps)
  return tx, lr


def init_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """A fresh state; the EMA starts at the parameters."""
  return TrainState(jnp.zeros((), jnp.int32), params, jax.tree.map(jnp.copy, params),
                    tx.init(params))


# batch key -> StageNetwork keyword argument
_MODEL_INPUTS = (("text_embeddings", "text"), ("text_mask", "text_mask"),
                 ("cond_video", "cond_video"), ("cond_frames_mask", "cond_mask"),
                 ("is_image", "is_image"))


def model_inputs(batch: dict[str, Array], network: StageNetwork | None = None
                 ) -> dict[str, Array]:
  """The stage network's conditioning keyword arguments present in a batch: as given,
  or with `network` in its space (a latent stage's conditioning video encoded)."""
  kw = {arg: batch[key] for key, arg in _MODEL_INPUTS if key in batch}
  if network is not None and network.space is not None and "cond_video" in kw:
    kw["cond_video"] = network.encode(kw["cond_video"])
  return kw


def diffusion_target(network: StageNetwork, batch: dict[str, Array], residual: bool
                     ) -> Array:
  """What a stage diffuses: the video (a latent stage: its latents), or with `residual`
  its difference to the conditioning's reference (`nn.conditioning.
  conditioning_reference`, computed from the clean conditioning video). Sampling adds
  the reference back."""
  x = network.encode(batch["video"])
  if not residual:
    return x
  kw = model_inputs(batch, network)
  ref = conditioning_reference(network.kind, kw["cond_video"], kw.get("cond_mask"),
                               x.shape[2], x.shape[3])
  return x.astype(jnp.float32) - ref


FORMULATIONS = ("vp", "flow")


def formulation(d: ml_collections.ConfigDict) -> str:
  """A config's `diffusion.formulation` ('vp' for configs saved before it existed)."""
  kind = d.get("formulation", "vp")
  if kind not in FORMULATIONS:
    raise ValueError(f"Unknown diffusion.formulation {kind!r}; expected one of "
                     f"{FORMULATIONS}.")
  return kind


def noised_loss(network: StageNetwork, params: Any, d: ml_collections.ConfigDict,
                x: Array, eps: Array, noise_level: Array, frame_mask: Array | None,
                **apply_kw) -> Array:
  """Per-example loss [B] of the stage's formulation at the given noise levels.

  noise_level: [B] log-SNRs ('vp') or times in (0, 1) ('flow'); either way the network
  is given the log-SNR.
  """
  if formulation(d) == "flow":
    pred = network.apply(params, flow.diffuse(x, eps, noise_level),
                         flow.logsnr_from_time(noise_level), **apply_kw)
    return flow.flow_loss(pred, x, eps, frame_mask=frame_mask)
  pred = network.apply(params, diffusion.diffuse(x, eps, noise_level), noise_level,
                       **apply_kw)
  return diffusion.diffusion_loss(pred, x, eps, noise_level,
                                  parameterization=d.parameterization,
                                  weighting=d.get("weighting", "uniform"),
                                  gamma=d.get("min_snr_gamma", 5.0), frame_mask=frame_mask)


def make_train_step(network: StageNetwork, schedule: diffusion.Schedule,
                    tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
                    lr_fn: Callable[[Array], Array] | None = None):
  """The pure step of one stage. `config` needs `diffusion` and `train` sections.

  diffusion: formulation ('vp' or 'flow'); vp: parameterization, weighting,
    min_snr_gamma, train_logsnr_shift (optional: training noise levels from the schedule
    shifted by this; see `diffusion.shifted`); flow: time_distribution, time_mean,
    time_std, time_shift (`flow.sample_time`); residual.
  train: ema_decay, cond_dropout (CFG), aug_max_level (conditioning augmentation).
  optim (optional): trainable, the pattern of `make_optimizer`; frozen parameters keep
    their EMA equal to themselves.
  """
  d, t = config.diffusion, config.train
  residual = d.residual
  check_residual(network.kind, residual)
  is_flow = formulation(d) == "flow"
  shift = d.get("train_logsnr_shift", 0.0)  # absent in configs saved before it existed
  if shift and is_flow:
    raise ValueError("diffusion.train_logsnr_shift shifts a VP schedule; a flow-matching "
                     "stage shifts its times with diffusion.time_shift.")
  noise_levels = diffusion.shifted(schedule, shift) if shift else schedule

  def draw_levels(key, b):
    if is_flow:
      return flow.sample_time(key, b, distribution=d.get("time_distribution", "uniform"),
                              mean=d.get("time_mean", 0.0), std=d.get("time_std", 1.0),
                              shift=d.get("time_shift", 1.0))
    return diffusion.sample_logsnr(key, b, noise_levels)

  def loss_fn(params, batch, key):
    x = diffusion_target(network, batch, residual)  # [B, T, H, W, C]
    b = x.shape[0]
    k_t, k_eps, k_drop, k_aug, k_aug_level, k_dropout = jax.random.split(key, 6)
    level = draw_levels(k_t, b)  # [B] log-SNRs (vp) or times (flow)
    eps = jax.random.normal(k_eps, x.shape, jnp.float32)
    kwargs = model_inputs(batch, network)
    if "text" in kwargs:
      kwargs["text"], kwargs["text_mask"], _ = guidance_dropout(
          k_drop, kwargs["text"], kwargs["text_mask"], t.cond_dropout)
    if "cond_video" in kwargs:
      aug_level = diffusion.sample_level(k_aug_level, b, t.aug_max_level)
      kwargs["cond_video"], kwargs["aug_logsnr"] = diffusion.augment(
          k_aug, kwargs["cond_video"], schedule=schedule, level=aug_level)
    # frames given as conditioning do not count
    frame_mask = 1.0 - kwargs["cond_mask"] if "cond_mask" in kwargs else None
    loss = noised_loss(network, params, d, x, eps, level, frame_mask, train=True,
                       rngs={"dropout": k_dropout}, **kwargs)
    return jnp.mean(loss)

  def train_step(state: TrainState, batch: dict[str, Array], rng: Array
                 ) -> tuple[TrainState, dict[str, Array]]:
    key = jax.random.fold_in(rng, state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # EMA with warmup: decay min(ema_decay, (1 + step) / (10 + step)), so that a short
    # run's average is not dominated by the initial parameters.
    n = state.step.astype(jnp.float32)
    decay = jnp.minimum(t.ema_decay, (1.0 + n) / (10.0 + n))
    # Frozen parameters keep their EMA as it is (equal to the parameter): averaging a
    # constant would still move it by rounding.
    trainable = trainable_mask(params, config.get("optim", {}).get("trainable", ""))
    ema = jax.tree.map(lambda e, p, m: decay * e + (1.0 - decay) * p if m else e,
                       state.ema_params, params, trainable)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "ema_decay": decay}
    if lr_fn is not None:
      metrics["learning_rate"] = lr_fn(state.step)
    return TrainState(state.step + 1, params, ema, opt_state), metrics

  return train_step
