"""Classifier-free guidance and x0 thresholding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.diffusion import guidance as G
from videojax.diffusion import parameterization as P


def _net():
  """A toy conditional network, plus a log of the batch sizes it was called with."""
  calls = []

  def denoise(z, logsnr, *, text):
    calls.append(z.shape[0])
    return jnp.tanh(z * (1.0 + text[:, None, :1]) + logsnr[:, None, None] * text[:, None, 1:2])

  return denoise, calls


Z = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 2))
LOGSNR = jnp.array([-1.0, 0.0, 2.0])
TEXT = jax.random.normal(jax.random.PRNGKey(1), (3, 2))
NULL = jnp.zeros((3, 2))


def test_guided_prediction_scale_one_and_zero():
  c, u = jnp.full((2, 3), 2.0), jnp.full((2, 3), -1.0)
  np.testing.assert_array_equal(G.guided_prediction(c, u, 1.0), c)
  np.testing.assert_array_equal(G.guided_prediction(c, u, 0.0), u)
  np.testing.assert_allclose(G.guided_prediction(c, u, jnp.array([3.0, 0.5])),
                             [[8.0] * 3, [0.5] * 3])


@pytest.mark.parametrize("scale", [0.0, 1.0, 4.0])
def test_cfg_is_one_batched_call_mixing_cond_and_uncond(scale):
  denoise, calls = _net()
  guided = G.classifier_free_guidance(denoise, {"text": NULL}, scale)
  out = guided(Z, LOGSNR, text=TEXT)
  assert calls == [6], "conditional and unconditional halves go through one call"
  cond, uncond = denoise(Z, LOGSNR, text=TEXT), denoise(Z, LOGSNR, text=NULL)
  np.testing.assert_allclose(out, uncond + scale * (cond - uncond), atol=1e-6)
  if scale == 1.0:
    np.testing.assert_allclose(out, cond, atol=1e-6)
  if scale == 0.0:
    np.testing.assert_allclose(out, uncond, atol=1e-6)


def test_cfg_scale_can_be_traced_under_jit():
  denoise, _ = _net()
  run = jax.jit(lambda s: G.classifier_free_guidance(denoise, {"text": NULL}, s)(
      Z, LOGSNR, text=TEXT))
  np.testing.assert_allclose(run(0.0), denoise(Z, LOGSNR, text=NULL), atol=1e-6)
  np.testing.assert_allclose(run(1.0), denoise(Z, LOGSNR, text=TEXT), atol=1e-6)


def test_noisy_end_guidance_uses_its_scale_below_the_cutoff_only():
  # LOGSNR = (-1, 0, 2): with the cutoff at 0.5 the first two examples get the noisy
  # scale and the third the other; the mix is the closed form per example.
  denoise, _ = _net()
  scale = G.noisy_end_guidance(2.0, 7.0, below_logsnr=0.5)
  np.testing.assert_array_equal(scale(LOGSNR), [7.0, 7.0, 2.0])
  out = G.classifier_free_guidance(denoise, {"text": NULL}, scale)(Z, LOGSNR, text=TEXT)
  cond, uncond = denoise(Z, LOGSNR, text=TEXT), denoise(Z, LOGSNR, text=NULL)
  want = uncond + jnp.array([7.0, 7.0, 2.0])[:, None, None] * (cond - uncond)
  np.testing.assert_allclose(out, want, atol=1e-6)
  same = G.classifier_free_guidance(denoise, {"text": NULL}, G.noisy_end_guidance(
      2.0, 2.0, 0.5))(Z, LOGSNR, text=TEXT)
  np.testing.assert_allclose(same, uncond + 2.0 * (cond - uncond), atol=1e-6)


def test_time_reversal_guidance_contrasts_the_backward_video():
  # Z [B=3, T=4, 2]: a network that is pointwise in time is its own time reversal, so
  # the guidance leaves it unchanged; one that shifts the video a frame forward is
  # contrasted with the shift backward, in closed form.
  denoise, calls = _net()
  for scale in (0.0, 2.0):
    out = G.time_reversal_guidance(denoise, scale)(Z, LOGSNR, text=TEXT)
    np.testing.assert_allclose(out, denoise(Z, LOGSNR, text=TEXT), atol=1e-6)
  assert calls[0] == 6, "forward and backward go through one call"
  shift = lambda z, logsnr, **c: jnp.roll(z, 1, axis=1)  # noqa: E731
  out = G.time_reversal_guidance(shift, 3.0)(Z, LOGSNR, text=TEXT)
  fwd, bwd = jnp.roll(Z, 1, axis=1), jnp.roll(Z, -1, axis=1)
  np.testing.assert_allclose(out, fwd + 3.0 * (fwd - bwd), atol=1e-6)
  # Below a log-SNR only (here the first example's), and inside
  # classifier-free guidance, which mixes two contrasted halves: the same as
  # contrasting the guided prediction.
  out = G.time_reversal_guidance(shift, 3.0, -0.5)(Z, LOGSNR, text=TEXT)
  np.testing.assert_allclose(out[0], fwd[0] + 3.0 * (fwd[0] - bwd[0]), atol=1e-6)
  np.testing.assert_allclose(out[1:], fwd[1:], atol=1e-6)
  mix = lambda z, logsnr, text: jnp.roll(z, 1, axis=1) * text[:, None, :1]  # noqa: E731
  inner = G.classifier_free_guidance(G.time_reversal_guidance(mix, 2.0), {"text": NULL}, 4.0)
  guided = G.classifier_free_guidance(mix, {"text": NULL}, 4.0)
  flip = lambda x: jnp.flip(x, axis=1)  # noqa: E731
  g, g_back = guided(Z, LOGSNR, text=TEXT), flip(guided(flip(Z), LOGSNR, text=TEXT))
  np.testing.assert_allclose(inner(Z, LOGSNR, text=TEXT), g + 2.0 * (g - g_back), atol=1e-5)


def test_guidance_is_the_same_in_every_parameterization():
  # For fixed z the conversions are affine, so guiding v and converting equals
  # converting both halves and guiding eps.
  z = Z.reshape(3, -1)
  cond_v, uncond_v = jnp.sin(z), jnp.cos(z)
  guided_v = G.guided_prediction(cond_v, uncond_v, 5.0)
  to_eps = lambda v: P.convert(v, "v", "eps", z, LOGSNR)  # noqa: E731
  np.testing.assert_allclose(to_eps(guided_v),
                             G.guided_prediction(to_eps(cond_v), to_eps(uncond_v), 5.0),
                             atol=1e-5)


def test_dynamic_threshold_bounds_and_identity():
  x = 4.0 * jax.random.normal(jax.random.PRNGKey(2), (5, 3, 8, 8, 3))
  y = G.dynamic_threshold(x, 0.9)
  assert float(jnp.abs(y).max()) <= 1.0
  inside = jnp.clip(x, -1.0, 1.0) * 0.999
  np.testing.assert_array_equal(G.dynamic_threshold(inside, 0.9), inside)


def test_dynamic_threshold_matches_numpy_reference():
  x = np.array(2.0 * jax.random.normal(jax.random.PRNGKey(3), (4, 100)))
  x[3] *= 0.1  # this example stays inside [-1, 1] at the percentile: s = 1
  p = 0.95
  s = np.maximum(np.quantile(np.abs(x), p, axis=1, keepdims=True), 1.0)
  np.testing.assert_allclose(G.dynamic_threshold(jnp.asarray(x), p),
                             np.clip(x, -s, s) / s, rtol=1e-5, atol=1e-6)
  # p = 1 divides by the largest magnitude: it lands exactly on +-1.
  np.testing.assert_allclose(np.abs(G.dynamic_threshold(jnp.asarray(x), 1.0)[:3]).max(1), 1.0,
                             rtol=1e-6)


def test_static_threshold_and_factory():
  x = jnp.array([[-3.0, -0.5, 0.2, 7.0]])
  np.testing.assert_array_equal(G.static_threshold(x), jnp.array([[-1.0, -0.5, 0.2, 1.0]]))
  assert G.make_x0_transform("none") is None
  np.testing.assert_array_equal(G.make_x0_transform("static")(x), G.static_threshold(x))
  np.testing.assert_array_equal(G.make_x0_transform("dynamic", 0.5)(x),
                                G.dynamic_threshold(x, 0.5))


def test_bad_guidance_inputs():
  with pytest.raises(ValueError, match=r"Unknown thresholding 'soft'.*'none', 'static'"):
    G.make_x0_transform("soft")
  with pytest.raises(ValueError, match=r"percentile must be in \(0, 1\]"):
    G.make_x0_transform("dynamic", 99.5)
  denoise, _ = _net()
  with pytest.raises(ValueError, match=r"'text' has shape \(3, 2\) but its null version has "
                                       r"shape \(1, 2\)"):
    G.classifier_free_guidance(denoise, {"text": NULL[:1]}, 2.0)(Z, LOGSNR, text=TEXT)
  with pytest.raises(ValueError, match=r"null_cond has keys \['caption'\]"):
    G.classifier_free_guidance(denoise, {"caption": NULL}, 2.0)(Z, LOGSNR, text=TEXT)
