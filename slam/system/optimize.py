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
from slam.geometry.projective import project_edges
from slam.system.depth_prior import PriorTerm
from slam.system.graph import Edges, FrameGraph
from slam.system.motion import MotionOptions, pool_per_frame, residual_motion
from slam.system.store import KeyframeStore


def _gather(store: KeyframeStore, edges: Edges
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, pp.LieTensor, torch.Tensor, torch.Tensor]:
    """The keyframes ``edges`` touch, as a local problem: ``(active (A,) store slots, ii, jj (E,) local
    indices on the depths' device, poses (A, 7), disps (A, h, w), K (4,))`` (copies, read under the
    store's lock)."""
    active = torch.unique(torch.cat([edges.ii, edges.jj]))
    local = torch.full((int(active.max()) + 1,), -1, dtype=torch.long)
    local[active] = torch.arange(active.numel())
    with store.lock:
        poses = pp.SE3(store.poses[active].clone())
        disps = store.disps[active].clone()
        K = store.feature_intrinsics()
    dev = disps.device
    return active, local[edges.ii].to(dev), local[edges.jj].to(dev), poses, disps, K


def _motion_weighted(store: KeyframeStore, active: torch.Tensor, ii: torch.Tensor, weight: torch.Tensor,
                     motion: MotionOptions) -> torch.Tensor:
    """``weight`` (E, h, w, 2) times ``1 - m`` of each edge's source keyframe when ``motion`` weights."""
    if not (motion.weighting and motion.mode != "off"):
        return weight
    with store.lock:
        m_act = store.motion[active].to(weight.device, weight.dtype)
    return weight * (1.0 - m_act[ii])[..., None]


def edges_cost(store: KeyframeStore, edges: Edges, *, options: LMOptions,
               motion: MotionOptions | None = None) -> float:
    """The BA cost (``options``' robust loss) of the store's current estimate over ``edges``:
    the edges' weights, times ``1 - m`` (the source keyframes' stored motion maps) when ``motion``
    weights, as :func:`optimize_store` weighs them; no depth-prior term.  Nothing is changed; inf
    without edges."""
    if len(edges) == 0:
        return float("inf")
    motion = motion or MotionOptions(weighting=False, mode="off")
    active, ii, jj, poses, disps, K = _gather(store, edges)
    weight = _motion_weighted(store, active, ii, edges.weight.to(disps.device), motion)
    return DenseBA(ii, jj, edges.target.to(disps.device), weight, active.numel(), options=options).cost(poses, disps, K)


def optimize_store(store: KeyframeStore, edges: Edges, *, fixed_below: int, options: LMOptions,
                   optimize_focal: bool = False, motion: MotionOptions | None = None,
                   prior: PriorTerm | None = None, optimize_disps: bool = True) -> BAResult | None:
    """Run dense BA on the keyframes touched by ``edges`` and write the result back.

    Args:
        store: the keyframe store (read and written under its lock).
        edges: edges over store slots, with targets and weights.
        fixed_below: slots ``< fixed_below`` are held constant; if no active
            slot is fixed, the oldest active one is (gauge).
        options: solver options.
        optimize_focal: estimate the shared focal length too.
        motion: motion-map options (:mod:`slam.system.motion`): the store's
            maps of the edges' source keyframes scale the weights by
            ``1 - m``; maps are updated from the source's motion output
            (before BA) or from the BA residuals (after).  None: off.
        prior: the monocular depth prior (:mod:`slam.system.depth_prior`):
            the store's raw prior maps of the active keyframes, aligned to
            their current depths, enter BA with the Hessian-based weight.
            Ignored for pose-only problems.
        optimize_disps: False for pose-only refinement (depths held).
    Returns:
        The BA result in local indices, or None when there is nothing to do.
    """
    if len(edges) == 0:
        return None
    motion = motion or MotionOptions(weighting=False, mode="off")
    active, ii_d, jj_d, poses, disps, K = _gather(store, edges)
    fixed = active < fixed_below
    if not fixed.any():
        fixed[0] = True
    dev = disps.device
    target, weight = edges.target.to(dev), edges.weight.to(dev)
    has_source_motion = edges.motion is not None
    evidence = weight[..., 0] >= motion.min_weight
    # pose-only problems (tracking a new keyframe) see only its few edges: they do not
    # overwrite maps pooled over all of a keyframe's outgoing edges
    if optimize_disps and motion.uses_source(has_source_motion) and has_source_motion:
        m, has = pool_per_frame(edges.motion.to(dev, weight.dtype), evidence, ii_d, active.numel(), motion.dilate)
        store.write(active[has.cpu()], motion=m[has])
    ba_weight = _motion_weighted(store, active, ii_d, weight, motion)
    disp_prior, prior_weight = None, None
    if prior is not None and optimize_disps and store.prior_disp is not None:
        with store.lock:
            raw, pconf = store.prior_disp[active].to(dev), store.prior_conf[active].to(dev)
            geo_conf = store.confidence[active].to(dev)
        disp_prior = prior.aligned(raw, pconf, disps, geo_conf)
        prior_weight = prior.weight_rule(pconf, disp_prior)
    ba = DenseBA(ii_d, jj_d, target, ba_weight, active.numel(), fixed=fixed.to(dev), optimize_focal=optimize_focal,
                 disp_prior=disp_prior, prior_weight=prior_weight, options=options, optimize_disps=optimize_disps)
    res = ba.run(poses, disps, K)
    # per-pixel confidence of each source keyframe: its mean weight over its outgoing edges
    w = weight[..., 0]
    conf = torch.zeros_like(disps).index_add_(0, ii_d, w)
    cnt = torch.zeros(active.numel(), device=dev).index_add_(0, ii_d, torch.ones(len(edges), device=dev))
    src = cnt > 0
    conf = conf / cnt.clamp(min=1)[:, None, None]
    free = ~fixed.to(dev)
    geo_motion = None
    if optimize_disps and motion.uses_geometry(has_source_motion):
        pr = project_edges(res.poses, res.disps, res.intrinsics, ii_d, jj_d, min_depth_ratio=options.min_depth_ratio)
        ok = evidence & pr.valid
        prob = residual_motion((target - pr.coords).norm(dim=-1), ok, motion)
        m, has = pool_per_frame(prob, ok, ii_d, active.numel(), motion.dilate)
        geo_motion = (active[has.cpu()], m[has])
    with store.lock:
        store.write(active[free.cpu()], poses=res.poses.tensor()[free])
        if optimize_disps:
            store.write(active[src.cpu()], disps=res.disps[src], confidence=conf[src])
        if geo_motion is not None:
            store.write(geo_motion[0], motion=geo_motion[1])
        if optimize_focal:
            store.focal_std, store.focal_held = res.focal_std, res.focal_held
            if not res.focal_held:
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
