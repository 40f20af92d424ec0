"""PSNR, SSIM and the super-resolution baselines."""

import numpy as np
import pytest

from videojax.eval import quality as Q


def _video(seed, shape=(3, 16, 18, 3)):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_psnr_closed_forms():
  v = _video(0)
  assert Q.psnr(v, v) == np.inf
  # A constant offset d gives MSE d^2 in every frame.
  low = np.clip(v, 0, 250)
  assert Q.psnr(low, low + 5) == pytest.approx(10 * np.log10(255**2 / 25), abs=1e-12)
  # Floats: default range 2 ([-1, 1]); an explicit one for [0, 1].
  x = v.astype(np.float64) / 127.5 - 1
  assert Q.psnr(x, x + 0.1) == pytest.approx(10 * np.log10(4 / 0.01), abs=1e-9)
  assert Q.psnr(x, x + 0.1, data_range=1.0) == pytest.approx(20.0, abs=1e-9)
  # The mean over frames of per-frame PSNRs (not the PSNR of the mean MSE), over
  # every leading axis.
  offsets = np.array([1.0, 2.0, 4.0, 8.0]).reshape(2, 2, 1, 1, 1)  # [B, T, 1, 1, 1]
  y = np.zeros((2, 2, 12, 12, 3))
  expected = np.mean(10 * np.log10(4 / offsets.ravel() ** 2))
  assert Q.psnr(y, y + offsets) == pytest.approx(expected, abs=1e-9)
  assert Q.psnr(y, y + offsets) == pytest.approx(Q.psnr(y + offsets, y), abs=1e-12)


def _ssim_reference(x, y, peak):
  """Direct 2-D SSIM of one frame and channel [H, W]: every 11x11 window in turn."""
  taps = np.arange(11) - 5.0
  g = np.exp(-taps**2 / (2 * 1.5**2))
  w = np.outer(g, g) / np.outer(g, g).sum()  # [11, 11]
  c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
  values = []
  for i in range(x.shape[0] - 10):
    for j in range(x.shape[1] - 10):
      a, b = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
      ma, mb = np.sum(w * a), np.sum(w * b)
      va, vb = np.sum(w * (a - ma) ** 2), np.sum(w * (b - mb) ** 2)
      cab = np.sum(w * (a - ma) * (b - mb))
      values.append((2 * ma * mb + c1) * (2 * cab + c2)
                    / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
  return np.mean(values)


def test_ssim_matches_direct_windows():
  x = _video(1, (2, 14, 15, 2))
  y = np.clip(x + np.random.default_rng(2).normal(0, 30, x.shape), 0, 255).astype(np.uint8)
  expected = np.mean([_ssim_reference(x[t, :, :, c].astype(float), y[t, :, :, c].astype(float),
                                      255.0) for t in range(2) for c in range(2)])
  assert Q.ssim(x, y) == pytest.approx(expected, rel=1e-10)


def test_ssim_closed_forms_and_monotone():
  v = _video(3)
  assert Q.ssim(v, v) == 1.0
  # Constant frames a and b: no variance, so SSIM is the luminance term alone.
  a, b = np.full((2, 12, 12, 3), 100, np.uint8), np.full((2, 12, 12, 3), 140, np.uint8)
  c1 = (0.01 * 255) ** 2
  assert Q.ssim(a, b) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1))
  # More noise, less similar; symmetric.
  smooth = np.repeat(np.repeat(_video(4, (2, 8, 8, 3)), 4, axis=1), 4, axis=2)
  rng = np.random.default_rng(5)
  scores = []
  for sigma in (2, 8, 32):
    noisy = np.clip(smooth + rng.normal(0, sigma, smooth.shape), 0, 255).astype(np.uint8)
    scores.append(Q.ssim(smooth, noisy))
    assert Q.ssim(noisy, smooth) == pytest.approx(scores[-1], abs=1e-12)
  assert 1.0 > scores[0] > scores[1] > scores[2]


def test_metric_errors():
  v = _video(0)
  with pytest.raises(ValueError, match="same shape"):
    Q.psnr(v, v[:, :8])
  with pytest.raises(ValueError, match="one integer"):
    Q.ssim(v, v.astype(np.float32))
  with pytest.raises(ValueError, match="at least 11x11"):
    Q.ssim(v[:, :10], v[:, :10])


def test_bicubic_upsample():
  for value in (0, 37, 128, 255):
    const = np.full((2, 5, 7, 3), value, np.uint8)
    up = Q.bicubic_upsample(const, 4)
    assert up.shape == (2, 20, 28, 3) and up.dtype == np.uint8
    assert np.all(up == value)
  const = np.full((1, 2, 5, 6, 1), -0.3, np.float32)  # [B, T, H, W, C]
  up = Q.bicubic_upsample(const, 3)
  assert up.shape == (1, 2, 15, 18, 1) and up.dtype == np.float32
  np.testing.assert_allclose(up, -0.3, atol=1e-6)
  v = _video(6)
  np.testing.assert_array_equal(Q.bicubic_upsample(v, 1), v)
  # Keys' cubic convolution (a = -0.5) reproduces quadratics away from the edges
  # (bilinear would not): output pixel j samples input coordinate (j + 0.5) / 4 - 0.5.
  ramp = np.broadcast_to((np.arange(12.0) ** 2)[None, :, None], (10, 12, 1))[None]
  up = Q.bicubic_upsample(ramp, 4)[0, 5, :, 0]  # [1, H, W, 1] -> a row of [4 W]
  np.testing.assert_allclose(up[8:-8], (((np.arange(48) + 0.5) / 4 - 0.5) ** 2)[8:-8],
                             atol=1e-4)
  with pytest.raises(ValueError, match="integer >= 1"):
    Q.bicubic_upsample(v, 1.5)


def test_blend_frames():
  given = np.random.default_rng(7).uniform(-1, 1, (2, 4, 3, 5, 3))  # [B, T, H, W, C]
  out = Q.blend_frames(given, 2, 8)
  assert out.shape == (2, 8, 3, 5, 3) and out.dtype == given.dtype
  np.testing.assert_array_equal(out[:, 0:7:2], given)  # given frames exactly
  np.testing.assert_allclose(out[:, 1:6:2], (given[:, :-1] + given[:, 1:]) / 2, atol=1e-15)
  np.testing.assert_array_equal(out[:, 7], given[:, 3])  # after the last: repeated
  # Factor 4: a quarter of the way, and frames after the last given one repeat it.
  out = Q.blend_frames(given[0], 4, 16)  # [16, H, W, C]
  np.testing.assert_allclose(out[5], 0.75 * given[0, 1] + 0.25 * given[0, 2], atol=1e-15)
  for t in range(12, 16):
    np.testing.assert_array_equal(out[t], given[0, 3])
  # uint8 stays uint8: exact at given frames, rounded in between.
  clip = np.stack([np.full((4, 4, 3), 10, np.uint8), np.full((4, 4, 3), 20, np.uint8)])
  out = Q.blend_frames(clip, 2, 3)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, 0, 0, 0], [10, 15, 20])
  np.testing.assert_array_equal(Q.blend_frames(clip, 1, 2), clip)
  with pytest.raises(ValueError, match="pass frames >= 7"):
    Q.blend_frames(given[0], 2, 6)
  with pytest.raises(ValueError, match=r"\[\.\.\., T, H, W, C\]"):
    Q.blend_frames(given[0, 0], 2, 4)
