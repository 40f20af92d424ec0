"""Device meshes and logical-to-mesh sharding rules.

Modules name their parameter and activation axes logically ('embed', 'heads',
'conv_out', 'batch', ...); the rules here map those names to the mesh axes 'data',
'fsdp' and 'tensor'. Configs may carry their own rules (one set per sub-network, as
maxdiffusion keeps them); these are the defaults.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (None: replicated). Activations are sharded over the
# batch; parameters over 'fsdp' on their input side and 'tensor' on their output side.
UNET_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("frames", None), ("height", None), ("width", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("conv_in", "fsdp"),
    ("conv_out", "tensor"),
    ("conv_t", None), ("conv_h", None), ("conv_w", None),
    ("image_channels", None),
    ("relpos_buckets", None),
    ("vocab", None),
)


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with axes ('data', 'fsdp', 'tensor').

  Args:
    shape: size per axis name; missing axes have size 1 and one axis may be -1
      (the rest of the devices).
    devices: the devices to use.

  Returns:
    A `Mesh` whose axes are of type Auto, so logical constraints inside jitted
    functions are sharding hints that XLA propagates.
  """
  devices = list(devices if devices is not None else jax.devices())
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}; expected names from {MESH_AXES}.")
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {dict(shape)}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide by the fixed axes' {known}.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices) or min(sizes) < 1:
    raise ValueError(f"Mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices; "
                     f"{len(devices)} are available.")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_shardings(abstract_tree: Any, mesh: Mesh,
                      rules: Sequence[tuple[str, Any]] = UNET_RULES) -> Any:
  """NamedShardings for a tree of (boxed) abstract parameters, from their logical names."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Sharding of a [B, ...] input: batch over ('data', 'fsdp'), the rest replicated."""
  return NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def sharded_init(init_fn, mesh: Mesh, rules: Sequence[tuple[str, Any]] = UNET_RULES):
  """The one sharding recipe: abstract init -> logical specs -> NamedShardings -> jit.

  Args:
    init_fn: () -> a pytree whose parameters are boxed with logical names (flax
      `nn.with_logical_partitioning`); e.g. a TrainState built from `model.init`.
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.

  Returns:
    (state, shardings): the state materialised directly sharded (never whole on one
    device) with its boxes removed, and the matching tree of NamedShardings.
  """
  abstract = jax.eval_shape(init_fn)
  shardings = logical_shardings(abstract, mesh, rules)
  state = jax.jit(lambda: nn.meta.unbox(init_fn()), out_shardings=shardings)()
  return state, shardings
