"""Trajectory filler: a pose for every input frame, not only the keyframes.

Each non-keyframe t between keyframes a (before) and b (after) starts from
the geodesic interpolation of their poses at t's timestamp and is refined by
a pose-only BA against keyframe depths (held fixed): against the keyframe it
was tracked against, with the correspondences the frontend recorded while
tracking (no second pass over the input), or, for frames without such a
record, against both a and b with correspondences a->t and b->t computed in a
second pass; in that pass every frame can also be re-measured from its
refined pose (``remeasure``).  Frames are processed in chunks so that each BA
is a small batched problem.
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
                    tracks: dict[int, TrackRecord] | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Camera-to-world poses (F, 4, 4) and a tracked flag (F,) for every frame.

    Stages (each a pose-only BA of ``options.chunk`` frames at a time, keyframe
    depths held):

    1. frames with a frontend record whose keyframe still exists: one edge
       each, from the record (no image needed); a record whose weights are
       not a checked confidence (``TrackRecord.checked``) refines the pose but
       does not make the frame tracked;
    2. in one pass over ``frames``, chunk by chunk: frames without such a
       record (without a checked one, when not re-measuring) are measured
       against both neighbouring keyframes (``source.update``, started at
       the interpolated pose); then, when
       ``options.remeasure`` and the source refines, every frame of the chunk
       is re-measured from its current pose's reprojection
       (``source.refine``).  A frame whose re-measurement is too weak keeps
       its pose and gets one more checked measurement (``source.update``) if it
       had none in this pass.

    Args:
        snap: final keyframe state.  feature_K: (4,) feature-resolution intrinsics.
        timestamps, frame_ids: (F,) of every input frame, in order.
        kf_frames: input-frame index -> the keyframe's correspondence data.
        frames: iterator of ``(frame_id, image at processing resolution)`` over
            the frames of :func:`second_pass_frames` (others are skipped; None:
            stage 1 and interpolation only).
        tracks: the frontend's records (input-frame index -> correspondences
            to its keyframe).
    Returns:
        ``(T_wc (F, 4, 4), tracked (F,), interrupted)``.  A frame is tracked
        when its last checked measurement had ``options.min_points`` confident
        points per edge; keyframes always are.  A KeyboardInterrupt while
        ``frames`` is read ends the pass after the frames already read
        (``interrupted`` True); the other frames keep their stage-1 or
        interpolated poses.
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
        return pp.SE3(poses.double()).Inv().matrix().numpy(), tracked, False
    done = is_kf.copy()
    posed = is_kf.copy()  # has a measured pose (keyframe or stage 1), a start close enough for refine
    # 1. frames tracked by the frontend: one edge each, from their records; an unchecked record
    #    (EdgeUpdate.checked) gives a pose but leaves the frame to stage 2 for its flag
    if tracks:
        unchecked: list[int] = []

        def recorded():
            for r, f in enumerate(frame_ids):
                rec = tracks.get(int(f))
                if done[r] or rec is None or rec.anchor not in slot_of:
                    continue
                done[r] = rec.checked
                posed[r] = True
                if not rec.checked:
                    unchecked.append(r)
                yield [_Edge(r, slot_of[rec.anchor], rec.target, rec.weight)]

        _refine_rows(recorded(), snap, feature_K, poses, tracked, options, lm, on_progress)
        tracked[unchecked] = False
    if frames is None:
        return pp.SE3(poses.double()).Inv().matrix().numpy(), tracked, False
    # 2. one pass: measure the unrecorded frames, re-measure every frame of the chunk
    remeasure = options.remeasure and source.refines
    row_of = {int(f): r for r, f in enumerate(frame_ids)}
    need = second_pass_frames(frame_ids, set(kf_ids), tracks or {}, options, source)

    def measure(chunk: list[tuple[int, FrameData]], refine: bool) -> np.ndarray:
        """Measure the chunk's frames against both neighbouring keyframes and BA; (F,) ok flags."""
        edges: list[_Edge] = []
        for r, fd in chunk:
            anchors = sorted({int(prv[r]), int(nxt[r])})
            args = ([kf_frames[kf_ids[a]] for a in anchors], [fd] * len(anchors),
                    _coords(snap, feature_K, poses, r, anchors))
            upd = source.refine(*args) if refine else source.update(*args)
            edges += [_Edge(r, a, upd.target[e], upd.weight[e]) for e, a in enumerate(anchors)]
        ok = np.zeros(len(frame_ids), dtype=bool)
        _refine_chunk(edges, snap, feature_K, poses, ok, options, lm)
        return ok

    def run_chunk(chunk: list[tuple[int, FrameData]]) -> None:
        # DIS first for frames without a measured pose; an unchecked record's frame is checked by the
        # re-measurement itself when there is one
        fresh = [(r, fd) for r, fd in chunk if not (posed[r] if remeasure else done[r])]
        if fresh:
            ok = measure(fresh, refine=False)
            for r, _ in fresh:
                tracked[r] = ok[r]
        if remeasure:
            ok = measure(chunk, refine=True)
            tracked[[r for r, _ in chunk if ok[r]]] = True
            # a failed re-measurement keeps the pose; a frame whose only measurement so far was
            # the frontend's record gets a checked one
            fresh_rows = {r for r, _ in fresh}
            retry = [(r, fd) for r, fd in chunk if not ok[r] and r not in fresh_rows]
            if retry:
                ok = measure(retry, refine=False)
                for r, _ in retry:
                    tracked[r] = ok[r]
        if on_progress:
            on_progress(len(chunk))

    chunk: list[tuple[int, FrameData]] = []
    interrupted = False
    try:
        for fid, image in frames:
            r = row_of.get(int(fid))
            if r is None or int(fid) not in need:
                continue
            chunk.append((r, source.prepare(int(fid), image)))
            if len(chunk) >= options.chunk:
                run_chunk(chunk)
                chunk = []
    except KeyboardInterrupt:  # Ctrl-C while reading: finish the frames read (at most one chunk) and stop
        interrupted = True
    if chunk:
        run_chunk(chunk)
    return pp.SE3(poses.double()).Inv().matrix().numpy(), tracked, interrupted


def recorded_frames(frame_ids: np.ndarray, kf_ids: set[int], tracks: dict[int, TrackRecord]) -> set[int]:
    """Non-keyframes with a frontend record against a surviving keyframe (stage 1 of :func:`fill_trajectory`)."""
    return {int(f) for f in frame_ids if int(f) not in kf_ids and int(f) in tracks and tracks[int(f)].anchor in kf_ids}


def second_pass_frames(frame_ids: np.ndarray, kf_ids: set[int], tracks: dict[int, TrackRecord],
                       options: FillerOptions, source: CorrespondenceSource) -> set[int]:
    """Input-frame indices :func:`fill_trajectory` needs images of (its stage 2).

    Every non-keyframe when re-measuring (``options.remeasure`` and a refining
    source); otherwise the non-keyframes without a usable, checked record.
    Empty when ``options.refine`` is off.
    """
    if not options.refine:
        return set()
    others = {int(f) for f in frame_ids if int(f) not in kf_ids}
    if options.remeasure and source.refines:
        return others
    return others - {f for f in recorded_frames(frame_ids, kf_ids, tracks) if tracks[f].checked}


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
