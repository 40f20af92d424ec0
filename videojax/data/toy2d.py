"""Labelled 2-D point sets for the toy end-to-end demo and sampler tests.

Points are float32 [N, 2] inside about [-1, 1]^2 (the library's data range); labels
are int32 [N] (the moon, the mode, or the spiral arm), so the demo can exercise
class-conditional sampling with classifier-free guidance. Generation is
deterministic given (name, n, seed).
"""

from __future__ import annotations

import numpy as np

DATASETS = {"moons": 2, "gaussians8": 8, "spiral": 2}  # name -> number of classes


def _moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  labels = rng.integers(0, 2, n)
  angle = rng.uniform(0.0, np.pi, n)
  x = np.where(labels == 0, np.cos(angle), 1.0 - np.cos(angle))
  y = np.where(labels == 0, np.sin(angle), 0.5 - np.sin(angle))
  pts = np.stack([x - 0.5, y - 0.25], axis=1) * np.array([0.6, 1.0])  # inside [-1, 1]
  return pts + 0.05 * rng.standard_normal((n, 2)), labels


def _gaussians8(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  labels = rng.integers(0, 8, n)
  angle = 2 * np.pi * labels / 8
  centres = 0.75 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
  return centres + 0.05 * rng.standard_normal((n, 2)), labels


def _spiral(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  labels = rng.integers(0, 2, n)
  r = np.sqrt(rng.uniform(0.0, 1.0, n))  # uniform along the arm's area
  theta = 3 * np.pi * r + np.pi * labels
  pts = 0.85 * r[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
  return pts + 0.03 * rng.standard_normal((n, 2)), labels


def sample_points(name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Draws n labelled points.

  Args:
    name: one of DATASETS ('moons', 'gaussians8', 'spiral').
    n: number of points.
    seed: generator seed; the same (name, n, seed) gives the same points.

  Returns:
    (points float32 [n, 2], labels int32 [n]).
  """
  makers = {"moons": _moons, "gaussians8": _gaussians8, "spiral": _spiral}
  if name not in makers:
    raise ValueError(f"Unknown toy dataset {name!r}; expected one of {sorted(makers)}.")
  if n < 1:
    raise ValueError(f"n must be positive, got {n}.")
  pts, labels = makers[name](np.random.default_rng(seed), n)
  return pts.astype(np.float32), labels.astype(np.int32)
