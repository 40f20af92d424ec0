"""Distances between sample sets, for judging samplers and trained models.

Plain numpy: they run on the host after sampling.
"""

from __future__ import annotations

import numpy as np


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, num_projections: int = 256,
                       seed: int = 0) -> float:
  """Sliced Wasserstein-1 distance between two point sets [N, D] and [M, D].

  The mean over random unit directions of the 1-D Wasserstein-1 distance between the
  projected sets (via their quantile functions on a common grid of N + M levels).

  Returns:
    A float >= 0; 0 for identical sets, |<d, u>| averaged over directions u for a set
    and its translate by d.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"Expected point sets [N, D] and [M, D], got {a.shape} and {b.shape}.")
  dirs = np.random.default_rng(seed).standard_normal((num_projections, a.shape[1]))
  dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
  levels = (np.arange(a.shape[0] + b.shape[0]) + 0.5) / (a.shape[0] + b.shape[0])
  qa = np.quantile(a @ dirs.T, levels, axis=0, method="inverted_cdf")
  qb = np.quantile(b @ dirs.T, levels, axis=0, method="inverted_cdf")
  return float(np.mean(np.abs(qa - qb)))


def nearest_label_accuracy(samples: np.ndarray, wanted: np.ndarray, ref_points: np.ndarray,
                           ref_labels: np.ndarray) -> float:
  """Fraction of samples whose nearest reference point has the label they were asked for."""
  d2 = (np.sum(samples**2, 1)[:, None] - 2 * samples @ ref_points.T
        + np.sum(ref_points**2, 1)[None, :])
  return float(np.mean(ref_labels[np.argmin(d2, axis=1)] == wanted))
