"""Loading a finished run's output folder (:mod:`slam.io.outputs`) for ``slam view``.

Files used:

``keyframes.npz`` (required)
    camera-to-world ``poses`` (K, 4, 4), ``disps`` / ``confidence`` (K, h, w) at
    feature resolution, ``feature_intrinsics`` (4,), ``indices`` (K,).
``points.ply`` (optional)
    the fused, filtered, coloured cloud.  The run stores no keyframe images, so the
    keyframe points get their colours from it: every fused point is the exact lift of
    one keyframe pixel, and is matched back to it (nearest lifted pixel within a tiny
    tolerance).  Matched pixels get confidence 1 and the pixels the fusion rejected 0,
    so that with the filter on the replay shows exactly ``points.ply``, keyframe by
    keyframe; with the filter off (key ``C``) the rejected ones are drawn grey.
``trajectory.txt`` (optional)
    the camera centre of every frame (the drawn path).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from viewer.scene import MIN_DISP, UNCOLORED, SceneUpdate


@dataclass
class SavedRun:
    """A run's outputs, ready to draw (see the module docstring)."""

    poses: np.ndarray              # (K, 4, 4) camera-to-world
    frame_index: np.ndarray        # (K,)
    intrinsics: np.ndarray         # (4,) feature resolution
    disps: np.ndarray              # (K, h, w)
    confidence: np.ndarray         # (K, h, w); with points.ply: 1 where fused, 0 where rejected
    colors: np.ndarray | None      # (K, h, w, 3) uint8, None without points.ply
    trajectory: np.ndarray | None  # (F, 3) camera centres of every frame
    timestamps: np.ndarray | None  # (F,) their timestamps
    kf_timestamps: np.ndarray      # (K,)
    matched: int = 0               # fused points matched to keyframe pixels

    def update(self, upto: int | None = None, start: int = 0, final: bool = True) -> SceneUpdate:
        """Keyframes ``< upto`` (default all) as one :class:`SceneUpdate`, with depth and colours
        for slots ``start .. upto-1`` only (a receiver that already has the earlier ones); the
        trajectory is cut at the last keyframe."""
        K = len(self.poses) if upto is None else int(upto)
        traj = None
        if self.trajectory is not None:
            if K < len(self.poses) and self.timestamps is not None:
                m = int(np.searchsorted(self.timestamps, self.kf_timestamps[K - 1], side="right")) if K else 0
                traj = self.trajectory[:max(m, 1)]
            else:
                traj = self.trajectory
        return SceneUpdate(
            n=K, poses=self.poses[:K], frame_index=self.frame_index[:K], intrinsics=self.intrinsics,
            depth={k: (self.disps[k], self.confidence[k]) for k in range(start, K)},
            colors={} if self.colors is None else {k: self.colors[k] for k in range(start, K)},
            trajectory=traj, final=final)


def _lift_all(disps: np.ndarray, K: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points of every valid keyframe pixel (float64, as :mod:`slam.io.pointcloud` computes
    them) and their flat indices into ``disps``."""
    n, h, w = disps.shape
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(uu - K[2]) / K[0], (vv - K[3]) / K[1], np.ones_like(uu)], -1).reshape(-1, 3)
    flat = disps.reshape(n, -1).astype(np.float64)
    pts, ids = [], []
    for k in range(n):
        ok = np.flatnonzero(np.isfinite(flat[k]) & (flat[k] > MIN_DISP))
        Pc = rays[ok] / flat[k, ok, None]
        pts.append(Pc @ poses[k, :3, :3].T + poses[k, :3, 3])
        ids.append(ok + k * h * w)
    return np.vstack(pts) if pts else np.zeros((0, 3)), np.concatenate(ids) if ids else np.zeros(0, np.int64)


def load_run(folder: str | Path) -> SavedRun:
    """Read a run's output folder.

    Raises:
        slam.data.sequence.InputError: no folder, or no ``keyframes.npz`` in it, or unreadable files.
    """
    from slam.data.sequence import InputError

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"run folder not found: {folder}")
    kf_path = folder / "keyframes.npz"
    if not kf_path.is_file():
        raise InputError(f"{folder}: no keyframes.npz (is it the output folder of `slam run`?)")
    try:
        kf = np.load(kf_path)
        poses = np.asarray(kf["poses"], dtype=np.float64)
        disps = np.asarray(kf["disps"], dtype=np.float32)
        conf = np.asarray(kf["confidence"], dtype=np.float32)
        Kf = np.asarray(kf["feature_intrinsics"], dtype=np.float64)
        index = np.asarray(kf["indices"], dtype=np.int64)
        kf_ts = np.asarray(kf["timestamps"], dtype=np.float64)
    except (KeyError, ValueError, OSError) as e:
        raise InputError(f"{kf_path}: unreadable ({e})") from None
    if poses.ndim != 3 or disps.ndim != 3 or len(poses) != len(disps):
        raise InputError(f"{kf_path}: inconsistent shapes {poses.shape} / {disps.shape}")
    traj = ts = None
    if (folder / "trajectory.txt").is_file():
        from slam.io.tum import read_tum

        ts, T = read_tum(folder / "trajectory.txt")
        traj = T[:, :3, 3] if len(T) else None
    colors, matched = None, 0
    if (folder / "points.ply").is_file() and len(poses):
        from scipy.spatial import cKDTree

        from slam.io.ply import read_ply

        xyz, rgb = read_ply(folder / "points.ply")
        lifted, ids = _lift_all(disps, Kf, poses)
        colors = np.broadcast_to(UNCOLORED, disps.shape + (3,)).copy()
        keep = np.zeros(disps.size, dtype=bool)
        if len(xyz) and len(lifted):
            scale = float(np.median(np.linalg.norm(lifted - lifted.mean(0), axis=1))) or 1.0
            dist, nearest = cKDTree(lifted).query(xyz.astype(np.float64), k=1)
            hit = dist <= 1e-4 * scale
            flat = ids[nearest[hit]]
            colors.reshape(-1, 3)[flat] = rgb[hit] if rgb is not None else UNCOLORED
            keep[flat] = True
            matched = int(hit.sum())
        if matched:
            conf = keep.reshape(conf.shape).astype(np.float32)
    return SavedRun(poses=poses, frame_index=index, intrinsics=Kf, disps=disps, confidence=conf, colors=colors,
                    trajectory=traj, timestamps=ts, kf_timestamps=kf_ts, matched=matched)
