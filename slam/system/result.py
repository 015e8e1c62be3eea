"""What a finished (or interrupted) run hands to the writers and the evaluation.

Conventions: poses are **camera-to-world** 4x4 float64 (OpenCV camera axes),
timestamps in seconds, intrinsics ``[fx, fy, cx, cy]`` in pixels of the image
size they are given with, inverse depths in 1/m of the run's (arbitrary,
monocular) scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Reconstruction:
    """Result of one run.

    Attributes:
        timestamps: (F,) timestamps of every input frame.
        poses: (F, 4, 4) camera-to-world pose of every input frame.
        tracked: (F,) bool, frames that got a pose from tracking (not a fallback).
        kf_indices: (K,) input-frame index of each keyframe.
        kf_poses: (K, 4, 4) camera-to-world keyframe poses.
        kf_disps: (K, h, w) keyframe inverse depths at feature resolution.
        kf_confidence: (K, h, w) per-pixel confidence in [0, 1] of those depths.
        kf_images: (K, H, W, 3) uint8 RGB keyframe images at processing resolution.
        intrinsics: (4,) ``[fx, fy, cx, cy]`` at processing resolution (W x H).
        image_size: ``(W, H)`` processing resolution.
        input_size: ``(W, H)`` of the input frames.
        input_intrinsics: (4,) intrinsics scaled back to the input resolution.
        focal_estimated: True when the focal length was estimated (unknown camera).
        correspondence: name of the correspondence source used.
        stats: free-form numbers (fps, wall_s, peak_rss_mb, ...).
        kf_motion: (K, h, w) per-pixel probability that the keyframe pixel moves
            independently of the camera (:mod:`slam.system.motion`), or None.
        motion: (F, h, w) float16 the same for every input frame (keyframes: their
            map; tracked non-keyframes: their keyframe's map carried along the
            recorded correspondences; others 0), or None.
        interrupted: True when the run was stopped early (Ctrl-C).
    """

    timestamps: np.ndarray
    poses: np.ndarray
    tracked: np.ndarray
    kf_indices: np.ndarray
    kf_poses: np.ndarray
    kf_disps: np.ndarray
    kf_confidence: np.ndarray
    kf_images: np.ndarray
    intrinsics: np.ndarray
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    input_intrinsics: np.ndarray
    focal_estimated: bool
    correspondence: str
    stats: dict = field(default_factory=dict)
    interrupted: bool = False
    kf_motion: np.ndarray | None = None
    motion: np.ndarray | None = None

    @property
    def feature_intrinsics(self) -> np.ndarray:
        """(4,) intrinsics at the resolution of ``kf_disps`` (pixel-centre convention)."""
        h, w = self.kf_disps.shape[-2:]
        W, H = self.image_size
        sx, sy = w / W, h / H
        fx, fy, cx, cy = self.intrinsics
        return np.array([fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5])
