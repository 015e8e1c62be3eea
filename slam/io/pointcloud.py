"""Coloured point clouds fused from the keyframe inverse depths of a run.

Every keyframe pixel with a confident inverse depth is lifted to the world
(``recon.kf_disps`` at feature resolution, ``recon.feature_intrinsics``,
camera-to-world ``recon.kf_poses``) and kept when enough nearby keyframes agree
with it (multi-view geometric consistency, as in MVS depth-map fusion):

A point ``X`` of keyframe ``k`` is *consistent* with keyframe ``m`` when

1. ``X`` projects in front of ``m`` inside its feature map, where all four
   bilinear neighbours of ``m``'s depth map are valid (finite, positive,
   confident);
2. its depth in ``m`` agrees with ``m``'s (bilinearly interpolated) depth
   ``d`` there: ``|z - d| <= rel_depth_tol * d``;
3. (forward-backward check) ``m``'s surface point at that pixel, projected
   back into ``k``, lands within ``consistency_px`` feature pixels of the
   original pixel (``None`` disables this check).

Neighbours of keyframe ``k`` are the keyframes ``k - neighbours .. k +
neighbours`` (by index, excluding ``k``).  A point is kept when it is
consistent with at least ``min(min_views, number of neighbours)`` of them,
so with a single keyframe (no neighbours) only the confidence filter applies.

Colours are sampled bilinearly from ``recon.kf_images`` at the processing
resolution: feature pixel ``(u, v)`` at scale ``s = w / W`` has its centre at
image coordinate ``((u + 0.5) / s - 0.5, (v + 0.5) / s - 0.5)`` (pixel-centre
convention of :mod:`slam.geometry.camera`).

Everything is vectorised over pixels with NumPy; the only Python loops are over
keyframes and their neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Any

import numpy as np

from slam.geometry.pose import invert
from slam.system.result import Reconstruction

#: Smallest inverse depth treated as valid (1/m of the run's scale).
MIN_DISP: float = 1e-6


@dataclass
class FusedCloud:
    """A fused point cloud with the provenance of every point.

    Attributes:
        xyz: (P, 3) float32 world coordinates.
        rgb: (P, 3) uint8 colours.
        keyframe: (P,) int32 index (into ``recon.kf_*``) of the keyframe the point comes from.
        uv: (P, 2) float32 image coordinates ``(x, y)`` of the point in that keyframe, at the
            processing resolution, pixel-centre convention.
        views: (P,) int16 number of consistent neighbouring keyframes.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    keyframe: np.ndarray
    uv: np.ndarray
    views: np.ndarray

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def bilinear_sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` (h, w[, C]) at coordinates (N,) ``x``, ``y``
    (pixel centres at integers); coordinates are clamped to the image."""
    h, w = img.shape[:2]
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, max(w - 2, 0))
    y0 = np.clip(np.floor(y).astype(np.int64), 0, max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    ax = x - x0
    ay = y - y0
    if img.ndim == 3:
        ax, ay = ax[:, None], ay[:, None]
    img = img.astype(np.float64, copy=False)
    top = img[y0, x0] * (1 - ax) + img[y0, x1] * ax
    bot = img[y1, x0] * (1 - ax) + img[y1, x1] * ax
    return top * (1 - ay) + bot * ay


def _project(K: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) camera points -> ``(u, v, z)`` with intrinsics ``[fx, fy, cx, cy]``."""
    z = P[:, 2]
    zs = np.where(np.abs(z) > 1e-12, z, 1e-12)
    return K[0] * P[:, 0] / zs + K[2], K[1] * P[:, 1] / zs + K[3], z


def _consistent(K: np.ndarray, T_mk: np.ndarray, Pk: np.ndarray, uk: np.ndarray, vk: np.ndarray,
                disp_m: np.ndarray, valid_m: np.ndarray, rel_depth_tol: float,
                consistency_px: float | None) -> np.ndarray:
    """(N,) bool: points ``Pk`` (camera frame of k, pixels ``uk, vk``) consistent with keyframe m."""
    h, w = disp_m.shape
    Pm = Pk @ T_mk[:3, :3].T + T_mk[:3, 3]
    u, v, z = _project(K, Pm)
    ok = (z > 0) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    out = np.zeros(Pk.shape[0], dtype=bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return out
    u, v, z = u[idx], v[idx], z[idx]
    allvalid = bilinear_sample(valid_m, u, v) > 1.0 - 1e-6
    disp = bilinear_sample(np.where(valid_m > 0, disp_m, 0.0), u, v)
    d = 1.0 / np.maximum(disp, MIN_DISP)
    good = allvalid & (np.abs(z - d) <= rel_depth_tol * d)
    if consistency_px is not None:
        ray = np.stack([(u - K[2]) / K[0], (v - K[3]) / K[1], np.ones_like(u)], 1)
        T_km = invert(T_mk)
        Qk = (ray * d[:, None]) @ T_km[:3, :3].T + T_km[:3, 3]
        ub, vb, zb = _project(K, Qk)
        good &= (zb > 0) & (np.hypot(ub - uk[idx], vb - vk[idx]) <= consistency_px)
    out[idx] = good
    return out


def fuse_cloud(recon: Reconstruction, *, min_confidence: float = 0.2, ref_confidence: float = 0.0,
               consistency_px: float | None = 1.0, rel_depth_tol: float = 0.05, min_views: int = 3, neighbours: int = 4,
               max_points: int | None = 2_000_000, seed: int = 0) -> FusedCloud:
    """Fuse the keyframe depth maps of ``recon`` into a filtered, coloured point cloud.

    Args:
        recon: the run's result (see the module docstring for the fields used).
        min_confidence: keep pixels with ``kf_confidence >= min_confidence``.
        ref_confidence: a neighbouring keyframe's depth takes part in the
            consistency check where its confidence is at least this (agreement
            with it is the evidence, so it need not be confident itself).
        consistency_px: forward-backward reprojection tolerance in feature pixels;
            None disables that part of the check.
        rel_depth_tol: relative depth agreement for a consistent neighbour.
        min_views: consistent neighbours required (capped by the number of neighbours);
            0 disables the consistency filter.
        neighbours: keyframes on each side (by index) checked for consistency.
        max_points: keep at most this many points (uniform random subset, fixed
            ``seed``); None for no limit.
        seed: seed of that subset.
    Returns:
        a :class:`FusedCloud` (possibly empty).
    """
    disps = np.asarray(recon.kf_disps, dtype=np.float64)
    n_kf = disps.shape[0] if disps.ndim == 3 else 0
    empty = FusedCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int32),
                       np.zeros((0, 2), np.float32), np.zeros(0, np.int16))
    if n_kf == 0:
        return empty
    h, w = disps.shape[1:]
    conf = recon.kf_confidence
    conf = np.ones_like(disps) if conf is None else np.asarray(conf, dtype=np.float64)
    usable = np.isfinite(disps) & (disps > MIN_DISP)
    valid = (usable & (conf >= min_confidence)).astype(np.float64)
    ref = (usable & (conf >= ref_confidence)).astype(np.float64)
    K = np.asarray(recon.feature_intrinsics, dtype=np.float64)
    poses = np.asarray(recon.kf_poses, dtype=np.float64)
    poses_inv = invert(poses)
    images = recon.kf_images
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(uu - K[2]) / K[0], (vv - K[3]) / K[1], np.ones_like(uu)], -1)  # (h, w, 3)

    parts: list[tuple] = []
    for k in range(n_kf):
        sel = valid[k] > 0
        if not sel.any():
            continue
        uk, vk = uu[sel], vv[sel]
        Pk = rays[sel] / disps[k][sel][:, None]
        nbrs = [m for m in range(max(0, k - neighbours), min(n_kf, k + neighbours + 1)) if m != k]
        need = min(min_views, len(nbrs))
        views = np.zeros(Pk.shape[0], dtype=np.int16)
        if need > 0:
            for m in nbrs:
                T_mk = poses_inv[m] @ poses[k]
                views += _consistent(K, T_mk, Pk, uk, vk, disps[m], ref[m], rel_depth_tol, consistency_px)
            keep = views >= need
            Pk, uk, vk, views = Pk[keep], uk[keep], vk[keep], views[keep]
        if Pk.shape[0] == 0:
            continue
        Xw = Pk @ poses[k, :3, :3].T + poses[k, :3, 3]
        if images is not None and len(images) > k:
            img = np.asarray(images[k])
            sx, sy = w / img.shape[1], h / img.shape[0]
            x, y = (uk + 0.5) / sx - 0.5, (vk + 0.5) / sy - 0.5
            rgb = np.clip(np.rint(bilinear_sample(img[..., :3], x, y)), 0, 255).astype(np.uint8)
        else:
            W, H = recon.image_size
            x, y = (uk + 0.5) * W / w - 0.5, (vk + 0.5) * H / h - 0.5
            rgb = np.full((Pk.shape[0], 3), 128, np.uint8)
        parts.append((Xw, rgb, np.full(Pk.shape[0], k, np.int32), np.stack([x, y], 1), views))
    if not parts:
        return empty
    cloud = FusedCloud(np.concatenate([p[0] for p in parts]).astype(np.float32),
                       np.concatenate([p[1] for p in parts]),
                       np.concatenate([p[2] for p in parts]),
                       np.concatenate([p[3] for p in parts]).astype(np.float32),
                       np.concatenate([p[4] for p in parts]).astype(np.int16))
    if max_points is not None and len(cloud) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(cloud), size=int(max_points), replace=False))
        cloud = FusedCloud(cloud.xyz[keep], cloud.rgb[keep], cloud.keyframe[keep], cloud.uv[keep], cloud.views[keep])
    return cloud


def fuse_points(recon: Reconstruction, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz (P, 3) float32 world, rgb (P, 3) uint8)`` of :func:`fuse_cloud` (same keyword arguments)."""
    c = fuse_cloud(recon, **options)
    return c.xyz, c.rgb
