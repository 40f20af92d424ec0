"""Figures written to files (matplotlib, no display needed)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def scatter_panels(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str,
                   lim: float = 1.3, size: float = 3.2) -> str:
  """Writes a row of 2-D scatter plots to a PNG.

  Args:
    panels: (title, points [N, 2], labels [N]) per panel; points are coloured by label.
    path: output .png path; its directory is created.
    lim: axis limits [-lim, lim] on both axes.
    size: inches per panel.

  Returns:
    The path written.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size + 0.7),
                           squeeze=False)
  for ax, (title, pts, labels) in zip(axes[0], panels):
    ax.scatter(pts[:, 0], pts[:, 1], c=labels, s=1.5, cmap="tab10", vmin=0, vmax=9,
               alpha=0.6, linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
