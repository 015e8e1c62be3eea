"""Initial depth for every frame from the keyframe depths of a SLAM run.

:class:`KeyframeDepth` is a lazy, indexable sequence: ``kd[i]`` is frame i's
depth obtained by forward-warping the depth maps of the nearest keyframes
(one before and one after ``i`` in the frame order) into frame i with the
poses, keeping the nearest surface per pixel (z-buffer), and filling the
remaining holes from the nearest warped pixel.  It is meant as the
``initial_depth`` of :func:`slam.depth.video_depth.estimate_video_depth`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from slam.geometry.pose import invert


class KeyframeDepth:
    """Per-frame depth interpolated from keyframe inverse depths (see the module docstring).

    Args:
        kf_indices: (K,) input-frame index of each keyframe (ascending).
        kf_disps: (K, h, w) keyframe inverse depths (1 / units of the poses; <= 0 invalid).
        kf_intrinsics: ``[fx, fy, cx, cy]`` at the resolution of ``kf_disps`` (pixel centres at integers).
        poses: (N, 4, 4) camera-to-world poses of all frames (the keyframes' included).
        kf_confidence: optional (K, h, w) in [0, 1]; pixels below ``min_confidence`` are dropped.
        min_confidence: see ``kf_confidence``.
        fill: fill holes from the nearest warped pixel (else they stay 0 = unknown).
    ``kd[i]`` is an (h, w) float32 depth at the keyframes' resolution, 0 where unknown.
    """

    def __init__(self, kf_indices: Sequence[int], kf_disps: np.ndarray, kf_intrinsics: Sequence[float],
                 poses: np.ndarray, kf_confidence: np.ndarray | None = None, min_confidence: float = 0.5,
                 fill: bool = True) -> None:
        self.kf = np.asarray(kf_indices, dtype=np.int64)
        order = np.argsort(self.kf, kind="stable")
        self.kf = self.kf[order]
        self.disps = np.asarray(kf_disps, dtype=np.float64)[order]
        self.conf = None if kf_confidence is None else np.asarray(kf_confidence, dtype=np.float64)[order]
        self.K = np.asarray(kf_intrinsics, dtype=np.float64)
        self.poses = np.asarray(poses, dtype=np.float64)
        self.inv = invert(self.poses)
        self.min_confidence = float(min_confidence)
        self.fill = fill
        if len(self.kf) == 0:
            raise ValueError("KeyframeDepth needs at least one keyframe")
        self.h, self.w = self.disps.shape[1:]
        v, u = np.mgrid[0:self.h, 0:self.w].astype(np.float64)
        self.rays = np.stack([(u - self.K[2]) / self.K[0], (v - self.K[3]) / self.K[1], np.ones_like(u)], -1)

    def __len__(self) -> int:
        return len(self.poses)

    def _sources(self, i: int) -> list[int]:
        """Positions (into the keyframe arrays) of the keyframes used for frame i."""
        pos = int(np.searchsorted(self.kf, i))
        if pos < len(self.kf) and self.kf[pos] == i:
            return [pos]
        return [p for p in (pos - 1, pos) if 0 <= p < len(self.kf)]

    def __getitem__(self, i: int) -> np.ndarray:
        if i < 0:
            i += len(self)
        zbuf = np.full(self.h * self.w, np.inf)
        for p in self._sources(i):
            d = self.disps[p]
            ok = np.isfinite(d) & (d > 1e-12)
            if self.conf is not None:
                ok &= self.conf[p] >= self.min_confidence
            P = self.rays[ok] / d[ok][:, None]
            T = self.inv[i] @ self.poses[self.kf[p]]
            Q = P @ T[:3, :3].T + T[:3, 3]
            z = Q[:, 2]
            front = z > 1e-9
            Q, z = Q[front], z[front]
            u = np.rint(self.K[0] * Q[:, 0] / z + self.K[2]).astype(np.int64)
            v = np.rint(self.K[1] * Q[:, 1] / z + self.K[3]).astype(np.int64)
            inside = (u >= 0) & (u < self.w) & (v >= 0) & (v < self.h)
            np.minimum.at(zbuf, v[inside] * self.w + u[inside], z[inside])
        depth = zbuf.reshape(self.h, self.w)
        known = np.isfinite(depth)
        if not known.any():
            return np.zeros((self.h, self.w), np.float32)
        if self.fill and not known.all():
            idx = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
            depth = depth[idx[0], idx[1]]
        return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
