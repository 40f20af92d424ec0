"""The toy end-to-end job: train a tiny denoiser on 2-D points, sample with every sampler.

It exercises the whole diffusion core on data small enough for a laptop CPU: a
schedule, a parameterization and weighted loss for training with classifier-free
label dropout and EMA, then class-conditional sampling through DDPM, DDIM,
DPM-Solver++ and Heun with guidance, judged by the sliced Wasserstein distance to
held-out data and by whether each sample lands on the class it was asked for.

Randomness derives from (seed, step), so a run repeats exactly.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from videojax import diffusion
from videojax.data.toy2d import DATASETS, sample_points
from videojax.eval.distribution import nearest_label_accuracy, sliced_wasserstein
from videojax.io.figures import scatter_panels
from videojax.nn.mlp import MLPDenoiser

Array = jax.Array


@flax.struct.dataclass
class ToyState:
  step: Array
  params: Any
  ema_params: Any
  opt_state: Any


def build(config: ml_collections.ConfigDict):
  """(model, schedule, optimizer) from a toy2d config; validates names up front."""
  if config.dataset not in DATASETS:
    raise ValueError(f"Unknown toy dataset {config.dataset!r}; expected one of "
                     f"{sorted(DATASETS)}.")
  for name in config.sample.samplers:
    if name not in diffusion.SAMPLERS:
      raise ValueError(f"Unknown sampler {name!r} in config.sample.samplers; expected "
                       f"names from {diffusion.SAMPLERS}.")
  if not 0 <= config.train.warmup_steps < config.train.num_steps:
    raise ValueError(f"config.train.warmup_steps ({config.train.warmup_steps}) must be in "
                     f"[0, num_steps = {config.train.num_steps}).")
  model = MLPDenoiser(features=2, width=config.model.width, depth=config.model.depth,
                      emb_dim=config.model.emb_dim, num_classes=DATASETS[config.dataset])
  lr = optax.warmup_cosine_decay_schedule(0.0, config.train.learning_rate,
                                          config.train.warmup_steps, config.train.num_steps)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(lr, weight_decay=config.train.weight_decay))
  return model, diffusion.schedule_from_config(config.diffusion), tx


def init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int) -> ToyState:
  z, logsnr, labels = jnp.zeros((1, 2)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), z, logsnr, labels)["params"]
  params = nn.meta.unbox(params)
  ema = jax.tree.map(jnp.copy, params)  # its own buffers: the step donates the state
  return ToyState(jnp.zeros((), jnp.int32), params, ema, tx.init(params))


def make_train_chunk(model, schedule, tx, config, points: Array, labels: Array):
  """A jitted function running `config.train.log_every` steps in one lax.scan."""
  d, t = config.diffusion, config.train
  null_label = model.num_classes

  def loss_fn(params, key):
    k_idx, k_t, k_eps, k_drop = jax.random.split(key, 4)
    idx = jax.random.randint(k_idx, (t.batch_size,), 0, points.shape[0])
    x, y = points[idx], labels[idx]  # [B, 2], [B]
    logsnr = diffusion.sample_logsnr(k_t, t.batch_size, schedule)
    eps = jax.random.normal(k_eps, x.shape)
    y = jnp.where(jax.random.bernoulli(k_drop, t.cond_dropout, y.shape), null_label, y)
    pred = model.apply({"params": params}, diffusion.diffuse(x, eps, logsnr), logsnr, y)
    return diffusion.diffusion_loss(pred, x, eps, logsnr, parameterization=d.parameterization,
                                    weighting=d.weighting).mean()

  def one_step(state: ToyState, _):
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: t.ema_decay * e + (1 - t.ema_decay) * p,
                       state.ema_params, params)
    return ToyState(state.step + 1, params, ema, opt_state), loss

  @functools.partial(jax.jit, donate_argnums=0)
  def chunk(state: ToyState):
    state, losses = jax.lax.scan(one_step, state, length=t.log_every)
    return state, jnp.mean(losses)

  return chunk


def make_sample_fn(model, schedule, config, sampler: str):
  """jit(params, noise [N, 2], labels [N], rng) -> samples [N, 2], with CFG."""
  s = config.sample

  @jax.jit
  def run(params, noise, labels, rng):
    def denoise(z, logsnr, labels):
      return model.apply({"params": params}, z, logsnr, labels)

    null = {"labels": jnp.full_like(labels, model.num_classes)}
    guided = diffusion.classifier_free_guidance(denoise, null, s.guidance_scale)
    return diffusion.sample(guided, noise, schedule=schedule, sampler=sampler,
                            num_steps=s.num_steps, spacing=s.spacing,
                            parameterization=config.diffusion.parameterization,
                            x0_transform=diffusion.make_x0_transform(s.threshold),
                            rng=rng, cond={"labels": labels})

  return run


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the toy denoiser, samples with every configured sampler, writes results.

  Writes `workdir/samples.png` (data and each sampler's samples, coloured by the
  requested class) and `workdir/metrics.json`.

  Returns:
    The metrics: per sampler, the sliced Wasserstein distance to held-out data and
    the class accuracy; plus the same distance for held-out data itself (the floor)
    and for Gaussian noise (the ceiling).
  """
  model, schedule, tx = build(config)
  pts, lbl = sample_points(config.dataset, config.train.dataset_size, seed=config.seed)
  ref_pts, ref_lbl = sample_points(config.dataset, config.sample.num_samples,
                                   seed=config.seed + 1)
  state = init_state(model, tx, config.seed)
  chunk = make_train_chunk(model, schedule, tx, config, jnp.asarray(pts), jnp.asarray(lbl))
  start = time.time()
  num_chunks = max(1, config.train.num_steps // config.train.log_every)
  for i in range(num_chunks):
    state, loss = chunk(state)
    if (i + 1) % max(1, num_chunks // 5) == 0 or i + 1 == num_chunks:
      logging.info("step %d/%d  loss %.4f  (%.1f s)", int(state.step),
                   config.train.num_steps, float(loss), time.time() - start)
  train_seconds = time.time() - start

  # Ask for the classes in the proportions of a fresh draw of the data.
  n = config.sample.num_samples
  want_pts, want = sample_points(config.dataset, n, seed=config.seed + 2)
  noise = jax.random.normal(jax.random.PRNGKey(config.seed + 3), (n, 2))
  metrics: dict[str, Any] = {
      "train_seconds": round(train_seconds, 2), "final_loss": float(loss),
      "swd_heldout_data": sliced_wasserstein(want_pts, ref_pts),
      "swd_gaussian_noise": sliced_wasserstein(np.asarray(noise), ref_pts),
      "samplers": {}}
  panels = [(f"data ({config.dataset})", ref_pts, ref_lbl)]
  for name in config.sample.samplers:
    run = make_sample_fn(model, schedule, config, name)
    x = np.asarray(run(state.ema_params, noise, jnp.asarray(want), jax.random.PRNGKey(7)))
    if not np.all(np.isfinite(x)):
      raise FloatingPointError(f"Sampler {name!r} produced non-finite samples.")
    swd = sliced_wasserstein(x, ref_pts)
    acc = nearest_label_accuracy(x, want, ref_pts, ref_lbl)
    metrics["samplers"][name] = {"swd": swd, "class_accuracy": acc}
    panels.append((f"{name}, {config.sample.num_steps} steps\nSWD {swd:.3f}, "
                   f"class acc {acc:.2f}", x, want))
  os.makedirs(workdir, exist_ok=True)
  metrics["figure"] = scatter_panels(panels, os.path.join(workdir, "samples.png"))
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  return metrics
