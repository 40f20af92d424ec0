"""A stage's training set-up on a mesh: network, batch shapes, sharded state, jitted step.

`train_setup(config, mesh, batch_size)` is the one recipe the trainer runs and the
scale planner compiles ahead of time (`videojax.plan`):

  1. the stage's network (`nn.stage.StageNetwork.from_config`: the registered
     denoiser and the stage kind's conditioning) and its schedule;
  2. the abstract parameters (`jax.eval_shape` of the init on the kind's abstract
     inputs) and the optimizer (which needs them to freeze parameters by name);
  3. the train state's logical shardings, and an `init_state()` that materialises it
     directly sharded;
  4. the train step jitted with those shardings, the state donated.

Nothing is allocated until `init_state()` is called, so a 5B-parameter stage sets up
on fake CPU devices for planning.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from videojax import diffusion
from videojax.nn.conditioning import cond_video_shape
from videojax.nn.stage import StageNetwork
from videojax.parallel import sharding
from videojax.train import step as step_lib


def rules_of(config: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
  """The config's logical-axis rules as hashable tuples."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in config.mesh.rules)


def batch_shapes(config: ml_collections.ConfigDict, network: StageNetwork, batch_size: int
                 ) -> dict[str, tuple]:
  """{key: (shape, dtype)} of a training batch as the input pipeline makes it."""
  d, b = config.data, batch_size
  h, w = (d.crop, d.crop) if d.kind == "ssr" and d.crop else (d.height, d.width)
  video = (b, d.frames, h, w, network.video_channels)
  shapes = {"video": (video, jnp.float32), "is_image": ((b,), jnp.bool_)}
  cond = cond_video_shape(network.kind, video, network.spatial_factor)
  if cond is not None:
    shapes["cond_video"] = (cond, jnp.float32)
  if network.kind == "tsr":
    shapes["cond_frames_mask"] = ((b, d.frames), jnp.float32)
  if network.text_dim:
    shapes["text_embeddings"] = ((b, config.text.max_len, network.text_dim), jnp.float32)
    shapes["text_mask"] = ((b, config.text.max_len), jnp.int32)
  return shapes


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """A stage's train step on a mesh, with abstract inputs.

  `step` is the jitted step (shardings from the logical axis rules, state donated);
  call or lower it on (state, batch, key) inside `nn.logical_axis_rules(rules)` and
  `jax.set_mesh(mesh)`. `init_state()` materialises a fresh state directly sharded.
  """
  network: StageNetwork
  schedule: diffusion.Schedule
  shapes: dict[str, tuple]  # batch_shapes(config, network, batch_size)
  params_shape: Any  # unboxed ShapeDtypeStructs of the parameters
  abstract_state: Any  # TrainState of sharded ShapeDtypeStructs
  state_shardings: Any
  batch: dict[str, jax.ShapeDtypeStruct]  # sharded over the batch axes
  key: jax.ShapeDtypeStruct
  rules: tuple[tuple[str, Any], ...]
  step: Any
  init_state: Callable[[], step_lib.TrainState]
  text_len: int  # text tokens per example (0: no text)
  lr_fn: Callable[[jax.Array], jax.Array]

  @property
  def param_count(self) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(self.params_shape))


def abstract_batch(shapes: dict[str, tuple], mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """ShapeDtypeStructs sharded over the batch axes."""
  return {k: jax.ShapeDtypeStruct(s, dt, sharding=sharding.batch_sharding(mesh, len(s)))
          for k, (s, dt) in shapes.items()}


def train_setup(config: ml_collections.ConfigDict, mesh, batch_size: int | None = None,
                network: StageNetwork | None = None) -> TrainSetup:
  """The trainer's recipe for `config`'s train step on `mesh`; nothing is allocated.

  `network`: the stage's network if the caller changed how it runs (e.g. the planner's
  attention chunking); by default `StageNetwork.from_config(config)`.
  """
  batch_size = int(batch_size or config.data.batch_size)
  rules = rules_of(config)
  network = network or StageNetwork.from_config(config)
  if config.data.get("image_fraction", 0.0) and not network.model.SUPPORTS_IMAGES:
    raise ValueError(f"data.image_fraction={config.data.image_fraction} trains images "
                     f"jointly, but the {config.model.name} denoiser does not support "
                     "is_image examples (SUPPORTS_IMAGES); set it to 0.")
  schedule = diffusion.schedule_from_config(config.diffusion)
  shapes = batch_shapes(config, network, batch_size)
  text_len = config.text.max_len if network.text_dim else 0
  # the denoiser's input for one example: the parameters do not depend on the batch size
  one = network.network_shape((1,) + shapes["video"][0][1:])

  def init_params():
    return network.init_abstract(jax.random.PRNGKey(config.seed), one, text_len or 1)

  params_shape = jax.eval_shape(lambda: nn.meta.unbox(init_params()))
  optim = ml_collections.ConfigDict(config.optim.to_dict())
  optim.total_steps = optim.total_steps or config.train.num_steps
  tx, lr_fn = step_lib.make_optimizer(optim, params_shape)
  boxed = jax.eval_shape(lambda: step_lib.init_state(init_params(), tx))
  state_shardings = sharding.logical_shardings(boxed, mesh, rules)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      nn.meta.unbox(boxed), state_shardings)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=NamedSharding(mesh, PartitionSpec()))

  def init_state():
    return sharding.sharded_init(lambda: step_lib.init_state(init_params(), tx), mesh,
                                 rules)[0]

  train_step = step_lib.make_train_step(network, schedule, tx, config, lr_fn)
  with nn.logical_axis_rules(rules), jax.set_mesh(mesh):
    step = jax.jit(train_step, in_shardings=(state_shardings, None, None),
                   out_shardings=(state_shardings, None), donate_argnums=0)
  return TrainSetup(network, schedule, shapes, params_shape, abstract_state, state_shardings,
                    abstract_batch(shapes, mesh), key, rules, step, init_state, text_len,
                    lr_fn)
