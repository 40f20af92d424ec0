"""Checkpoints: bitwise round trip, keep-K, async, other meshes, mismatch errors, atomicity."""

from __future__ import annotations

import os
import pathlib
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from videojax.parallel import sharding
from videojax.io.checkpoint import Checkpointer

DATA_STATE = {"next_index": 17, "epoch": 2, "shuffle_seed": [3, 4]}
CONFIG = {"lr": 1e-3, "model": {"channels": [32, 64], "attn": True}, "name": "tiny",
          "note": None}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  ema_params: dict


def _state(seed: int = 0, step: int = 7) -> TrainState:
  """A small TrainState: f32 and bf16 params, adamw state (with empty nodes), EMA."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = {"dense": {"kernel": jax.random.normal(k1, (8, 8)),
                      "bias": jax.random.normal(k2, (8,)).astype(jnp.bfloat16)},
            "embed": jax.random.normal(k3, (8, 16))}
  opt_state = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)).init(params)
  opt_state = jax.tree.map(lambda x: x + 0.5 if x.dtype != jnp.int32 else x + 3, opt_state)
  ema = jax.tree.map(lambda x: x * 0.9, params)
  return TrainState(jnp.int32(step), params, opt_state, ema)


def _abstract(state, mesh, spec_2d=None):
  """ShapeDtypeStructs of `state` with 2-D leaves sharded by `spec_2d`, the rest replicated."""
  def one(x):
    spec = spec_2d if x.ndim == 2 and spec_2d is not None else P()
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))
  return jax.tree.map(one, state)


def _assert_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


def _files(step_dir: pathlib.Path) -> dict[str, tuple[bytes, int]]:
  return {str(p.relative_to(step_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
          for p in sorted(step_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def mesh8():
  return sharding.make_mesh({"data": 8})


def test_bitwise_round_trip_of_dataclass_state_and_dicts(tmp_path, mesh8):
  state = _state()
  with Checkpointer(str(tmp_path), save_every=5, keep=3) as ck:
    assert ck.latest_step() is None and ck.all_steps() == []
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
      ck.restore(_abstract(state, mesh8))
    assert ck.save(7, state, data_state=DATA_STATE, config=CONFIG)  # force: not a multiple of 5
    restored, data_state, config = ck.restore(_abstract(state, mesh8))
  assert isinstance(restored, TrainState)
  _assert_bitwise_equal(restored, state)
  assert restored.params["dense"]["bias"].dtype == jnp.bfloat16
  assert restored.step.dtype == jnp.int32 and int(restored.step) == 7
  assert data_state == DATA_STATE and config == CONFIG


def test_async_save_returns_before_writing_then_wait_restores(tmp_path, mesh8):
  # 16 MB: writing takes far longer than returning from save().
  state = {"big": jnp.arange(4 * 1024 * 1024, dtype=jnp.float32).reshape(2048, 2048),
           "step": jnp.int32(10)}
  ck = Checkpointer(str(tmp_path), save_every=10, keep=2, async_save=True)
  assert ck.maybe_save(10, state, data_state={"i": 1}, config={})
  assert not (tmp_path / "10").exists()  # not finalized yet: only a temporary directory
  assert ck.all_steps() == [10]  # but already tracked, so not saved twice
  ck.wait()
  assert (tmp_path / "10").is_dir()
  assert not [p for p in os.listdir(tmp_path) if "tmp" in p]
  restored, data_state, _ = ck.restore(_abstract(state, mesh8, P("data", None)))
  _assert_bitwise_equal(restored, state)
  assert data_state == {"i": 1}
  ck.close()


def test_keeps_the_last_k_and_only_saves_multiples(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path.parent)  # a relative directory (Orbax 0.12.10+ refuses those)
  ck = Checkpointer(tmp_path.name, save_every=10, keep=2)
  assert ck.directory == str(tmp_path)
  saved = [s for s in (10, 15, 20, 30, 35, 40)
           if ck.maybe_save(s, _state(step=s), data_state={"i": s}, config={})]
  ck.wait()
  assert saved == [10, 20, 30, 40]
  assert ck.all_steps() == [30, 40] and ck.latest_step() == 40
  assert sorted(os.listdir(tmp_path)) == ["30", "40"]
  ck.close()
  reopened = Checkpointer(str(tmp_path), save_every=10, keep=2)
  assert reopened.all_steps() == [30, 40]
  _, data_state, _ = reopened.restore(_abstract(_state(), sharding.make_mesh({"data": 8})),
                                      step=30)
  assert data_state == {"i": 30}
  with pytest.raises(FileNotFoundError, match=r"No checkpoint step 20 .*\[30, 40\]"):
    reopened.restore(_abstract(_state(), sharding.make_mesh({"data": 8})), step=20)
  reopened.close()


@pytest.mark.parametrize("new_shape, spec", [({"data": 8}, P("data", None)),
                                             ({"data": 4, "tensor": 2}, P("tensor", "data"))])
def test_restores_onto_a_different_mesh(tmp_path, new_shape, spec):
  mesh_a = sharding.make_mesh({"data": 2, "tensor": 4})
  state = _state()
  # Written with every 2-D leaf sharded over the (2, 4) data x tensor mesh.
  state_a = jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), state,
                         _abstract(state, mesh_a, P("data", "tensor")))
  assert state_a.params["dense"]["kernel"].sharding.mesh.shape["tensor"] == 4
  ck = Checkpointer(str(tmp_path), save_every=1, keep=1)
  ck.save(1, state_a, data_state={}, config={})
  ck.wait()
  mesh_b = sharding.make_mesh(new_shape)
  abstract = _abstract(state, mesh_b, spec)
  restored, _, _ = ck.restore(abstract)
  _assert_bitwise_equal(restored, state)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract)):
    assert got.sharding == want.sharding
    assert got.sharding.mesh.shape == mesh_b.shape
  kernel = restored.params["dense"]["kernel"]
  assert len({s.device for s in kernel.addressable_shards}) == 8
  assert {s.data.shape for s in kernel.addressable_shards} == {
      kernel.sharding.shard_shape(kernel.shape)}
  ck.close()


def test_mismatch_error_names_the_differing_keys(tmp_path, mesh8):
  ck = Checkpointer(str(tmp_path), save_every=1, keep=1)
  state = _state()
  ck.save(1, state, data_state={}, config={})
  ck.wait()
  params = dict(state.params)
  params["dense"] = {"kernel": jnp.zeros((8, 4)),  # changed shape
                     "scale": state.params["dense"]["bias"]}  # renamed from 'bias'
  params["embed"] = params["embed"].astype(jnp.bfloat16)  # changed dtype
  other = state.replace(params=params)
  with pytest.raises(ValueError, match="does not match the target state") as err:
    ck.restore(_abstract(other, mesh8))
  msg = str(err.value)
  for key in ("params/dense/bias", "params/dense/scale", "params/dense/kernel", "params/embed"):
    assert key in msg
  assert "(8, 8) float32" in msg and "(8, 4) float32" in msg and "bfloat16" in msg
  assert "ema_params" not in msg and "opt_state" not in msg  # unchanged parts not listed
  no_sharding = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  with pytest.raises(ValueError, match="needs a sharding on every leaf"):
    ck.restore(no_sharding)
  ck.close()


def test_unfinished_temporary_checkpoint_is_not_latest(tmp_path, mesh8):
  ck = Checkpointer(str(tmp_path), save_every=10, keep=3)
  ck.save(10, _state(step=10), data_state={"i": 10}, config={})
  ck.close()
  # An interrupted save of step 20: complete-looking files, never renamed from tmp.
  shutil.copytree(tmp_path / "10", tmp_path / "20.orbax-checkpoint-tmp")
  (tmp_path / "30.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
  ck = Checkpointer(str(tmp_path), save_every=10, keep=3)
  assert ck.latest_step() == 10 and ck.all_steps() == [10]
  restored, data_state, _ = ck.restore(_abstract(_state(), mesh8))
  assert int(restored.step) == 10 and data_state == {"i": 10}
  # A later save of the same step replaces the leftover and becomes the latest.
  new = _state(seed=1, step=20)
  assert ck.save(20, new, data_state={"i": 20}, config={})
  ck.wait()
  assert ck.latest_step() == 20 and not (tmp_path / "20.orbax-checkpoint-tmp").exists()
  restored, data_state, _ = ck.restore(_abstract(new, mesh8))
  _assert_bitwise_equal(restored, new)
  assert data_state == {"i": 20}
  ck.close()


def test_existing_step_is_never_overwritten(tmp_path, mesh8):
  first = _state(seed=0, step=10)
  ck = Checkpointer(str(tmp_path), save_every=10, keep=3)
  assert ck.save(10, first, data_state={"i": 1}, config={"v": 1})
  assert not ck.save(10, _state(seed=1), data_state={"i": 2}, config={"v": 2})  # in flight
  ck.wait()
  before = _files(tmp_path / "10")
  other = _state(seed=2, step=10)
  assert not ck.save(10, other, data_state={"i": 3}, config={"v": 3}, force=True)
  assert not ck.maybe_save(10, other, data_state={"i": 3}, config={"v": 3})
  ck.close()
  again = Checkpointer(str(tmp_path), save_every=10, keep=3)  # a fresh process, same dir
  assert not again.save(10, other, data_state={"i": 4}, config={"v": 4})
  again.wait()
  assert _files(tmp_path / "10") == before
  restored, data_state, config = again.restore(_abstract(first, mesh8))
  _assert_bitwise_equal(restored, first)
  assert data_state == {"i": 1} and config == {"v": 1}
  again.close()


def test_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="keep >= 1"):
    Checkpointer(str(tmp_path), save_every=1, keep=0)
  ck = Checkpointer(str(tmp_path), save_every=1, keep=1)
  with pytest.raises(TypeError, match="config must be a JSON-serialisable dict"):
    ck.save(1, _state(), data_state={}, config=[("lr", 1.0)])
  assert ck.all_steps() == []
  ck.close()
