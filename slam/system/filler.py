"""Trajectory filler: a pose for every input frame, not only the keyframes.

Each non-keyframe t between keyframes a (before) and b (after) starts from
the geodesic interpolation of their poses at t's timestamp and is refined by
a pose-only BA against keyframe depths (held fixed): against the keyframe it
was tracked against, with the correspondences the frontend recorded while
tracking (no second pass over the input), or, for frames without such a
record, against both a and b with correspondences a->t and b->t computed in a
second pass.  Frames are processed in chunks so that each BA is a small
batched problem.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pypose as pp
import torch

from slam.ba.dense_ba import DenseBA, LMOptions
from slam.corr.base import CorrespondenceSource, FrameData
from slam.geometry.projective import project_edges
from slam.system.store import Snapshot, TrackRecord


@dataclass
class FillerOptions:
    """Tunables (mirrored in ``configs/run.yaml`` under ``filler``)."""

    refine: bool = True          # pose-only refinement (False: interpolation only)
    chunk: int = 16              # frames per batched pose-only BA
    iters: int = 6               # LM iterations per chunk
    min_points: int = 30         # confident correspondences (weight > 0.5, per edge on average) needed to call a frame tracked
    motion_weighting: bool = True  # scale weights by 1 - the keyframe's motion probability (set from motion.weighting)
    remeasure: bool = True       # second pass: re-measure each frame against both neighbouring keyframes (source.refine)


def interpolate_poses(snap: Snapshot, timestamps: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Geodesic interpolation of keyframe world-to-camera poses at ``timestamps``.

    Returns:
        ``(poses (F, 7), prev_slot (F,), next_slot (F,))``; outside the keyframe
        range the nearest keyframe pose is used (prev = next).
    """
    kt = snap.timestamps.numpy()
    G = pp.SE3(snap.poses.double())
    F = len(timestamps)
    nxt = np.searchsorted(kt, timestamps, side="left").clip(0, snap.n - 1)
    prv = (np.searchsorted(kt, timestamps, side="right") - 1).clip(0, snap.n - 1)
    ta, tb = kt[prv], kt[nxt]
    alpha = np.where(tb > ta, (timestamps - ta) / np.where(tb > ta, tb - ta, 1.0), 0.0).clip(0, 1)
    Ga, Gb = G[torch.from_numpy(prv)], G[torch.from_numpy(nxt)]
    d = (Gb * Ga.Inv()).Log().tensor() * torch.from_numpy(alpha)[:, None]
    out = pp.se3(d).Exp() * Ga
    return out.tensor().to(snap.poses.dtype).reshape(F, 7), prv, nxt


def fill_trajectory(snap: Snapshot, feature_K: torch.Tensor, timestamps: np.ndarray, frame_ids: np.ndarray,
                    kf_frames: dict[int, FrameData], frames: Iterable[tuple[int, np.ndarray]] | None,
                    source: CorrespondenceSource, options: FillerOptions, lm: LMOptions,
                    on_progress: Callable[[int], None] | None = None,
                    tracks: dict[int, TrackRecord] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world poses (F, 4, 4) and a tracked flag (F,) for every frame.

    Args:
        snap: final keyframe state.  feature_K: (4,) feature-resolution intrinsics.
        timestamps, frame_ids: (F,) of every input frame, in order.
        kf_frames: input-frame index -> the keyframe's correspondence data.
        frames: iterator of ``(frame_id, image at processing resolution)`` over
            all frames again, used for the frames without a track record
            (None: interpolation only for them).
        tracks: the frontend's records (input-frame index -> correspondences
            to its keyframe); frames with a record whose keyframe still exists
            are refined against it with no second pass over the input.
    """
    G0, prv, nxt = interpolate_poses(snap, timestamps)
    poses = G0.clone()
    tracked = np.zeros(len(frame_ids), dtype=bool)
    kf_ids = snap.frame_index.tolist()
    slot_of = {f: k for k, f in enumerate(kf_ids)}
    is_kf = np.array([int(f) in slot_of for f in frame_ids])
    for r, f in enumerate(frame_ids):
        if is_kf[r]:
            poses[r] = snap.poses[slot_of[int(f)]]
            tracked[r] = True
    if not options.refine or snap.n < 2:
        return pp.SE3(poses.double()).Inv().matrix().numpy(), tracked
    done = is_kf.copy()
    # 1. frames tracked by the frontend: one edge each, from their records
    if tracks:
        def recorded():
            for r, f in enumerate(frame_ids):
                rec = tracks.get(int(f))
                if done[r] or rec is None or rec.anchor not in slot_of:
                    continue
                done[r] = True
                yield [_Edge(r, slot_of[rec.anchor], rec.target, rec.weight)]

        _refine_rows(recorded(), snap, feature_K, poses, tracked, options, lm, on_progress)
    # 2. the others: correspondences to both neighbouring keyframes, from a second pass
    if frames is not None and not done.all():
        row_of = {int(f): r for r, f in enumerate(frame_ids)}

        def rows():
            for fid, image in frames:
                r = row_of.get(int(fid))
                if r is None or done[r]:
                    continue
                fd = source.prepare(int(fid), image)
                anchors = sorted({int(prv[r]), int(nxt[r])})
                upd = source.update([kf_frames[kf_ids[a]] for a in anchors], [fd] * len(anchors),
                                    _coords(snap, feature_K, poses, r, anchors))
                yield [_Edge(r, a, upd.target[e], upd.weight[e]) for e, a in enumerate(anchors)]

        _refine_rows(rows(), snap, feature_K, poses, tracked, options, lm, on_progress)
    T_wc = pp.SE3(poses.double()).Inv().matrix().numpy()
    return T_wc, tracked


def remeasure_trajectory(snap: Snapshot, feature_K: torch.Tensor, T_wc: np.ndarray, tracked: np.ndarray,
                         frame_ids: np.ndarray, timestamps: np.ndarray, kf_frames: dict[int, FrameData],
                         frames: Iterable[tuple[int, np.ndarray]],
                         source: CorrespondenceSource, options: FillerOptions, lm: LMOptions,
                         on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Refine filled non-keyframe poses once more with re-measured correspondences.

    For every frame of ``frames`` (a second pass over the input: ``(frame_id,
    image at processing resolution)``) that is not a keyframe, the source's
    ``refine`` (e.g. :meth:`slam.corr.classical.ClassicalFlow.refine`) measures
    the pixels of both neighbouring keyframes in the frame, started at their
    reprojection through the filled pose, and a pose-only BA against the
    keyframe depths follows (chunks of ``options.chunk`` frames).

    Args:
        T_wc: (F, 4, 4) camera-to-world poses from :func:`fill_trajectory`
            (not modified); tracked: (F,) its flags.
        kf_frames: input-frame index -> the keyframe's correspondence data.
    Returns:
        ``(T_wc (F, 4, 4), tracked (F,))`` updated; unchanged when the source
        does not refine (``source.refines``).  A re-measured frame is tracked when its new edges
        are strong enough (``options.min_points``); otherwise it keeps its
        pose but is no longer called tracked.
    """
    if not source.refines or snap.n < 2:
        return T_wc, tracked
    poses = pp.mat2SE3(torch.from_numpy(np.linalg.inv(T_wc)), check=False).tensor().to(snap.poses.dtype)
    ok = np.zeros_like(tracked)
    seen = np.zeros_like(tracked)
    _, prv, nxt = interpolate_poses(snap, timestamps)
    kf_ids = snap.frame_index.tolist()
    kf_set = set(kf_ids)
    row_of = {int(f): r for r, f in enumerate(frame_ids)}

    def rows():
        for fid, image in frames:
            r = row_of.get(int(fid))
            if r is None or int(fid) in kf_set:
                continue
            fd = source.prepare(int(fid), image)
            seen[r] = True
            anchors = sorted({int(prv[r]), int(nxt[r])})
            upd = source.refine([kf_frames[kf_ids[a]] for a in anchors], [fd] * len(anchors),
                                _coords(snap, feature_K, poses, r, anchors))
            yield [_Edge(r, a, upd.target[e], upd.weight[e]) for e, a in enumerate(anchors)]

    _refine_rows(rows(), snap, feature_K, poses, ok, options, lm, on_progress)
    return pp.SE3(poses.double()).Inv().matrix().numpy(), np.where(seen, ok, tracked)


def _refine_rows(rows: Iterable[list["_Edge"]], snap: Snapshot, K: torch.Tensor, poses: torch.Tensor,
                 flags: np.ndarray, options: FillerOptions, lm: LMOptions,
                 on_progress: Callable[[int], None] | None) -> None:
    """Pose-only BA of frames given one at a time (each as its list of edges), ``options.chunk`` frames per BA."""
    pending: list[_Edge] = []
    n_rows = 0
    for edges in rows:
        pending += edges
        n_rows += 1
        if n_rows >= options.chunk:
            _refine_chunk(pending, snap, K, poses, flags, options, lm)
            if on_progress:
                on_progress(n_rows)
            pending, n_rows = [], 0
    if pending:
        _refine_chunk(pending, snap, K, poses, flags, options, lm)
        if on_progress:
            on_progress(n_rows)


@dataclass
class _Edge:
    """One filler edge: keyframe slot -> frame row, with its correspondences (h, w, 2)."""

    row: int
    slot: int
    target: torch.Tensor
    weight: torch.Tensor


def _coords(snap: Snapshot, K: torch.Tensor, poses: torch.Tensor, r: int, anchors: list[int]) -> torch.Tensor:
    """(A, h, w, 2) reprojection of the anchors' pixels into frame row r at its current pose."""
    dev, dt = snap.disps.device, snap.disps.dtype
    G = torch.cat([snap.poses[anchors], poses[r:r + 1].to(dev, dt)], 0)
    disps = torch.cat([snap.disps[anchors], snap.disps[anchors[:1]]], 0)
    A = len(anchors)
    return project_edges(pp.SE3(G), disps, K, torch.arange(A, device=dev), torch.full((A,), A, device=dev)).coords


def _refine_chunk(edges: list[_Edge], snap: Snapshot, K: torch.Tensor, poses: torch.Tensor, tracked: np.ndarray,
                  options: FillerOptions, lm: LMOptions) -> None:
    """Pose-only BA of a chunk of non-keyframes against their keyframes' depths (held)."""
    rows = sorted({e.row for e in edges})
    anchors = sorted({e.slot for e in edges})
    a_local = {a: i for i, a in enumerate(anchors)}
    r_local = {r: i for i, r in enumerate(rows)}
    na, nb = len(anchors), len(rows)
    dev, dt = snap.disps.device, snap.disps.dtype
    G = torch.cat([snap.poses[anchors], poses[rows].to(dev, dt)], 0)
    h, w = snap.disps.shape[-2:]
    disps = torch.cat([snap.disps[anchors], torch.ones(nb, h, w, device=dev, dtype=dt)], 0)
    ii_t = torch.tensor([a_local[e.slot] for e in edges], device=dev)
    jj_t = torch.tensor([na + r_local[e.row] for e in edges], device=dev)
    target = torch.stack([e.target for e in edges]).to(dev, dt)
    weight = torch.stack([e.weight for e in edges]).to(dev, dt)
    if options.motion_weighting and snap.motion is not None:
        weight = weight * (1.0 - snap.motion[[e.slot for e in edges]].to(dev, dt))[..., None]
    fixed = torch.zeros(na + nb, dtype=torch.bool, device=dev)
    fixed[:na] = True
    ba = DenseBA(ii_t, jj_t, target, weight, na + nb, fixed=fixed,
                 options=LMOptions(**{**vars(lm), "iters": options.iters}), optimize_disps=False)
    res = ba.run(pp.SE3(G), disps, K)
    valid = torch.zeros(na + nb, device=dev).index_add_(0, jj_t, (weight[..., 0] > 0.5).float().sum((1, 2)))
    cnt = torch.zeros(na + nb, device=dev).index_add_(0, jj_t, torch.ones(len(edges), device=dev))
    points = (valid / cnt.clamp(min=1))[na:]
    for b, r in enumerate(rows):
        ok = bool(points[b] >= options.min_points)
        tracked[r] = ok
        if ok:
            poses[r] = res.poses.tensor()[na + b].to(poses.dtype)
