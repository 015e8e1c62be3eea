"""Trajectory filler: a pose for every input frame, not only the keyframes.

Each non-keyframe t between keyframes a (before) and b (after) starts from
the geodesic interpolation of their poses at t's timestamp and is refined
against both keyframes (their depths held fixed) with a pose-only BA on the
correspondences a->t and b->t.  Frames are processed in chunks so that each
BA is a small batched problem.
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
from slam.system.store import Snapshot


@dataclass
class FillerOptions:
    """Tunables (mirrored in ``configs/run.yaml`` under ``filler``)."""

    refine: bool = True          # pose-only refinement (False: interpolation only)
    chunk: int = 16              # frames per batched pose-only BA
    iters: int = 6               # LM iterations per chunk
    min_valid: float = 0.1       # share of confident pixels needed to call a frame tracked


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
                    on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world poses (F, 4, 4) and a tracked flag (F,) for every frame.

    Args:
        snap: final keyframe state.  feature_K: (4,) feature-resolution intrinsics.
        timestamps, frame_ids: (F,) of every input frame, in order.
        kf_frames: input-frame index -> the keyframe's correspondence data.
        frames: iterator of ``(frame_id, image at processing resolution)`` over
            all frames again (None: interpolation only).
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
    if frames is not None and options.refine and snap.n >= 2:
        row_of = {int(f): r for r, f in enumerate(frame_ids)}
        batch: list[tuple[int, FrameData]] = []
        for fid, image in frames:
            r = row_of.get(int(fid))
            if r is None or is_kf[r]:
                if on_progress:
                    on_progress(1)
                continue
            batch.append((r, source.prepare(int(fid), image)))
            if len(batch) >= options.chunk:
                _refine_chunk(batch, snap, feature_K, prv, nxt, kf_frames, poses, tracked, source, options, lm)
                if on_progress:
                    on_progress(len(batch))
                batch = []
        if batch:
            _refine_chunk(batch, snap, feature_K, prv, nxt, kf_frames, poses, tracked, source, options, lm)
            if on_progress:
                on_progress(len(batch))
    T_wc = pp.SE3(poses.double()).Inv().matrix().numpy()
    return T_wc, tracked


def _refine_chunk(batch: list[tuple[int, FrameData]], snap: Snapshot, K: torch.Tensor, prv: np.ndarray,
                  nxt: np.ndarray, kf_frames: dict[int, FrameData], poses: torch.Tensor, tracked: np.ndarray,
                  source: CorrespondenceSource, options: FillerOptions, lm: LMOptions) -> None:
    """Pose-only BA of a chunk of non-keyframes against their neighbouring keyframes."""
    rows = [r for r, _ in batch]
    anchors = sorted({int(prv[r]) for r in rows} | {int(nxt[r]) for r in rows})
    a_local = {a: i for i, a in enumerate(anchors)}
    na, nb = len(anchors), len(batch)
    dev, dt = snap.disps.device, snap.disps.dtype
    G = torch.cat([snap.poses[anchors], poses[rows].to(dev, dt)], 0)
    h, w = snap.disps.shape[-2:]
    disps = torch.cat([snap.disps[anchors], torch.ones(nb, h, w, device=dev, dtype=dt)], 0)
    ii, jj, fi, fj = [], [], [], []
    for b, (r, fd) in enumerate(batch):
        for a in {int(prv[r]), int(nxt[r])}:
            ii.append(a_local[a])
            jj.append(na + b)
            fi.append(kf_frames[int(snap.frame_index[a])])
            fj.append(fd)
    ii_t, jj_t = torch.tensor(ii, device=dev), torch.tensor(jj, device=dev)
    coords = project_edges(pp.SE3(G), disps, K, ii_t, jj_t).coords
    upd = source.update(fi, fj, coords)
    fixed = torch.zeros(na + nb, dtype=torch.bool, device=dev)
    fixed[:na] = True
    ba = DenseBA(ii_t, jj_t, upd.target.to(dev, dt), upd.weight.to(dev, dt), na + nb, fixed=fixed,
                 options=LMOptions(**{**vars(lm), "iters": options.iters}), optimize_disps=False)
    res = ba.run(pp.SE3(G), disps, K)
    valid = torch.zeros(na + nb, device=dev).index_add_(0, jj_t, (upd.weight[..., 0] > 0.5).float().mean((1, 2)).to(dev))
    cnt = torch.zeros(na + nb, device=dev).index_add_(0, jj_t, torch.ones(len(jj), device=dev))
    share = (valid / cnt.clamp(min=1))[na:]
    for b, r in enumerate(rows):
        ok = bool(share[b] >= options.min_valid)
        tracked[r] = ok
        if ok:
            poses[r] = res.poses.tensor()[na + b].to(poses.dtype)
