"""A flow-matching stage through the library's own paths: the stage sampler integrates
the network's velocity exactly as `diffusion.flow.sample` does, the trainer trains it,
and the cascade samples it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train.conftest import tiny_config
from videojax import diffusion
from videojax.cascade import stages as S
from videojax.cascade.chain import Cascade
from videojax.cascade.sampling import SampleSettings, make_stage_sampler
from videojax.diffusion import flow
from videojax.nn.stage import StageNetwork
from videojax.train import trainer


class _Velocity(nn.Module):
  """v = w * (z / 2 - sin(logsnr)): depends on z and on the noise level, so a wrong
  grid or a wrong noise level passed to the network shows in the samples."""

  @nn.compact
  def __call__(self, z, logsnr, **kw):
    w = self.param("w", nn.initializers.ones, ())
    return w * (0.5 * z - jnp.sin(logsnr)[:, None, None, None, None])


@pytest.mark.parametrize("sampler", flow.SAMPLERS)
def test_stage_sampler_is_flow_sample_on_the_stage_time_grid(sampler):
  network = StageNetwork(_Velocity())
  params = network.model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 4, 4, 3)),
                              jnp.zeros((1,)))
  settings = SampleSettings(sampler=sampler, num_steps=5, guidance_scale=1.0,
                            threshold="none")
  shape, rng = (2, 2, 4, 4, 3), jax.random.PRNGKey(3)
  out = make_stage_sampler(network, diffusion.get_schedule("cosine"), "v", settings,
                           formulation="flow", time_shift=2.0)(params, shape, {}, rng)
  noise = jax.random.normal(jax.random.split(rng, 3)[0], shape, jnp.float32)
  want = flow.sample(lambda z, ls: network.apply(params, z, ls), noise, sampler=sampler,
                     num_steps=5, shift=2.0)
  np.testing.assert_allclose(out, jnp.clip(want, -1, 1), atol=1e-6)
  # another shift is another grid, hence another video
  other = make_stage_sampler(network, diffusion.get_schedule("cosine"), "v", settings,
                             formulation="flow")(params, shape, {}, rng)
  assert float(jnp.max(jnp.abs(other - out))) > 1e-3


def test_flow_stage_refuses_vp_sampling_settings():
  network, schedule = StageNetwork(_Velocity()), diffusion.get_schedule("cosine")
  with pytest.raises(ValueError, match=r"flow-matching stage samples with one of \('euler', "
                                       r"'heun'\), got sample.sampler='ddim'"):
    make_stage_sampler(network, schedule, "v", SampleSettings(sampler="ddim"),
                       formulation="flow")
  with pytest.raises(ValueError, match="a flow-matching stage starts from noise"):
    make_stage_sampler(network, schedule, "v", SampleSettings(sampler="euler",
                                                              start_logsnr=2.0),
                       formulation="flow")
  with pytest.raises(ValueError, match="Unknown formulation 'edm'"):
    make_stage_sampler(network, schedule, "v", SampleSettings(), formulation="edm")


def test_tiny_flow_stage_learns_and_samples_through_the_cascade(tiny_data_dir, tmp_path,
                                                                caplog):
  c = tiny_config(tiny_data_dir, 100, one_level=True)
  flow_base = S.load_config_file("configs/base.py:tiny_flow")
  c.diffusion, c.sample = flow_base.diffusion, flow_base.sample
  c.optim.total_steps = 100
  c.train.log_every = 10
  caplog.set_level("INFO")
  out = trainer.train_and_evaluate(c, str(tmp_path / "flow"))
  losses = [float(r.getMessage().split(" loss ")[1].split()[0]) for r in caplog.records
            if " loss " in r.getMessage()]
  # The velocity target eps - x has E|.|^2 = 1 + E x^2, where an untrained network's
  # loss starts; measured (2-core CPU, batch 4, one batch per logged value): first three
  # logged losses 1.68-1.76, last three 0.91-1.12 (ratio 0.6).
  print("logged losses", [round(x, 3) for x in losses])
  assert len(losses) == 10 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
  assert all(np.isfinite(out[k]) for k in out if k.startswith("eval_loss"))

  cascade = S.load_config_file("configs/cascades/tiny.py")
  cascade.order = ("base",)
  cascade.stages.base.checkpoint = str(tmp_path / "flow")
  cascade.stages.base.config = ""  # the training config recorded with the checkpoint
  cascade.stages.base.sample.sampler = "euler"
  video = Cascade.load(cascade).sample(["a red circle moving left on a black background"],
                                       seed=0)
  assert video.shape == (1, 4, 8, 8, 3) and video.dtype == np.uint8
  assert video.std() > 5  # a picture, not a constant
