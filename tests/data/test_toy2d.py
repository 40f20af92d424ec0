"""Toy 2-D point sets."""

import numpy as np
import pytest

from videojax.data import toy2d


@pytest.mark.parametrize("name,classes", sorted(toy2d.DATASETS.items()))
def test_points_labels_range_and_determinism(name, classes):
  pts, labels = toy2d.sample_points(name, 2000, seed=3)
  assert pts.shape == (2000, 2) and pts.dtype == np.float32 and labels.dtype == np.int32
  assert np.abs(pts).max() < 1.2 and np.quantile(np.abs(pts), 0.99) < 1.0
  assert set(np.unique(labels)) == set(range(classes))
  again, _ = toy2d.sample_points(name, 2000, seed=3)
  np.testing.assert_array_equal(pts, again)
  other, _ = toy2d.sample_points(name, 2000, seed=4)
  assert not np.allclose(pts, other)


def test_classes_are_separated():
  # Each class is a distinct region: class means differ by more than the noise.
  pts, labels = toy2d.sample_points("gaussians8", 4000)
  means = np.stack([pts[labels == k].mean(0) for k in range(8)])
  np.testing.assert_allclose(np.linalg.norm(means, axis=1), 0.75, atol=0.01)


def test_bad_toy_inputs():
  with pytest.raises(ValueError, match=r"Unknown toy dataset 'blobs'"):
    toy2d.sample_points("blobs", 10)
  with pytest.raises(ValueError, match="n must be positive"):
    toy2d.sample_points("moons", 0)
