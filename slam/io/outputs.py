"""Everything a run writes to its output folder.

:func:`write_outputs` writes, under ``out_dir``:

``trajectory.txt``
    every input frame, TUM format (``timestamp tx ty tz qx qy qz qw``),
    camera-to-world (:func:`slam.io.tum.write_tum`).
``keyframes.npz``
    ``indices`` (K,) int64 input-frame index, ``timestamps`` (K,),
    ``poses`` (K, 4, 4) camera-to-world, ``disps`` (K, h, w) float32 inverse
    depth at feature resolution, ``confidence`` (K, h, w) float32,
    ``intrinsics`` (4,) ``[fx, fy, cx, cy]`` at the processing resolution,
    ``image_size`` (2,) ``(W, H)`` processing resolution,
    ``feature_intrinsics`` (4,) intrinsics at the resolution of ``disps``,
    ``motion`` (K, h, w) float32 motion probability (when the run has one).
``points.ply``
    the fused coloured point cloud (:mod:`slam.io.pointcloud`, :mod:`slam.io.ply`).
``summary.json``
    ``frames, keyframes, fps, wall_s, peak_rss_mb, intrinsics`` (``[fx, fy,
    cx, cy]`` at the **input** resolution), ``focal_estimated,
    correspondence, tracked_fraction, interrupted, input_size,
    processing_size, points`` and every entry of ``recon.stats`` (also
    under ``stats``); NaN / infinity are written as ``null``.
``colmap/`` (when ``colmap=True``)
    a COLMAP text model of the keyframes (:mod:`slam.io.colmap`).
``motion_masks/`` (when ``motion_masks=True`` and the run has motion maps)
    ``{row:06d}.png`` for every input frame (row = line of ``trajectory.txt``):
    8-bit, input resolution, 255 where the motion probability exceeds
    ``motion_thresh`` (a moving object), else 0 (:func:`write_motion_masks`).

Every file is written to a temporary name in the same folder and renamed
into place, so an interrupted or crashed writer never leaves a truncated file
behind (an older complete file, or none).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from slam.system.result import Reconstruction


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary name keeps ``path``'s suffix (``.x.tmp.npz``) so that writers
    which add a suffix do not rename it.  On error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def to_jsonable(value: Any) -> Any:
    """Recursively convert NumPy scalars/arrays, tuples and paths to JSON types;
    non-finite floats become None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    return str(value)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` (see :func:`to_jsonable`) as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    return path


def summarize(recon: Reconstruction, n_points: int | None = None) -> dict[str, Any]:
    """The ``summary.json`` dictionary of a run (see the module docstring)."""
    stats = dict(recon.stats or {})
    tracked = np.asarray(recon.tracked, dtype=bool)
    summary: dict[str, Any] = {
        "frames": int(len(recon.timestamps)),
        "keyframes": int(len(recon.kf_indices)),
        "fps": stats.get("fps"),
        "wall_s": stats.get("wall_s"),
        "peak_rss_mb": stats.get("peak_rss_mb"),
        "intrinsics": [float(v) for v in recon.input_intrinsics],
        "focal_estimated": bool(recon.focal_estimated),
        "correspondence": recon.correspondence,
        "tracked_fraction": float(tracked.mean()) if tracked.size else 0.0,
        "interrupted": bool(recon.interrupted),
        "input_size": [int(v) for v in recon.input_size],
        "processing_size": [int(v) for v in recon.image_size],
        "processing_intrinsics": [float(v) for v in recon.intrinsics],
    }
    if n_points is not None:
        summary["points"] = int(n_points)
    for k, v in stats.items():
        summary.setdefault(k, v)
    summary["stats"] = stats
    return to_jsonable(summary)


def write_keyframes(path: str | Path, recon: Reconstruction) -> Path:
    """Write ``keyframes.npz`` (keys listed in the module docstring), atomically."""
    path = Path(path)
    ts = np.asarray(recon.timestamps, dtype=np.float64)
    idx = np.asarray(recon.kf_indices, dtype=np.int64)
    conf = recon.kf_confidence if recon.kf_confidence is not None else np.ones_like(recon.kf_disps)
    extra = {} if recon.kf_motion is None else {"motion": np.asarray(recon.kf_motion, dtype=np.float32)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, indices=idx, timestamps=ts[idx] if ts.size else np.zeros(len(idx)),
                     poses=np.asarray(recon.kf_poses, dtype=np.float64),
                     disps=np.asarray(recon.kf_disps, dtype=np.float32),
                     confidence=np.asarray(conf, dtype=np.float32),
                     intrinsics=np.asarray(recon.intrinsics, dtype=np.float64),
                     image_size=np.asarray(recon.image_size, dtype=np.int64),
                     feature_intrinsics=np.asarray(recon.feature_intrinsics, dtype=np.float64), **extra)
    return path


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the complete folder ``tmp`` to ``final``, replacing an existing one."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def write_motion_masks(recon: Reconstruction, out_dir: str | Path, thresh: float = 0.5) -> Path:
    """Write one binary motion mask per input frame (see the module docstring).

    The (F, h, w) probabilities are upsampled bilinearly (pixel-centre
    convention) to the input resolution, then thresholded.  The folder is
    written next to its final name and renamed into place.
    """
    import cv2

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    W, H = recon.input_size
    for r, m in enumerate(np.asarray(recon.motion, dtype=np.float32)):
        up = cv2.resize(m, (int(W), int(H)), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(tmp / f"{r:06d}.png"), np.where(up > thresh, 255, 0).astype(np.uint8))
    _replace_dir(tmp, out)
    return out


def write_outputs(recon: Reconstruction, out_dir: str | Path, *, colmap: bool = False, ply: bool = True,
                  fuse: Mapping[str, Any] | None = None, motion_masks: bool = False,
                  motion_thresh: float = 0.5) -> dict[str, Path]:
    """Write the outputs of a run (see the module docstring).

    Args:
        recon: the (possibly interrupted) run.
        out_dir: output folder, created if needed; existing files are replaced.
        colmap: also write the COLMAP text model to ``out_dir/colmap``.
        ply: write ``points.ply`` (the fusion is skipped when neither ``ply`` nor ``colmap``).
        fuse: keyword arguments of :func:`slam.io.pointcloud.fuse_cloud`
            (``min_confidence``, ``consistency_px``, ``rel_depth_tol``, ``min_views``,
            ``neighbours``, ``max_points``, ``seed``); its defaults when None.
        motion_masks: write ``motion_masks/`` (when ``recon.motion`` exists),
            thresholded at ``motion_thresh``.
    Returns:
        ``{"trajectory", "keyframes", "summary"[, "points"][, "colmap"][, "motion_masks"]: path}``.
    """
    from slam.io.tum import write_tum

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    paths["trajectory"] = out / "trajectory.txt"
    with atomic_path(paths["trajectory"]) as tmp:
        write_tum(tmp, recon.timestamps, recon.poses)
    paths["keyframes"] = write_keyframes(out / "keyframes.npz", recon)

    cloud = None
    if ply or colmap:
        from slam.io.pointcloud import fuse_cloud

        cloud = fuse_cloud(recon, **dict(fuse or {}))
    if ply:
        from slam.io.ply import write_ply

        paths["points"] = out / "points.ply"
        with atomic_path(paths["points"]) as tmp:
            write_ply(tmp, cloud.xyz, cloud.rgb)
    if colmap:
        from slam.io.colmap import write_colmap

        tmp_dir = out / ".colmap.tmp"
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
        try:
            write_colmap(recon, tmp_dir, cloud)
            _replace_dir(tmp_dir, out / "colmap")
        finally:
            if tmp_dir.exists():
                shutil.rmtree(tmp_dir)
        paths["colmap"] = out / "colmap"

    if motion_masks and recon.motion is not None:
        paths["motion_masks"] = write_motion_masks(recon, out / "motion_masks", motion_thresh)
    paths["summary"] = write_json(out / "summary.json", summarize(recon, None if cloud is None else len(cloud)))
    return paths
