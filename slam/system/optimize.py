"""Bundle adjustment of (part of) the keyframe store over a set of edges.

One function serves the frontend's local BA, the backend's global BA and the
final refinement: the edges' endpoints are the active keyframes, the slots
below ``fixed_below`` are held (gauge, and the frozen past of a sliding
window), and the result is written back into the store.
"""
from __future__ import annotations

import pypose as pp
import torch

from slam.ba.dense_ba import BAResult, DenseBA, LMOptions
from slam.system.graph import Edges, FrameGraph
from slam.system.store import KeyframeStore


def edge_weights(edges: Edges, motion_weighting: bool) -> torch.Tensor:
    """(E, h, w, 2) BA weights: the confidence, times ``1 - motion probability`` if enabled."""
    w = edges.weight
    if motion_weighting and edges.motion is not None:
        w = w * (1.0 - edges.motion.clamp(0, 1))[..., None]
    return w


def optimize_store(store: KeyframeStore, edges: Edges, *, fixed_below: int, options: LMOptions,
                   optimize_focal: bool = False, motion_weighting: bool = True,
                   disp_prior: torch.Tensor | None = None, prior_weight: float = 0.0,
                   optimize_disps: bool = True) -> BAResult | None:
    """Run dense BA on the keyframes touched by ``edges`` and write the result back.

    Args:
        store: the keyframe store (read and written under its lock).
        edges: edges over store slots, with targets and weights.
        fixed_below: slots ``< fixed_below`` are held constant; if no active
            slot is fixed, the oldest active one is (gauge).
        options: solver options.
        optimize_focal: estimate the shared focal length too.
        motion_weighting: multiply weights by ``1 - motion probability``.
        optimize_disps: False for pose-only refinement (depths held).
    Returns:
        The BA result in local indices, or None when there is nothing to do.
    """
    if len(edges) == 0:
        return None
    active = torch.unique(torch.cat([edges.ii, edges.jj]))
    local = torch.full((int(active.max()) + 1,), -1, dtype=torch.long)
    local[active] = torch.arange(active.numel())
    ii, jj = local[edges.ii], local[edges.jj]
    fixed = active < fixed_below
    if not fixed.any():
        fixed[0] = True
    with store.lock:
        poses = pp.SE3(store.poses[active].clone())
        disps = store.disps[active].clone()
        K = store.feature_intrinsics()
    dev = disps.device
    ba = DenseBA(ii.to(dev), jj.to(dev), edges.target.to(dev), edge_weights(edges, motion_weighting).to(dev),
                 active.numel(), fixed=fixed.to(dev), optimize_focal=optimize_focal,
                 disp_prior=None if disp_prior is None else disp_prior.to(dev),
                 prior_weight=prior_weight if disp_prior is not None else None, options=options,
                 optimize_disps=optimize_disps)
    res = ba.run(poses, disps, K)
    # per-pixel confidence of each source keyframe: its mean weight over its outgoing edges
    w = edges.weight[..., 0].to(dev)
    conf = torch.zeros_like(disps).index_add_(0, ii.to(dev), w)
    cnt = torch.zeros(active.numel(), device=dev).index_add_(0, ii.to(dev), torch.ones(len(edges), device=dev))
    src = cnt > 0
    conf = conf / cnt.clamp(min=1)[:, None, None]
    free = ~fixed.to(dev)
    with store.lock:
        store.write(active[free.cpu()], poses=res.poses.tensor()[free])
        if optimize_disps:
            store.write(active[src.cpu()], disps=res.disps[src], confidence=conf[src])
        if optimize_focal:
            store.set_feature_focal(res.intrinsics)
    return res


def solve_graph(store: KeyframeStore, graph: FrameGraph, mask: torch.Tensor | None = None, **kwargs) -> BAResult | None:
    """BA over the graph's edges selected by ``mask`` (all if None), alternated
    with the correspondence source's updates when it is iterative: ``rounds``
    times (the source's ``rounds``, 1 for one-shot sources) refresh the edges
    at the current reprojection, then run :func:`optimize_store` with
    ``kwargs``.  Returns the last BA result."""
    rounds = int(getattr(graph.source, "rounds", 1)) if graph.source.iterative else 1
    res = None
    for r in range(max(1, rounds)):
        if r > 0:
            graph.refresh(mask)
        edges = graph.edges if mask is None else graph.select(mask)
        res = optimize_store(store, edges, **kwargs)
    return res
