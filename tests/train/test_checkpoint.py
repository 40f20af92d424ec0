"""Checkpoints: exact round trip, no overwrite, keep-K, other meshes, mismatch errors."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.parallel import sharding
from videojax.train.checkpoint import Checkpointer


@flax.struct.dataclass
class State:
  step: jax.Array
  params: dict


def _state(mesh=None):
  params = {"dense": {"kernel": jnp.arange(64.0).reshape(8, 8), "bias": jnp.ones(8)}}
  if mesh is not None:
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", "tensor"))
    params["dense"]["kernel"] = jax.device_put(params["dense"]["kernel"], spec)
  return State(jnp.int32(7), params)


def _abstract(state, mesh):
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  kern = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "tensor")))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=kern if x.ndim == 2 else rep), state)


def test_round_trip_keep_k_and_no_overwrite(tmp_path):
  ck = Checkpointer(str(tmp_path), save_every=10, keep=2)
  state = _state()
  for step in (10, 20, 30):
    assert ck.maybe_save(step, state.replace(step=jnp.int32(step)),
                         data_state={"next_index": step}, config={"lr": 0.1})
  assert not ck.maybe_save(31, state, data_state={}, config={})  # not a save step
  ck.wait()
  assert ck.all_steps() == [20, 30] and ck.latest_step() == 30
  assert not ck.save(30, _state().replace(params={"dense": {"kernel": jnp.zeros((8, 8)),
                                                            "bias": jnp.zeros(8)}}),
                     data_state={}, config={})  # exists: not overwritten
  ck.wait()
  mesh = sharding.make_mesh({"data": -1})
  restored, data, config = ck.restore(_abstract(state, mesh))
  assert int(restored.step) == 30 and data == {"next_index": 30} and config == {"lr": 0.1}
  np.testing.assert_array_equal(restored.params["dense"]["kernel"], state.params["dense"]["kernel"])
  ck.close()


def test_restore_onto_another_mesh_and_mismatch_error(tmp_path):
  mesh_a = sharding.make_mesh({"data": 2, "tensor": 4})
  ck = Checkpointer(str(tmp_path), save_every=1, keep=1)
  ck.save(1, _state(mesh_a), data_state={}, config={})
  ck.wait()
  mesh_b = sharding.make_mesh({"data": 8})
  restored, _, _ = ck.restore(_abstract(_state(), mesh_b))
  kernel = restored.params["dense"]["kernel"]
  np.testing.assert_array_equal(kernel, _state().params["dense"]["kernel"])
  assert kernel.sharding.mesh.shape == mesh_b.shape
  other = State(jnp.int32(0), {"dense": {"kernel": jnp.zeros((8, 4)), "scale": jnp.ones(8)}})
  with pytest.raises(ValueError, match=r"does not match the model.*(bias|scale|kernel)"):
    ck.restore(_abstract(other, mesh_b))
  ck.close()
