"""Trajectory accuracy against ground truth, computed with ``evo``.

Conventions: poses are camera-to-world (N, 4, 4), timestamps in seconds.
Rows with any non-finite value (missing ground truth, unregistered frames)
are dropped before association.  The estimate is associated with the ground
truth by nearest timestamp within ``max_time_diff`` (evo's ``sync``), then
aligned with a Sim(3) Umeyama fit of the positions (scale included, since
monocular runs have an arbitrary scale).  All metrics are computed on the
aligned estimate, so translations are in ground-truth units (metres):

* ``ate_rmse_m`` (plus ``ate_mean_m``, ``ate_median_m``, ``ate_max_m``):
  absolute trajectory error, translation part;
* ``ate_pct_path``: ``100 * ate_rmse_m / path_length_m``;
* ``rpe_trans_m`` / ``rpe_rot_deg``: RMSE of the relative pose error between
  associated poses ``rpe_delta`` apart (frames of the associated lists, so a
  gap in the ground truth spans more than one input frame);
* ``path_length_m``: length of the associated ground-truth path;
* ``scale``: the Sim(3) scale applied to the estimate;
* ``tracked_fraction``: fraction of the estimate's frames that were tracked
  (``tracked`` and finite), ``frames`` / ``evaluated_frames`` counts.

Degenerate inputs (fewer than :data:`MIN_POSES` associated poses, static
ground truth, a static estimate) raise :class:`MetricsError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Fewest associated poses an evaluation accepts.
MIN_POSES: int = 3

#: Positions spread (RMS distance to their mean) below which a trajectory is static.
STATIC_EPS: float = 1e-9


class MetricsError(ValueError):
    """The trajectories cannot be compared (too few poses, static ground truth...)."""


@dataclass
class TrajectoryEvaluation:
    """Metrics plus what a plot needs.

    Attributes:
        metrics: the numbers listed in the module docstring.
        timestamps: (N,) associated timestamps (of the estimate).
        gt_xyz: (N, 3) ground-truth positions.
        est_xyz: (N, 3) aligned estimated positions.
        rotation, translation, scale: the Sim(3) ``x -> scale * R x + t`` applied to the estimate.
    """

    metrics: dict[str, float]
    timestamps: np.ndarray
    gt_xyz: np.ndarray
    est_xyz: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0


def umeyama(x: np.ndarray, y: np.ndarray, with_scale: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares ``(R, t, s)`` with ``y ~ s R x + t`` for (N, 3) point sets.

    Unlike evo's version it accepts collinear points (the rotation about the line
    is then arbitrary but the aligned positions are not).

    Raises:
        MetricsError: ``x`` or ``y`` static.
    """
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    var_x = float((xc ** 2).sum(1).mean())
    if np.sqrt(float((yc ** 2).sum(1).mean())) < STATIC_EPS:
        raise MetricsError("ground truth is static (the camera does not move): "
                           "ATE after Sim(3) alignment is undefined")
    if np.sqrt(var_x) < STATIC_EPS:
        raise MetricsError("the estimated trajectory is static: Sim(3) alignment is undefined")
    cov = yc.T @ xc / x.shape[0]
    u, d, vt = np.linalg.svd(cov)
    s_mat = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s_mat[2, 2] = -1.0
    R = u @ s_mat @ vt
    s = float(np.trace(np.diag(d) @ s_mat) / var_x) if with_scale else 1.0
    t = my - s * R @ mx
    return R, t, s


def _finite_rows(timestamps: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(timestamps) & np.isfinite(poses.reshape(len(poses), -1)).all(1)
    return timestamps[ok], poses[ok]


def _orthonormalize(T: np.ndarray) -> np.ndarray:
    """(N, 4, 4) transforms with their rotation blocks projected onto SO(3) (nearest, by SVD)."""
    T = T.copy()
    if len(T) == 0:
        return T
    U, _, Vt = np.linalg.svd(T[:, :3, :3])
    d = np.sign(np.linalg.det(U @ Vt))
    U[:, :, 2] *= d[:, None]
    T[:, :3, :3] = U @ Vt
    return T


def evaluate_trajectory(est_timestamps: np.ndarray, est_poses: np.ndarray, gt_timestamps: np.ndarray,
                        gt_poses: np.ndarray, *, tracked: np.ndarray | None = None,
                        max_time_diff: float = 0.01, rpe_delta: int = 1,
                        correct_scale: bool = True) -> TrajectoryEvaluation:
    """Align an estimate to ground truth and compute ATE / RPE (module docstring).

    Args:
        est_timestamps: (F,) seconds of the estimate.
        est_poses: (F, 4, 4) camera-to-world; NaN rows are unregistered frames.
        gt_timestamps: (N,) seconds of the ground truth.
        gt_poses: (N, 4, 4) camera-to-world; NaN rows are missing ground truth.
        tracked: optional (F,) bool, frames with a tracked (not filled-in) pose.
        max_time_diff: association tolerance in seconds.
        rpe_delta: RPE step in associated poses.
        correct_scale: Sim(3) (True) or SE(3) (False) alignment.
    Raises:
        MetricsError: degenerate inputs (see the module docstring).
    """
    from evo.core import lie_algebra, metrics, sync
    from evo.core.trajectory import PoseTrajectory3D

    est_t = np.asarray(est_timestamps, dtype=np.float64).reshape(-1)
    est_p = np.asarray(est_poses, dtype=np.float64).reshape(-1, 4, 4)
    if est_t.shape[0] != est_p.shape[0]:
        raise MetricsError(f"{est_t.shape[0]} estimate timestamps but {est_p.shape[0]} poses")
    gt_t = np.asarray(gt_timestamps, dtype=np.float64).reshape(-1)
    gt_p = np.asarray(gt_poses, dtype=np.float64).reshape(-1, 4, 4)
    if gt_t.shape[0] != gt_p.shape[0]:
        raise MetricsError(f"{gt_t.shape[0]} ground-truth timestamps but {gt_p.shape[0]} poses")
    n_frames = est_t.shape[0]
    finite = np.isfinite(est_p.reshape(n_frames, -1)).all(1)
    trk = finite if tracked is None else (np.asarray(tracked, dtype=bool).reshape(-1) & finite)
    tracked_fraction = float(trk.mean()) if n_frames else 0.0

    est_t, est_p = _finite_rows(est_t, est_p)
    gt_t, gt_p = _finite_rows(gt_t, gt_p)
    if len(est_t) < MIN_POSES or len(gt_t) < MIN_POSES:
        raise MetricsError(f"too few poses to evaluate ({len(est_t)} estimated, {len(gt_t)} ground truth; "
                           f"need {MIN_POSES})")
    # evo checks SO(3) to a tight tolerance: project rotations stored in float32 (or
    # read from text files) onto SO(3) first
    gt_p, est_p = _orthonormalize(gt_p), _orthonormalize(est_p)
    ref = PoseTrajectory3D(poses_se3=list(gt_p), timestamps=gt_t)
    est = PoseTrajectory3D(poses_se3=list(est_p), timestamps=est_t)
    try:
        ref, est = sync.associate_trajectories(ref, est, max_diff=max_time_diff)
    except sync.SyncException as e:
        raise MetricsError(f"no estimated pose matches a ground-truth time within {max_time_diff} s ({e})") from None
    n = est.num_poses
    if n < MIN_POSES:
        raise MetricsError(f"only {n} estimated poses match ground-truth times within {max_time_diff} s "
                           f"(need {MIN_POSES})")

    R, t, s = umeyama(est.positions_xyz, ref.positions_xyz, with_scale=correct_scale)
    est.scale(s)
    est.transform(lie_algebra.se3(R, t))

    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    ape_stats = ape.get_all_statistics()
    out: dict[str, float] = {
        "ate_rmse_m": float(ape_stats["rmse"]),
        "ate_mean_m": float(ape_stats["mean"]),
        "ate_median_m": float(ape_stats["median"]),
        "ate_max_m": float(ape_stats["max"]),
    }
    for key, rel in (("rpe_trans_m", metrics.PoseRelation.translation_part),
                     ("rpe_rot_deg", metrics.PoseRelation.rotation_angle_deg)):
        if n > rpe_delta:
            rpe = metrics.RPE(rel, delta=rpe_delta, delta_unit=metrics.Unit.frames, all_pairs=False)
            rpe.process_data((ref, est))
            out[key] = float(rpe.get_statistic(metrics.StatisticsType.rmse))
        else:
            out[key] = float("nan")
    path = float(ref.path_length)
    out["path_length_m"] = path
    out["ate_pct_path"] = 100.0 * out["ate_rmse_m"] / path if path > 0 else float("nan")
    out["scale"] = float(s)
    out["tracked_fraction"] = tracked_fraction
    out["frames"] = int(n_frames)
    out["evaluated_frames"] = int(n)
    return TrajectoryEvaluation(out, np.asarray(est.timestamps), np.asarray(ref.positions_xyz),
                                np.asarray(est.positions_xyz), R, t, float(s))


def compute_metrics(est_timestamps: np.ndarray, est_poses: np.ndarray, gt_timestamps: np.ndarray,
                    gt_poses: np.ndarray, **kwargs) -> dict[str, float]:
    """The ``metrics`` dictionary of :func:`evaluate_trajectory` (same arguments)."""
    return evaluate_trajectory(est_timestamps, est_poses, gt_timestamps, gt_poses, **kwargs).metrics


def focal_error(estimated: np.ndarray, reference: np.ndarray) -> float:
    """Relative error ``fx_est / fx_ref - 1`` of ``[fx, fy, cx, cy]`` intrinsics at the same resolution."""
    return float(np.asarray(estimated, dtype=np.float64)[0] / np.asarray(reference, dtype=np.float64)[0] - 1.0)


def find_dynamic_masks(seq_path: str | Path, n_frames: int) -> list[Path] | None:
    """Ground-truth dynamic masks of a synthetic sequence, one per frame, if present.

    ``slam synth`` writes ``masks/NNNNNN.png`` (video layout) or
    ``dynamic_mask/NNNNNN_mask.png`` (TartanAir layout) beside the frames;
    the k-th sorted file is frame k.  Returns None when there are none or
    their count differs from ``n_frames``.
    """
    root = Path(seq_path)
    root = root if root.is_dir() else root.parent
    for sub in ("masks", "dynamic_mask"):
        files = sorted((root / sub).glob("*.png"))
        if files and len(files) == n_frames:
            return files
    return None


def motion_iou(motion: np.ndarray, masks: list[Path], thresh: float = 0.5,
               frame_rows: np.ndarray | None = None) -> float:
    """Intersection over union of predicted moving pixels against ground-truth masks.

    Args:
        motion: (F, h, w) motion probability of each frame (any resolution;
            upsampled bilinearly to the masks').
        masks: ground-truth mask files (nonzero = moving), indexed by frame.
        thresh: probability above which a pixel is predicted moving.
        frame_rows: (F,) index into ``masks`` of each row (default 0 .. F-1).
    Returns:
        IoU pooled over all frames (intersection and union summed first);
        nan when neither marks any pixel.
    """
    import cv2

    rows = np.arange(len(motion)) if frame_rows is None else np.asarray(frame_rows)
    inter = union = 0
    for m, r in zip(np.asarray(motion, dtype=np.float32), rows):
        gt = cv2.imread(str(masks[int(r)]), cv2.IMREAD_GRAYSCALE) > 0
        pred = cv2.resize(m, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR) > thresh
        inter += int((pred & gt).sum())
        union += int((pred | gt).sum())
    return inter / union if union else float("nan")
