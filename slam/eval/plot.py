"""Top-view trajectory plots (PNG, matplotlib's Agg canvas: no display and no pyplot state).

The view shows the two world axes along which the ground truth extends the
most, with equal scales, so that a camera moving in any plane is seen from
"above" its motion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

AXIS_NAMES: tuple[str, str, str] = ("x", "y", "z")


def top_view_axes(gt_xyz: np.ndarray) -> tuple[int, int]:
    """Indices (ascending) of the two axes of largest extent of (N, 3) positions."""
    extent = np.ptp(np.asarray(gt_xyz, dtype=np.float64).reshape(-1, 3), axis=0) if len(gt_xyz) else np.ones(3)
    a, b = sorted(np.argsort(-extent, kind="stable")[:2].tolist())
    return a, b


def plot_trajectories(path: str | Path, gt_xyz: np.ndarray, estimates: Mapping[str, np.ndarray], *,
                      title: str = "", dpi: int = 120) -> Path:
    """Write a top-view plot of the ground truth and aligned estimates.

    Args:
        path: PNG file to write (parent folders are created).
        gt_xyz: (N, 3) ground-truth positions.
        estimates: method name -> (M, 3) aligned estimated positions (metres, same world).
        title: figure title.
        dpi: resolution.
    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gt_xyz = np.asarray(gt_xyz, dtype=np.float64).reshape(-1, 3)
    a, b = top_view_axes(gt_xyz)
    fig = Figure(figsize=(6.4, 5.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if len(gt_xyz):
        ax.plot(gt_xyz[:, a], gt_xyz[:, b], "k--", lw=1.5, label="ground truth")
        ax.plot(gt_xyz[:1, a], gt_xyz[:1, b], "ko", ms=5)
    for name, xyz in estimates.items():
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if len(xyz):
            ax.plot(xyz[:, a], xyz[:, b], lw=1.2, label=name)
    ax.set_xlabel(f"{AXIS_NAMES[a]} [m]")
    ax.set_ylabel(f"{AXIS_NAMES[b]} [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
