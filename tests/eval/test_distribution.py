"""Sample-set distances."""

import numpy as np
import pytest

from videojax.eval import distribution as D


def test_sliced_wasserstein_closed_forms():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((500, 2))
  assert D.sliced_wasserstein(a, a) == 0.0
  # A translate by d: every projected W1 is |<d, u>|; the mean over the same
  # directions is computed here independently.
  d = np.array([0.3, -0.4])
  dirs = np.random.default_rng(0).standard_normal((256, 2))
  dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
  np.testing.assert_allclose(D.sliced_wasserstein(a + d, a), np.mean(np.abs(dirs @ d)),
                             rtol=1e-9)
  # Symmetric, and larger for a larger shift.
  assert D.sliced_wasserstein(a, a + d) == pytest.approx(D.sliced_wasserstein(a + d, a))
  assert D.sliced_wasserstein(a + 2 * d, a) > D.sliced_wasserstein(a + d, a)


def test_nearest_label_accuracy():
  ref = np.array([[-1.0, 0.0], [1.0, 0.0]])
  ref_labels = np.array([0, 1])
  samples = np.array([[-0.9, 0.1], [0.8, 0.0], [0.7, 0.0], [-2.0, 0.0]])
  assert D.nearest_label_accuracy(samples, np.array([0, 1, 0, 0]), ref, ref_labels) == 0.75


def test_bad_shapes():
  with pytest.raises(ValueError, match=r"\[N, D\] and \[M, D\]"):
    D.sliced_wasserstein(np.zeros((4, 2)), np.zeros((4, 3)))
