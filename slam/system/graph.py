"""The frame graph: which keyframes constrain which, and the correspondences
(targets, weights, recurrent state) of each edge.

Edges are directed ``(i, j)`` pairs of keyframe *slots* of the store: the
pixels of i are matched in j.  Edges come in both directions.  The graph
also chooses edges: temporal neighbours, and proximity edges between frames
whose flow-based distance is small, thinned by non-maximum suppression.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pypose as pp
import torch

from slam.corr.base import CorrespondenceSource
from slam.geometry.projective import project_edges
from slam.system.store import KeyframeStore


@dataclass
class Edges:
    """A set of E edges and their latest correspondences."""

    ii: torch.Tensor                    # (E,) long source slots
    jj: torch.Tensor                    # (E,) long target slots
    target: torch.Tensor | None = None  # (E, h, w, 2)
    weight: torch.Tensor | None = None  # (E, h, w, 2)
    motion: torch.Tensor | None = None  # (E, h, w)
    state: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ii.numel())


def frame_distance(poses: torch.Tensor, disps: torch.Tensor, K: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor,
                   subsample: int = 2) -> torch.Tensor:
    """Flow-based distance between keyframes: mean magnitude (feature pixels) of
    the flow induced by the current geometry, averaged over both directions.

    Args:
        poses: (N, 7) world-to-camera; disps: (N, h, w); K: (4,) feature intrinsics.
        ii, jj: (E,) pairs.  subsample: pixel step used (speed).
    Returns:
        (E,) distances; ``inf`` where fewer than half the points are valid.
    """
    d = disps[:, ::subsample, ::subsample]
    Ks = K.clone()
    Ks[:2] = K[:2] / subsample
    Ks[2:] = (K[2:] + 0.5) / subsample - 0.5
    G = pp.SE3(poses)
    out = []
    for a, b in ((ii, jj), (jj, ii)):
        pr = project_edges(G, d, Ks, a, b)
        h, w = d.shape[-2:]
        v, u = torch.meshgrid(torch.arange(h, dtype=d.dtype), torch.arange(w, dtype=d.dtype), indexing="ij")
        grid = torch.stack([u, v], -1).to(d.device)
        mag = (pr.coords - grid).norm(dim=-1) * subsample
        valid = pr.valid.float()
        m = (mag * valid).sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)
        m = torch.where(valid.mean((1, 2)) > 0.5, m, torch.full_like(m, float("inf")))
        out.append(m)
    return 0.5 * (out[0] + out[1])


class FrameGraph:
    """Edges over the keyframes of a store, with their correspondences."""

    def __init__(self, store: KeyframeStore, source: CorrespondenceSource) -> None:
        self.store, self.source = store, source
        self.edges = Edges(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))

    # ------------------------------------------------------------- selection
    @staticmethod
    def temporal_pairs(t0: int, t1: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Both directions of every pair in ``[t0, t1)`` at most ``radius`` apart."""
        idx = torch.arange(t0, t1)
        ii, jj = torch.meshgrid(idx, idx, indexing="ij")
        keep = (ii != jj) & ((ii - jj).abs() <= radius)
        return ii[keep], jj[keep]

    def proximity_pairs(self, targets: torch.Tensor, candidates_below: int, thresh: float, nms: int,
                        max_edges: int, exclude_radius: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Proximity edges from each slot in ``targets`` to older slots (< candidates_below)
        whose frame distance is below ``thresh``, closest first, suppressing pairs
        within ``nms`` slots of an already chosen pair.  Returns both directions."""
        s = self.store
        with s.lock:
            poses, disps, K = s.poses[: s.n].clone(), s.disps[: s.n].clone(), s.feature_intrinsics()
        ii, jj = torch.meshgrid(targets, torch.arange(candidates_below), indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)
        keep = (ii - jj).abs() > exclude_radius
        ii, jj = ii[keep], jj[keep]
        if ii.numel() == 0:
            return ii, jj
        dist = frame_distance(poses, disps, K, ii, jj)
        order = torch.argsort(dist)
        n_slots = int(max(int(ii.max()), int(jj.max()))) + 1
        suppressed = torch.zeros(n_slots, n_slots, dtype=torch.bool)
        chosen: list[tuple[int, int]] = []
        for e in order.tolist():
            if dist[e] > thresh or len(chosen) >= max_edges:
                break
            a, b = int(ii[e]), int(jj[e])
            if suppressed[a, b]:
                continue
            chosen.append((a, b))
            # suppress this pair's neighbourhood, in both orientations
            suppressed[max(0, a - nms):a + nms + 1, max(0, b - nms):b + nms + 1] = True
            suppressed[max(0, b - nms):b + nms + 1, max(0, a - nms):a + nms + 1] = True
        if not chosen:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        c = torch.tensor(chosen, dtype=torch.long)
        return torch.cat([c[:, 0], c[:, 1]]), torch.cat([c[:, 1], c[:, 0]])

    # ------------------------------------------------------------ management
    def add(self, ii: torch.Tensor, jj: torch.Tensor) -> int:
        """Add edges not yet present (and not self-edges); returns how many were added."""
        if ii.numel() == 0:
            return 0
        have = set(zip(self.edges.ii.tolist(), self.edges.jj.tolist()))
        new = [(a, b) for a, b in zip(ii.tolist(), jj.tolist()) if a != b and (a, b) not in have]
        new = list(dict.fromkeys(new))
        if not new:
            return 0
        t = torch.tensor(new, dtype=torch.long)
        e = self.edges
        upd = self.correspond(t[:, 0], t[:, 1])
        states = [None] * len(new) if upd.state is None else list(upd.state)
        if e.target is None:
            self.edges = Edges(t[:, 0], t[:, 1], upd.target, upd.weight, upd.motion, states)
        else:
            motion = None
            if e.motion is not None and upd.motion is not None:
                motion = torch.cat([e.motion, upd.motion])
            self.edges = Edges(torch.cat([e.ii, t[:, 0]]), torch.cat([e.jj, t[:, 1]]),
                               torch.cat([e.target, upd.target]), torch.cat([e.weight, upd.weight]), motion,
                               e.state + states)
        return len(new)

    def correspond(self, ii: torch.Tensor, jj: torch.Tensor, state: Any = None):
        """Run the correspondence source on edges (slots), initialised from the current reprojection."""
        return self.source.update(*self._reproject(ii, jj), state)

    def _reproject(self, ii: torch.Tensor, jj: torch.Tensor) -> tuple[list, list, torch.Tensor]:
        """The edges' endpoint frames and (E, h, w, 2) reprojection at the store's current estimate."""
        s = self.store
        with s.lock:
            fi = [s.frames[int(a)] for a in ii]
            fj = [s.frames[int(b)] for b in jj]
            G = pp.SE3(s.poses[: s.n].clone())
            disps = s.disps[: s.n].clone()
            K = s.feature_intrinsics()
        return fi, fj, project_edges(G, disps, K, ii.to(disps.device), jj.to(disps.device)).coords

    def refresh(self, mask: torch.Tensor | None = None) -> None:
        """Re-run an iterative (learned) source on the selected edges at the current
        reprojection, continuing from each edge's recurrent state."""
        if not self.source.iterative or len(self.edges) == 0:
            return
        e = self.edges
        sel = torch.nonzero(mask if mask is not None else torch.ones(len(e), dtype=torch.bool))[:, 0]
        if sel.numel() == 0:
            return
        states = [e.state[i] for i in sel.tolist()]
        state = None if any(x is None for x in states) else torch.stack(states)
        upd = self.correspond(e.ii[sel], e.jj[sel], state)
        e.target[sel] = upd.target.to(e.target)
        e.weight[sel] = upd.weight.to(e.weight)
        if e.motion is not None and upd.motion is not None:
            e.motion[sel] = upd.motion.to(e.motion)
        if upd.state is not None:
            for k, i in enumerate(sel.tolist()):
                e.state[i] = upd.state[k]

    def remeasure(self) -> bool:
        """Replace every edge's targets and weights with the source's ``refine``
        measurement at the current reprojection (a one-shot source's final
        refinement, e.g. :meth:`slam.corr.classical.ClassicalFlow.refine`).
        Returns False (nothing changed) when the source does not refine (``refines``)."""
        if not self.source.refines or len(self.edges) == 0:
            return False
        e = self.edges
        upd = self.source.refine(*self._reproject(e.ii, e.jj))
        e.target = upd.target.to(e.target)
        e.weight = upd.weight.to(e.weight)
        return True

    def remove_slot(self, k: int) -> None:
        """Drop the edges touching slot k and renumber later slots (call with the store's removal)."""
        e = self.edges
        keep = (e.ii != k) & (e.jj != k)
        sel = torch.nonzero(keep)[:, 0]
        ii, jj = e.ii[sel], e.jj[sel]
        ii = ii - (ii > k).long()
        jj = jj - (jj > k).long()
        self.edges = Edges(ii, jj, None if e.target is None else e.target[sel],
                           None if e.weight is None else e.weight[sel],
                           None if e.motion is None else e.motion[sel], [e.state[i] for i in sel.tolist()])

    def select(self, mask: torch.Tensor) -> Edges:
        """The edges where ``mask`` (E,) is True."""
        e = self.edges
        sel = torch.nonzero(mask)[:, 0]
        return Edges(e.ii[sel], e.jj[sel], e.target[sel], e.weight[sel],
                     None if e.motion is None else e.motion[sel], [e.state[i] for i in sel.tolist()])
