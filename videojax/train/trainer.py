"""The trainer: one loop that trains any stage from its config.

`train_and_evaluate(config, workdir)` builds the mesh, the data pipeline (with the
frozen text encoder's embeddings cached next to the dataset), the model and a sharded
train state, resumes from the workdir's latest checkpoint (parameters, optimizer, EMA
and the data iterator's position), and runs the jitted step, logging scalars to
TensorBoard event files, evaluating a held-out loss at fixed noise levels, and
saving checkpoints. At start it logs a parameter overview; every
`train.preview_every` steps it samples the stage on a few validation examples (EMA
parameters, the config's `sample` settings) and writes the videos as GIFs into the
workdir and TensorBoard. SIGTERM (a preempted or cancelled job) stops the run after
the current step and saves it. A non-finite loss stops the run at that step, naming it and the
last good checkpoint; nothing is written after it.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from videojax.diffusion import flow
from videojax.data import builders, pipeline
from videojax.nn import text as text_lib
from videojax.cascade import weights
from videojax.cascade.sampling import SampleSettings, stage_sampler
from videojax.io.checkpoint import Checkpointer
from videojax.nn import inflation
from videojax.parallel import sharding
from videojax.train import observe
from videojax.train import setup as setup_lib
from videojax.train import step as step_lib

Array = jax.Array
RUN_AHEAD = 2  # train steps the device may be ahead of the host's loss checks


def _view(d: ml_collections.ConfigDict) -> pipeline.StageView:
  return pipeline.StageView(d.kind, d.frames, d.height, d.width, d.frame_stride,
                            d.temporal_factor, d.spatial_factor, d.crop)


def _text_cache(config, builder, data_dir: str) -> text_lib.EmbeddingCache:
  """The frozen encoder's caption embeddings of the dataset, built on first use."""
  t = config.text
  path = text_lib.cache_path(data_dir, builder.name, builder.builder_config.name, t.encoder,
                             t.max_len)
  if os.path.exists(path):
    return text_lib.EmbeddingCache.load(path)
  encoder = text_lib.build_text_encoder(t.encoder, path=t.path or None, max_len=t.max_len)
  if encoder.dim != config.model.get("text_dim", 0):
    raise ValueError(f"config.model.text_dim is {config.model.text_dim} but the "
                     f"{t.encoder} encoder gives {encoder.dim}-wide embeddings.")
  return text_lib.EmbeddingCache.build(encoder, builders.captions(builder), path)


def stage_datasets(config: ml_collections.ConfigDict, batch_size: int | None = None
                   ) -> Callable[..., Any]:
  """`make(split, seed, **make_dataset_kwargs)`: this host's batched datasets of a stage.

  Builds the stage's dataset (if missing) and its text-embedding cache once; `batch_size`
  is global (default: config.data.batch_size) and split over the hosts.
  """
  data_dir = config.data.data_dir or builders.DEFAULT_DATA_DIR
  builder = builders.build(builders.get_builder_class(config.data.dataset),
                           config.data.config or None, data_dir=data_dir,
                           **({"folder": config.data.folder} if config.data.folder else {}))
  cache = _text_cache(config, builder, data_dir) if config.model.get("text_dim") else None
  view = _view(config.data)
  n_proc = jax.process_count()
  batch_size = batch_size or config.data.batch_size
  if batch_size % n_proc:
    raise ValueError(f"Global batch {batch_size} must divide by {n_proc} hosts.")

  def make(split: str, seed: int, **kw) -> Any:
    return pipeline.make_dataset(
        builders.data_source(builder, split), view, batch_size=batch_size // n_proc,
        seed=seed, text_cache=cache, image_fraction=config.data.image_fraction,
        process_index=jax.process_index(), process_count=n_proc, **kw)

  make.splits = tuple(builder.info.splits.keys())  # e.g. a video folder may have no validation
  return make


def _eval_loss_fn(network, config):
  """Held-out loss at fixed noise levels (no dropout, no augmentation noise)."""
  d = config.diffusion
  residual = d.residual

  def eval_loss(params, batch, logsnr_value):
    x = step_lib.diffusion_target(network, batch, residual)
    b = x.shape[0]
    level = jnp.full((b,), logsnr_value, jnp.float32)
    if step_lib.formulation(d) == "flow":  # the time whose log-SNR this is
      level = flow.time_from_logsnr(level)
    eps = jax.random.normal(jax.random.PRNGKey(0), x.shape)
    kwargs = step_lib.model_inputs(batch, network)
    if "cond_video" in kwargs:
      kwargs["aug_logsnr"] = jnp.full((b,), d.logsnr_max, jnp.float32)
    mask = 1.0 - kwargs["cond_mask"] if "cond_mask" in kwargs else None
    # the unweighted objective (VP: mean squared error of the parameterization's target)
    plain = ml_collections.ConfigDict({**d.to_dict(), "weighting": "uniform"})
    return jnp.mean(step_lib.noised_loss(network, params, plain, x, eps, level, mask,
                                         **kwargs))

  return jax.jit(eval_loss)


def _preview(config, network):
  """`preview(params, batch, step, writer)`: samples the first validation examples."""
  sampler = stage_sampler(config, network, SampleSettings.from_config(config.sample))
  n = config.train.preview_count

  def preview(params, batch, step: int, writer: observe.Writer | None) -> str | None:
    batch = {k: np.asarray(v)[:n] for k, v in batch.items()}
    cond = {k: v for k, v in step_lib.model_inputs(batch).items() if k != "is_image"}
    video = np.asarray(sampler(params, batch["video"].shape, cond,
                               jax.random.PRNGKey(config.seed)))  # [n, T, H, W, C]
    if writer is None:  # every process samples (global arrays); process 0 writes
      return None
    rows = []
    for i in range(len(video)):
      shown = [batch["video"][i], video[i]]  # ground truth | sample
      if "cond_video" in batch:  # conditioning first
        shown.insert(0, batch["cond_video"][i])
      rows.append(observe.preview_grid(shown))
    return writer.video(step, "samples", np.concatenate(rows, axis=1), config.data.fps)

  return preview


class _StopOnSignal:
  """Turns SIGTERM into a request to stop after the current step (main thread only)."""

  def __init__(self):
    self.requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _init_from(state: step_lib.TrainState, shardings: Any, path: str) -> step_lib.TrainState:
  """The fresh state with every parameter that the weights at `path` have copied in.

  Make-A-Video style: the source is the same U-Net with fewer layers (an image model, or a
  video model with fewer attention layers); the added layers keep their zero-initialised
  residual outputs, so training starts from the source model's function. Both the
  parameters and their EMA start at the source's (EMA) weights; the optimizer starts fresh.
  """
  source, _ = weights.load(path)
  # Added layers keep each tree's own (sharded) buffers; copied ones go host -> shards.
  return state.replace(
      params=jax.device_put(inflation.inflate(source, state.params), shardings.params),
      ema_params=jax.device_put(inflation.inflate(source, state.ema_params),
                                shardings.ema_params))


def format_metrics(metrics: dict[str, Any]) -> str:
  """The metrics `train_and_evaluate` returns as one line: 'final metrics: loss 0.9049, ...'."""
  parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()]
  return "final metrics: " + (", ".join(parts) or "none (no step was run)")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains a stage; resumes from `workdir` if it holds checkpoints.

  A new run (no checkpoints yet) with `config.train.init_from` set starts from those
  weights (an exported stage or a training workdir; see `_init_from`).

  Returns:
    The last logged metrics (loss, held-out losses, steps/s).
  """
  init_from = config.train.get("init_from", "")
  if init_from and weights.kind(init_from) is None:
    raise FileNotFoundError(f"train.init_from={init_from!r} holds no weights: give an exported "
                            f"stage directory ({weights.PARAMS}) or a training workdir "
                            "(checkpoints/), or '' to start from random weights.")
  os.makedirs(workdir, exist_ok=True)
  devices = jax.devices()[:config.mesh.num_devices] if config.mesh.num_devices else None
  mesh = sharding.make_mesh({"data": config.mesh.data, "fsdp": config.mesh.fsdp,
                             "tensor": config.mesh.tensor}, devices)
  make = stage_datasets(config)
  train_ds = make("train", config.seed)
  eval_ds = None  # held-out losses and previews need a validation split
  if "validation" in make.splits:
    eval_ds = make("validation", config.seed + 1, shuffle=False, num_epochs=1)
  else:
    logging.warning("%s has no validation split: training without held-out losses and "
                    "previews.", config.data.dataset)

  setup = setup_lib.train_setup(config, mesh)
  network, rules = setup.network, setup.rules
  state, state_shardings = setup.init_state(), setup.state_shardings
  logging.info("Mesh %s; parameters:\n%s", dict(mesh.shape),
               observe.parameter_overview(state.params))

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                      save_every=config.train.checkpoint_every,
                      keep=config.train.keep_checkpoints)
  data_state = None
  if ckpt.latest_step() is not None:
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            state, state_shardings)
    state, data_state, _ = ckpt.restore(abstract)
    logging.info("Resumed from step %d", int(state.step))
  elif init_from:
    state = _init_from(state, state_shardings, init_from)
    logging.info("Initialised from %s", init_from)
  it = pipeline.make_iterator(train_ds, data_state, config.data.get("workers", 0))

  jstep = setup.step
  eval_loss = _eval_loss_fn(network, config)
  preview = _preview(config, network) if config.train.preview_every else None
  writer = observe.Writer(workdir) if jax.process_index() == 0 else None
  rng = jax.random.PRNGKey(config.seed)
  last: dict[str, Any] = {}
  start_step, t0 = int(state.step), time.time()
  step = start_step  # state.step on the host: reading the device's would wait for it
  # Losses the host has not read yet: the device runs up to RUN_AHEAD steps ahead of the
  # loop (which meanwhile makes the next batches), and every step that logs, evaluates,
  # previews or saves reads them all first. A non-finite loss makes every later one
  # non-finite (the parameters are), so no checkpoint after it is ever written.
  pending: collections.deque = collections.deque()

  def check_losses(keep: int) -> None:
    while len(pending) > keep:
      at, value = pending.popleft()
      value = float(value)
      if not np.isfinite(value):
        ckpt.wait()
        stop.restore()
        raise FloatingPointError(f"Non-finite loss {value} at step {at}; last good checkpoint: "
                                 f"step {ckpt.latest_step()} in {workdir}/checkpoints.")

  stop = _StopOnSignal()  # SIGTERM (preemption, `kill`): save this step, then return
  while step < config.train.num_steps and not stop.requested:
    batch = pipeline.to_global(next(it), mesh)
    with nn.logical_axis_rules(rules), jax.set_mesh(mesh):
      state, metrics = jstep(state, batch, rng)
    step += 1
    pending.append((step, metrics["loss"]))
    final = step == config.train.num_steps
    log_now = final or step % config.train.log_every == 0
    eval_now = eval_ds is not None and (final or step % config.train.eval_every == 0)
    preview_now = preview is not None and eval_ds is not None and (
        final or step % config.train.preview_every == 0)
    sync = log_now or eval_now or preview_now or step % ckpt.save_every == 0
    check_losses(0 if sync else RUN_AHEAD)
    if log_now:
      loss = float(metrics["loss"])
      rate = (step - start_step) / max(time.time() - t0, 1e-9)
      last = {k: float(v) for k, v in metrics.items()}
      last["steps_per_second"] = rate
      last["examples_per_second"] = rate * config.data.batch_size
      eta = (config.train.num_steps - step) / max(rate, 1e-9)
      last["eta_seconds"] = eta
      logging.info("step %d/%d loss %.4f grad_norm %.3f lr %.2e %.2f steps/s ETA %.0fs", step,
                   config.train.num_steps, loss, last["grad_norm"], last.get("learning_rate", 0),
                   rate, eta)
      if writer is not None:
        writer.scalars(step, last, "train")
    if eval_now:
      for l in config.train.eval_logsnrs:
        vals = [float(eval_loss(state.ema_params, pipeline.to_global(eval_ds[i], mesh), l))
                for i in range(min(config.train.eval_batches, len(eval_ds)))]
        last[f"eval_loss_logsnr{l:g}"] = float(np.mean(vals))
        if writer is not None:
          writer.scalars(step, {f"loss_logsnr{l:g}": last[f"eval_loss_logsnr{l:g}"]}, "eval")
    if preview_now:
      last["preview"] = preview(state.ema_params, eval_ds[0], step, writer)
    ckpt.maybe_save(step, state, data_state=it.get_state(), config=config.to_dict())
  check_losses(0)
  stop.restore()
  if stop.requested:
    logging.info("Stopped by signal at step %d; saving it.", int(state.step))
  if ckpt.latest_step() != int(state.step):  # the last step may be a periodic save already
    ckpt.save(int(state.step), state, data_state=it.get_state(), config=config.to_dict(),
              force=True)
  ckpt.wait()
  ckpt.close()
  if hasattr(it, "close"):  # worker processes
    it.close()
  if writer is not None:
    writer.close()
  return last
