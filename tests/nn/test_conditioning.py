"""The conditioning references of super-resolution stages, and residual stages: the
train step's target and the sampler's reference + difference."""

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax import diffusion
from videojax.cascade.sampling import SampleSettings, make_stage_sampler
from videojax.eval import quality
from videojax.nn import conditioning as C
from videojax.nn.stage import StageNetwork
from videojax.train import step as S


def _linear_in_time(b, t, h, w):
  """[B, T, H, W, 3] with frame t = a + slope * t (per pixel)."""
  rng = np.random.default_rng(0)
  a, slope = rng.uniform(-0.5, 0.5, (2, b, 1, h, w, 3))
  return jnp.asarray(a + 0.1 * slope * np.arange(t)[None, :, None, None, None], jnp.float32)


def test_blend_given_frames_equals_the_evaluation_baseline():
  given = np.random.default_rng(1).uniform(-1, 1, (2, 4, 3, 5, 3)).astype(np.float32)
  placed, mask = C.place_frames(jnp.asarray(given), 8, stride=2)
  out = C.blend_given_frames(placed, mask)
  np.testing.assert_allclose(out, quality.blend_frames(given, 2, 8), atol=1e-6)
  np.testing.assert_array_equal(out[:, ::2], given)  # given frames exactly


def test_blend_given_frames_irregular_mask_closed_form():
  video = jnp.arange(6, dtype=jnp.float32)[None, :, None, None, None] * jnp.ones((1, 6, 2, 2, 1))
  mask = jnp.array([[0, 1, 0, 0, 1, 0]], jnp.float32)
  out = C.blend_given_frames(video * mask[..., None, None, None], mask)
  # frame 0 repeats the first given (1), 2 and 3 interpolate 1 -> 4, 5 repeats 4
  np.testing.assert_allclose(out[0, :, 0, 0, 0], [1, 1, 2, 3, 4, 4], atol=1e-6)
  none = C.blend_given_frames(video, jnp.zeros((1, 6)))
  np.testing.assert_array_equal(none, 0.0)
  with pytest.raises(ValueError, match="mask"):
    C.blend_given_frames(video, jnp.zeros((1, 5)))


def test_conditioning_reference_kinds():
  const = jnp.full((1, 2, 4, 4, 3), 0.3)
  np.testing.assert_allclose(C.conditioning_reference("ssr", const, None, 16, 16),
                             jnp.full((1, 2, 16, 16, 3), 0.3), atol=1e-6)
  with pytest.raises(ValueError, match="cond_mask"):
    C.conditioning_reference("tsr", const, None, 4, 4)
  with pytest.raises(ValueError, match="Only 'ssr' and 'tsr'"):
    C.conditioning_reference(None, const, None, 4, 4)


def test_residual_target_is_zero_where_the_reference_is_exact():
  config = importlib.import_module("configs.tsr").get_config("tiny")
  tsr = StageNetwork.from_config(config)
  video = _linear_in_time(2, 8, 4, 4)  # linear in time: blending is exact between givens
  placed, mask = C.place_frames(video[:, ::2], 8, stride=2)
  batch = {"video": video, "cond_video": placed, "cond_frames_mask": mask}
  target = S.diffusion_target(tsr, batch, residual=True)
  np.testing.assert_allclose(target[:, :7], 0.0, atol=1e-6)
  # the last frame repeats the last given one: the residual is one frame's change
  np.testing.assert_allclose(target[:, 7], video[:, 7] - video[:, 6], atol=1e-6)
  np.testing.assert_array_equal(S.diffusion_target(tsr, batch, residual=False), video)

  ssr = StageNetwork.from_config(importlib.import_module("configs.ssr").get_config("tiny"))
  flat = jnp.broadcast_to(jnp.linspace(-0.5, 0.5, 3), (2, 4, 8, 8, 3))  # constant per channel
  batch = {"video": flat, "cond_video": flat[:, :, ::2, ::2]}
  np.testing.assert_allclose(S.diffusion_target(ssr, batch, residual=True), 0.0, atol=1e-6)


def test_residual_refused_for_a_base_stage():
  config = importlib.import_module("configs.base").get_config("tiny")
  config.diffusion.residual = True
  config.optim.total_steps = 100
  tx, _ = S.make_optimizer(config.optim)
  with pytest.raises(ValueError, match="diffusion.residual needs an 'ssr' or 'tsr' stage"):
    S.make_train_step(StageNetwork.from_config(config), diffusion.get_schedule("cosine"), tx, config)


def test_train_logsnr_shift_refused_for_a_linear_schedule():
  config = importlib.import_module("configs.base").get_config("tiny")
  config.diffusion.train_logsnr_shift = -4.0
  config.optim.total_steps = 100
  tx, _ = S.make_optimizer(config.optim)
  with pytest.raises(ValueError, match="log-SNR shift needs a 'cosine'"):
    S.make_train_step(StageNetwork.from_config(config), diffusion.get_schedule("linear"), tx, config)


class _ZeroX0(nn.Module):
  """Predicts x0 = 0 whatever it is given (an 'ssr' or 'tsr' stage, for the sampler)."""

  @nn.compact
  def __call__(self, z, logsnr, **kw):
    return jnp.zeros_like(z) * self.param("unused", nn.initializers.ones, ())


@pytest.mark.parametrize("kind", ["ssr", "tsr"])
def test_residual_sampler_returns_reference_plus_difference(kind):
  # A network that predicts a zero difference samples exactly the reference (clipped to
  # [-1, 1]); the same network without `residual` samples zeros.
  model = StageNetwork(_ZeroX0(), kind, 2 if kind == "ssr" else 1)
  settings = SampleSettings(num_steps=3, guidance_scale=1.0, threshold="static")
  schedule = diffusion.get_schedule("cosine")
  params = model.model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 4, 4, 3)), jnp.zeros((1,)))
  if kind == "ssr":
    low = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 4, 4, 3), minval=-1.2, maxval=1.2)
    cond, shape, known = {"cond_video": low}, (2, 4, 8, 8, 3), None
    ref = C.upsample_video(low, 8, 8, method="bicubic")
  else:
    video = _linear_in_time(2, 8, 4, 4)
    placed, mask = C.place_frames(video[:, ::2], 8, stride=2)
    cond, shape, known = {"cond_video": placed, "cond_mask": mask}, video.shape, (placed, mask)
    ref = C.blend_given_frames(placed, mask)
  rng = jax.random.PRNGKey(2)
  for residual, want in ((True, jnp.clip(ref, -1, 1)), (False, jnp.zeros(shape))):
    sampler = make_stage_sampler(model, schedule, "x0", settings, residual=residual)
    out = sampler(params, shape, cond, rng, known)
    if known is not None:  # given frames are kept either way
      want = jnp.where(known[1][:, :, None, None, None] > 0, known[0], want)
    np.testing.assert_allclose(out, want, atol=1e-5)
  with pytest.raises(ValueError, match="diffusion.residual needs"):
    make_stage_sampler(StageNetwork(_ZeroX0()), schedule, "x0", settings, residual=True)


class _ConstV(nn.Module):
  """Predicts v = 1 everywhere: a network that is wrong at every noise level."""

  @nn.compact
  def __call__(self, z, logsnr, **kw):
    return jnp.ones_like(z) * self.param("scale", nn.initializers.ones, ())


def test_truncated_start_refines_the_reference_of_a_residual_stage():
  # Started near the clean end from reference + small noise, even a network that is
  # wrong everywhere changes the reference by at most ~sigma_start (v-prediction:
  # x0 = alpha z - sigma v); from pure noise it moves far from it.
  model, schedule = StageNetwork(_ConstV(), "ssr", 2), diffusion.get_schedule("cosine")
  params = model.model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 4, 4, 3)), jnp.zeros((1,)))
  low = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 4, 4, 3), minval=-0.8, maxval=0.8)
  ref = C.upsample_video(low, 8, 8, method="bicubic")
  gap = {}
  for start in (None, 12.0):
    settings = SampleSettings(num_steps=3, guidance_scale=1.0, threshold="none",
                              start_logsnr=start)
    sampler = make_stage_sampler(model, schedule, "v", settings, residual=True)
    out = sampler(params, (2, 4, 8, 8, 3), {"cond_video": low}, jax.random.PRNGKey(2))
    gap[start] = float(jnp.max(jnp.abs(out - jnp.clip(ref, -1, 1))))
  sigma = float(diffusion.alpha_sigma(jnp.float32(12.0))[1])  # 0.0025
  assert gap[12.0] < 8 * sigma and gap[None] > 0.3
  with pytest.raises(ValueError, match="start_logsnr .* needs a residual stage"):
    make_stage_sampler(model, schedule, "v", SampleSettings(start_logsnr=2.0), residual=False)


class _LogsnrV(nn.Module):
  """v = sin(log-SNR): a prediction that depends on where on the grid it is asked."""

  @nn.compact
  def __call__(self, z, logsnr, **kw):
    w = self.param("w", nn.initializers.ones, ())
    return w * jnp.sin(logsnr)[:, None, None, None, None] * jnp.ones_like(z)


def test_stage_sampler_walks_the_configured_step_spacing():
  # The stage sampler with `spacing` equals diffusion.sample on that grid (same noise),
  # and the grids give different videos; unknown spacings are refused up front.
  model, schedule = _LogsnrV(), diffusion.get_schedule("cosine")
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 4, 4, 3)), jnp.zeros((1,)))
  shape, rng = (2, 2, 4, 4, 3), jax.random.PRNGKey(3)
  out = {}
  for spacing in diffusion.SPACINGS:
    settings = SampleSettings(num_steps=5, spacing=spacing, guidance_scale=1.0,
                              threshold="none")
    out[spacing] = make_stage_sampler(StageNetwork(model), schedule, "v", settings)(params, shape, {},
                                                                                  rng)
    noise = jax.random.normal(jax.random.split(rng, 3)[0], shape, jnp.float32)
    want = diffusion.sample(lambda z, ls: model.apply(params, z, ls), noise,
                            schedule=schedule, num_steps=5, spacing=spacing)
    np.testing.assert_allclose(out[spacing], jnp.clip(want, -1, 1), atol=1e-6)
  assert float(jnp.max(jnp.abs(out["uniform"] - out["logsnr"]))) > 1e-3
  with pytest.raises(ValueError, match="sample.spacing must be one of"):
    SampleSettings.from_config({"spacing": "linear"})


class _TextV(nn.Module):
  """v depends on the text (and the log-SNR), so guidance changes the video."""

  @nn.compact
  def __call__(self, z, logsnr, text=None, text_mask=None, **kw):
    w = self.param("w", nn.initializers.ones, ())
    t = jnp.mean(text, axis=(1, 2))[:, None, None, None, None]
    return w * (jnp.sin(logsnr)[:, None, None, None, None] + t) * jnp.ones_like(z) + 0.1 * z


def test_noisy_end_guidance_switches_scale_at_its_log_snr():
  # A cutoff below the whole grid is the plain scale, one above it the noisy scale at
  # every step; a cutoff inside the grid gives a third video.
  model, schedule = _TextV(), diffusion.get_schedule("cosine")
  shape, rng = (2, 2, 4, 4, 3), jax.random.PRNGKey(3)
  cond = {"text": jnp.full((2, 3, 4), 0.5), "text_mask": jnp.ones((2, 3))}
  params = model.init(jax.random.PRNGKey(0), jnp.zeros(shape), jnp.zeros((2,)), **cond)

  def run(**kw):
    settings = SampleSettings(num_steps=6, threshold="none", **kw)
    return make_stage_sampler(StageNetwork(model), schedule, "v", settings)(params, shape,
                                                                            cond, rng)

  plain, strong = run(guidance_scale=2.0), run(guidance_scale=6.0)
  np.testing.assert_allclose(run(guidance_scale=2.0, noisy_guidance_scale=6.0,
                                 noisy_logsnr=-100.0), plain, atol=1e-6)
  np.testing.assert_allclose(run(guidance_scale=2.0, noisy_guidance_scale=6.0,
                                 noisy_logsnr=100.0), strong, atol=1e-6)
  mixed = run(guidance_scale=2.0, noisy_guidance_scale=6.0, noisy_logsnr=0.0)
  assert float(jnp.max(jnp.abs(mixed - plain))) > 1e-3
  assert float(jnp.max(jnp.abs(mixed - strong))) > 1e-3


class _ShiftV(nn.Module):
  """v = the noisy video a frame later, scaled by the text: not reversal-symmetric."""

  @nn.compact
  def __call__(self, z, logsnr, text=None, text_mask=None, **kw):
    w = self.param("w", nn.initializers.ones, ())
    return w * jnp.roll(z, 1, axis=1) * jnp.mean(text, axis=(1, 2))[:, None, None, None, None]


def test_time_reversal_guidance_in_the_stage_sampler():
  # Cut off below the whole grid it is no guidance; above it, it changes the video of
  # a network that is not reversal-symmetric, and not that of one that is.
  shape, rng = (2, 4, 4, 4, 3), jax.random.PRNGKey(3)
  cond = {"text": jnp.full((2, 3, 4), 0.5), "text_mask": jnp.ones((2, 3))}
  schedule = diffusion.get_schedule("cosine")
  for model, symmetric in ((_ShiftV(), False), (_TextV(), True)):
    params = model.init(jax.random.PRNGKey(0), jnp.zeros(shape), jnp.zeros((2,)), **cond)

    def run(**kw):
      settings = SampleSettings(num_steps=4, threshold="none", guidance_scale=2.0, **kw)
      return make_stage_sampler(StageNetwork(model), schedule, "v", settings)(params, shape,
                                                                            cond, rng)

    plain = run()
    np.testing.assert_allclose(run(reversal_guidance_scale=3.0, reversal_logsnr=-100.0),
                               plain, atol=1e-6)
    gap = float(jnp.max(jnp.abs(run(reversal_guidance_scale=3.0) - plain)))
    assert (gap < 1e-5) if symmetric else (gap > 1e-2), gap
  # What the planner sizes a sampling call by: each kind of guidance doubles it.
  both = SampleSettings(reversal_guidance_scale=2.0)
  assert both.network_batch(3, has_text=True) == 12 and both.network_batch(3, False) == 6
  assert SampleSettings(guidance_scale=1.0).network_batch(3, True) == 3


def test_project_to_low_res_is_the_projection_onto_consistent_videos():
  rng = np.random.default_rng(0)
  truth = jnp.asarray(rng.uniform(-1, 1, (2, 3, 8, 8, 3)), jnp.float32)
  blocks = lambda v: np.asarray(v).reshape(2, 3, 4, 2, 4, 2, 3)  # noqa: E731
  low = jnp.asarray(blocks(truth).mean(axis=(3, 5)))
  # Away from the clipping bounds each 2x2 block is shifted by one constant so that its
  # mean becomes its pixel (DDNM's closed form).
  near = 0.3 * truth + jnp.asarray(rng.normal(0, 0.05, truth.shape), jnp.float32)
  out = blocks(C.project_to_low_res(near, 0.3 * low))
  np.testing.assert_allclose(out.mean(axis=(3, 5)), 0.3 * low, atol=1e-6)
  np.testing.assert_allclose(out - out.mean(axis=(3, 5), keepdims=True),
                             blocks(near) - blocks(near).mean(axis=(3, 5), keepdims=True),
                             atol=1e-6)
  # Anywhere: consistent, in [-1, 1], the truth a fixed point, never farther from it
  # than the video was, and idempotent (a projection).
  far = jnp.asarray(rng.normal(0, 1.5, truth.shape), jnp.float32)
  p = C.project_to_low_res(far, low)
  np.testing.assert_allclose(blocks(p).mean(axis=(3, 5)), low, atol=1e-5)
  assert float(jnp.max(jnp.abs(p))) <= 1.0
  np.testing.assert_allclose(C.project_to_low_res(truth, low), truth, atol=1e-6)
  dist = lambda v: float(jnp.linalg.norm(v - truth))  # noqa: E731
  assert dist(p) < dist(jnp.clip(far, -1, 1)) < dist(far)
  np.testing.assert_allclose(C.project_to_low_res(p, low), p, atol=1e-5)
  with pytest.raises(ValueError, match="one integer factor"):
    C.project_to_low_res(truth[:, :, :, :6], low)


def test_consistent_ssr_sampler_matches_its_low_res_input():
  # A network that is wrong everywhere, sampled with `consistency`, still gives a video
  # whose box downsampling is its input; without it, it does not.
  model, schedule = StageNetwork(_ConstV(), "ssr", 2), diffusion.get_schedule("cosine")
  params = model.model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 4, 4, 3)), jnp.zeros((1,)))
  low = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 4, 4, 3), minval=-0.8, maxval=0.8)
  gap = {}
  for consistency in (False, True):
    settings = SampleSettings(num_steps=3, guidance_scale=1.0, threshold="none",
                              consistency=consistency)
    sampler = make_stage_sampler(model, schedule, "v", settings, residual=True)
    out = sampler(params, (2, 4, 8, 8, 3), {"cond_video": low}, jax.random.PRNGKey(2))
    down = np.asarray(out).reshape(2, 4, 4, 2, 4, 2, 3).mean(axis=(3, 5))
    gap[consistency] = float(np.max(np.abs(down - np.asarray(low))))
  assert gap[True] < 1e-5 and gap[False] > 0.1
  with pytest.raises(ValueError, match="sample.consistency projects onto an SSR stage"):
    make_stage_sampler(StageNetwork(_ConstV(), "tsr"), schedule, "v", SampleSettings(consistency=True))
