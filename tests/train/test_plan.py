"""The scale planner on the tiny base stage and 8 fake CPU devices (tests/conftest.py).

Two compiled plans are shared by the tests: pure data parallelism over 8 devices (with
the sampler call) and a data=2, fsdp=2, tensor=2 mesh. Compiling them dominates this
module's time; the persistent compile cache (conftest.py) cuts it by about three quarters.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from videojax.cascade.stages import load_config_file
from videojax.nn import unet3d
from videojax.parallel import plan as plan_lib

BATCH = 8  # the smallest global batch that data=8 divides


@pytest.fixture(scope="module")
def config():
  return load_config_file("configs/base.py:tiny")


@pytest.fixture(scope="module")
def plans(config):
  return {"dp": plan_lib.plan(config, {"data": 8}, 8, BATCH, name="base"),
          "3d": plan_lib.plan(config, {"data": 2, "fsdp": 2, "tensor": 2}, 8, BATCH,
                              compile_sampler=False)}


def test_param_count_equals_model_init(config, plans):
  model = unet3d.from_config(config.model)
  t, h, w = config.data.frames, config.data.height, config.data.width
  length, dim = config.text.max_len, config.model.text_dim
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, t, h, w, 3)), jnp.zeros((1,)),
                      text=jnp.zeros((1, length, dim)), text_mask=jnp.ones((1, length)))
  count = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(params)))
  assert plans["dp"]["param_count"] == plans["3d"]["param_count"] == count


def test_per_device_state_bytes_follow_the_shardings(plans):
  dp, sharded = plans["dp"]["per_device_bytes"], plans["3d"]["per_device_bytes"]
  # data parallelism replicates: every device holds all float32 parameters
  assert dp["params"] == 4 * plans["dp"]["param_count"] == dp["ema_params"]
  # fsdp=2 x tensor=2 splits the kernels (the small vectors stay replicated)
  assert sharded["params"] < 0.5 * dp["params"]
  assert sharded["ema_params"] == sharded["params"]
  for p in (dp, sharded):  # Adam's mu and nu are sharded like the parameters
    assert 2 * p["params"] <= p["opt_state"] <= 2 * p["params"] + 64
  # the batch is split over data x fsdp: 8 ways, then 4 ways
  assert sharded["batch"] == 2 * dp["batch"]


def test_compiled_arguments_are_the_sharded_state_and_batch(plans):
  for p in plans.values():
    memory = p["train"]["memory"]
    # step counter (int32) and the rng key (2 x uint32) are the other arguments
    assert memory["argument"] == sum(p["per_device_bytes"].values()) + 4 + 8
    # the state is donated: its buffers are reused for the new state
    state = sum(p["per_device_bytes"][k] for k in ("params", "opt_state", "ema_params"))
    assert memory["alias"] >= state
    assert memory["temp"] > 0
  assert plans["3d"]["train"]["memory"]["peak"] < plans["dp"]["train"]["memory"]["peak"]


def test_flops_match_the_analytic_count(plans):
  for p in plans.values():
    train = p["train"]
    # the unpartitioned module is the whole step; its matmuls dominate
    assert 0.8 < train["flops_lowered"] / p["analytic_train_flops"] < 1.25
    # the compiled module is one device's program: about 1/8 of the step, plus the
    # work that is replicated rather than split (norms, the tensor axis)
    ratio = train["flops_per_device"] * 8 / train["flops_lowered"]
    assert 0.95 < ratio < 1.5
  sampler = plans["dp"]["sampler"]
  assert sampler["guided"] and sampler["network_batch"] == 2 * BATCH
  assert 0.8 < sampler["flops_lowered"] / sampler["analytic_flops"] < 1.25
  # a forward pass on 2B costs about 2/3 of a train step (3 passes) on B
  assert 0.5 < sampler["flops_lowered"] / plans["dp"]["train"]["flops_lowered"] < 0.9


def test_collectives(plans):
  dp, sharded = plans["dp"]["train"]["collectives"], plans["3d"]["train"]["collectives"]
  # data parallelism all-reduces the gradients once: the parameters' bytes
  assert dp["all-gather"]["count"] == 0
  assert abs(dp["all-reduce"]["bytes"] / plans["dp"]["per_device_bytes"]["params"] - 1) < 0.01
  # fsdp gathers the parameter shards before use
  assert sharded["all-gather"]["count"] > 0


def test_bad_inputs_raise_before_compiling(config):
  with pytest.raises(ValueError, match="spans 4 devices but 8"):
    plan_lib.plan(config, {"data": 4}, 8, BATCH)
  with pytest.raises(ValueError, match="Unknown mesh axes"):
    plan_lib.plan(config, {"data": 4, "model": 2}, 8, BATCH)
  with pytest.raises(ValueError, match="does not divide"):
    plan_lib.plan(config, {"data": 8}, 8, 4)
  with pytest.raises(ValueError, match="cannot be sharded"):  # 2 heads at level 0
    plan_lib.plan(config, {"data": 2, "tensor": 4}, 8, BATCH)
  with pytest.raises(ValueError, match="JAX sees 8"):
    plan_lib.plan(config, {"data": 16}, 16, 16)
  with pytest.raises(ValueError, match="not axis=size"):
    plan_lib.parse_mesh("data:8")
  assert plan_lib.parse_mesh("data=8, fsdp=2") == {"data": 8, "fsdp": 2, "tensor": 1}


def test_collective_traffic_parses_hlo():
  hlo = """
  %p = f32[16,32]{1,0} parameter(0)
  %q = bf16[8]{0} parameter(1)
  %all-gather = f32[64,32]{1,0} all-gather(%p), channel_id=1, dimensions={0}
  %ar = (f32[16,32]{1,0}, bf16[8]{0}) all-reduce(%p, /*index=1*/%q), to_apply=%add
  %rs-start = f32[4,32]{1,0} reduce-scatter-start(f32[16,32]{1,0} %p), dimensions={0}
  %rs-done = f32[4,32]{1,0} reduce-scatter-done(%rs-start)
  """
  traffic = plan_lib.collective_traffic(hlo)
  assert traffic["all-gather"] == {"count": 1, "bytes": 16 * 32 * 4}
  assert traffic["all-reduce"] == {"count": 1, "bytes": 16 * 32 * 4 + 8 * 2}
  assert traffic["reduce-scatter"] == {"count": 1, "bytes": 16 * 32 * 4}


def test_step_time_and_table(plans):
  assert math.isclose(plan_lib.step_seconds(459e12 * 64 * 0.5, 64, 459e12, 0.5), 1.0)
  with pytest.raises(ValueError, match="MFU"):
    plan_lib.step_seconds(1.0, 1, 1.0, 45.0)
  table = plan_lib.format_table(list(plans.values()), mfu=0.45, memory_gib=16.0)
  lines = table.splitlines()
  assert len(lines) == 2 + len(plans) and "step @45% h100" in lines[0]
  assert "| base | 8 | data=8,fsdp=1,tensor=1 | 8 |" in lines[2]
  assert "yes" in lines[2]  # a 1M-parameter model fits in 16 GiB
  assert "base" in plan_lib.format_report(plans["dp"])


def test_lower_only_plan_gives_the_same_state_and_flops(config, plans):
  lowered = plan_lib.plan(config, {"data": 8}, 8, BATCH, compile=False, compile_sampler=False)
  assert lowered["per_device_bytes"] == plans["dp"]["per_device_bytes"]
  assert lowered["train"]["flops_lowered"] == plans["dp"]["train"]["flops_lowered"]
  assert not lowered["train"]["memory"] and not lowered["train"]["collectives"]
  row = plan_lib.format_table([lowered]).splitlines()[2].split(" | ")
  assert row[6:9] == ["-", "-", "-"]  # temp, peak, fits: need a compiled program
  assert "XLA memory" not in plan_lib.format_report(lowered)
