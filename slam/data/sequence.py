"""The one abstraction every input is read through.

Conventions
-----------
* Images are ``uint8`` RGB arrays of shape ``(H, W, 3)``.
* Ground-truth poses are **camera-to-world** 4x4 matrices ``T_wc`` (float64)
  in the OpenCV camera convention (x right, y down, z forward): a point
  ``p_c`` in the camera frame is ``p_w = T_wc @ [p_c, 1]`` in the world.
* Depth is the z-coordinate in the camera frame, metres, float32, ``(H, W)``;
  0 or non-finite where unknown.
* Timestamps are seconds (float).
* Intrinsics are undistorted pinhole intrinsics of the image as yielded
  (see :mod:`slam.geometry.camera` for the pixel-centre convention).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence as TSequence

import numpy as np

from slam.geometry.camera import Intrinsics


class InputError(Exception):
    """A user-facing problem with an input (missing path, unknown layout, bad
    calibration...).  The CLI prints its message on one line and exits 2."""


@dataclass
class Frame:
    """One frame of a sequence.

    Attributes:
        index: position in the sequence as yielded (0, 1, 2, ...), after stride/start.
        timestamp: seconds.
        image: (H, W, 3) uint8 RGB.
        intrinsics: undistorted intrinsics of ``image``, or None when unknown.
        pose: optional (4, 4) float64 camera-to-world ground truth.
        depth: optional (H, W) float32 ground-truth depth (z, metres).
        source: optional file the frame came from (for messages).
    """

    index: int
    timestamp: float
    image: np.ndarray
    intrinsics: Intrinsics | None
    pose: np.ndarray | None = None
    depth: np.ndarray | None = None
    source: str | None = None


@dataclass
class Sequence:
    """Base class of all readers: a finite, re-iterable list of frames.

    Subclasses implement ``__len__`` and ``_load(k)`` (the k-th yielded frame)
    and set ``name``, ``intrinsics`` (None when unknown) and optionally
    ``gt_poses`` (N, 4, 4) / ``timestamps`` (N,).
    """

    path: Path
    name: str = ""
    intrinsics: Intrinsics | None = None
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gt_poses: np.ndarray | None = None
    kind: str = "unknown"

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, k: int) -> Frame:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, k: int) -> Frame:
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(k)
        return self._load(k)

    def __iter__(self) -> Iterator[Frame]:
        for k in range(len(self)):
            yield self._load(k)

    @property
    def has_ground_truth(self) -> bool:
        return self.gt_poses is not None

    def gt_pose(self, k: int) -> np.ndarray | None:
        """A copy of frame k's (4, 4) camera-to-world ground truth, or None (none, or a NaN row)."""
        if self.gt_poses is None or not np.isfinite(self.gt_poses[k]).all():
            return None
        return self.gt_poses[k].copy()


def select_indices(n: int, start: int = 0, end: int | None = None, stride: int = 1,
                   max_frames: int | None = None) -> list[int]:
    """Indices ``start:end:stride`` of ``n`` frames, cut to ``max_frames``."""
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    idx = list(range(n))[start:end:stride]
    if max_frames is not None and max_frames > 0:
        idx = idx[:max_frames]
    return idx


def poses_to_array(poses: TSequence[np.ndarray]) -> np.ndarray:
    """Stack a list of 4x4 poses into an (N, 4, 4) float64 array."""
    return np.stack([np.asarray(p, dtype=np.float64) for p in poses], 0)
