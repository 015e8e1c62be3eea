"""The unrolled forward passes of the training modes, each returning a loss and metrics.

All three run the network on a :class:`~slam.train.data.Batch` (F frames,
E edges, feature resolution ``h x w``) for ``iters`` iterations of

    correlation lookup at coords -> CorrNet.step -> targets / weights -> ...

and weight the loss of iteration ``k`` (0-based, of K) by ``gamma^(K - 1 - k)``.
Coordinates are detached between iterations (the gradient of an iteration
flows through its own update and, for the supervised mode, its own BA; the
ConvGRU hidden state carries gradients across iterations).

* :func:`supervised_loss` (a): DROID-SLAM style, with the differentiable BA
  :func:`slam.ba.dense_ba.ba_steps` after every update; geodesic pose loss,
  induced-flow loss, residual loss, direct target loss, confidence NLL,
  motion cross-entropy, full-resolution (upsampled) flow loss.
* :func:`flow_loss`: supervised flow only (no BA), RAFT style; the supervised
  mode's warm-up (``flow_warmup``).
* :func:`selfsup_loss` (b): no labels, no BA; the update operator refines a
  flow field from zero; SSIM + L1 reconstruction of frame i from frame j
  warped through the upsampled flow, forward-backward cycle consistency,
  edge-aware smoothness, and the Gaussian/uniform mixture NLL of the cycle
  error that trains the confidence head.
* :func:`ba_finetune_loss` (c): the network with gradients, the BA without
  (Levenberg-Marquardt on detached targets); the optimised poses / depths
  (run to convergence, or given, e.g. a reconstruction of the video) are
  constants whose reprojection supervises every iteration's targets and
  weights through the mixture NLL.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import pypose as pp
import torch
import torch.nn.functional as F

from slam.ba.dense_ba import DenseBA, LMOptions, ba_steps
from slam.corr.base import identity_coords
from slam.geometry.projective import project_edges
from slam.net.model import CorrNet
from slam.train.data import Batch
from slam.train.losses import (
    geodesic_loss,
    masked_mean,
    mixture_nll,
    pair_index,
    photometric_error,
    smoothness,
    warp,
)


@dataclass
class UnrollOptions:
    """Tunables of the unrolled passes (mirrored in ``configs/train.yaml``, section ``loss``)."""

    iters: int = 6               #: update iterations K
    gamma: float = 0.9           #: iteration k weighted by gamma^(K - 1 - k)
    ba_iters: int = 2            #: Gauss-Newton steps after every update (supervised) / LM steps (ba mode)
    ba_lambda: float = 1e-4      #: BA damping relative to the diagonal
    ba_eps_pose: float = 0.1     #: absolute damping of the pose block (stabilises early, wild targets)
    ba_min_disp: float = 1e-3    #: inverse depths clamped to at least this (normalised scene: median 1)
    pose_init: str = "copy"      #: non-gauge poses start as: copy (of the last gauge frame) | noisy (GT + noise)
    pose_noise: float = 0.05     #: noisy init: translation std (scene units) and rotation std (rad)
    w_geo: float = 10.0          #: geodesic loss on the edges' relative poses
    w_flow: float = 0.05         #: induced flow of the BA result vs ground truth (static pixels)
    w_res: float = 0.01          #: residual |target - reprojection| after BA
    w_target: float = 0.2        #: direct |target - ground truth| (all visible pixels, movers included)
    w_conf: float = 0.02         #: mixture NLL of the target error training the confidence (supervised)
    w_motion: float = 0.05       #: binary cross-entropy of the motion logit vs the dynamic masks
    w_up: float = 0.02           #: full-resolution (convex-upsampled) flow vs ground truth, last iteration
    flow_warmup: float = 0.0     #: supervised mode: share of the schedule trained by :func:`flow_loss` (no BA) first
    conf_sigma: float = 0.5      #: inlier std of the mixture (feature px)
    conf_range: float = 32.0     #: width of the uniform outlier density (feature px)
    w_photo: float = 1.0         #: selfsup: SSIM + L1 reconstruction
    w_cycle: float = 0.05        #: selfsup: forward-backward cycle error (feature px, Charbonnier)
    w_smooth: float = 0.05       #: selfsup: edge-aware smoothness of the flow (feature px)
    w_selfconf: float = 0.05     #: selfsup: mixture NLL of the cycle error training the confidence
    occ_alpha: float = 0.01      #: selfsup occlusion test |f + b|^2 < occ_alpha (|f|^2 + |b|^2) + occ_beta
    occ_beta: float = 0.5        #:   (image px^2)
    occ_floor: float = 0.1       #: selfsup: photometric / cycle weight of pixels failing that test (a signal early on)
    ssim_alpha: float = 0.85     #: photometric error = a (1 - SSIM) / 2 + (1 - a) L1
    ba_converge_iters: int = 15  #: ba mode: LM iterations of the final, converged BA
    w_ba: float = 1.0            #: ba mode: weight of the mixture NLL against the BA reprojection

    @classmethod
    def from_config(cls, cfg: Any) -> UnrollOptions:
        """From a mapping (e.g. the ``loss`` node); unknown keys raise ``ValueError``."""
        d = dict(cfg)
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown loss options: {', '.join(bad)}")
        return cls(**d)


@dataclass
class Encoded:
    """Per-batch network inputs: correlation block, initial hidden states and context per edge."""

    corr: Any
    net: torch.Tensor  #: (E, hidden, h, w)
    inp: torch.Tensor  #: (E, context, h, w)


def encode(model: CorrNet, batch: Batch) -> Encoded:
    """Encode all frames once and build the all-pairs correlation of the batch's edges."""
    fmap, net0, inp0 = model.encode(batch.images)
    return Encoded(model.correlation(fmap, batch.ii, batch.jj), net0[batch.ii], inp0[batch.ii])


def _weights(k: int, K: int, gamma: float) -> float:
    return gamma ** (K - 1 - k)


def _lm(opts: UnrollOptions, iters: int) -> LMOptions:
    return LMOptions(iters=iters, lambda_init=opts.ba_lambda, eps_pose=opts.ba_eps_pose, min_disp=opts.ba_min_disp)


def initial_estimate(batch: Batch, poses_ref: torch.Tensor | None, opts: UnrollOptions,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting poses (F, 7) and inverse depths (F, h, w).

    With reference poses (ground truth or a given solution): the gauge frames
    take them, the others start at the last gauge frame of their clip
    (``copy``) or at the reference plus noise (``noisy``).  Without: identity
    poses.  Inverse depths start at 1 (the normalised median).
    """
    F_ = batch.images.shape[0]
    h, w = batch.feature_size
    dev = batch.images.device
    disps = torch.ones(F_, h, w, device=dev)
    if poses_ref is None:
        return pp.identity_SE3(F_, device=dev).tensor(), disps
    poses = poses_ref.clone()
    if opts.pose_init == "noisy":
        noise = torch.randn(F_, 6, generator=generator).to(dev) * opts.pose_noise
        from slam.geometry.lie import compose, se3_exp

        poses = torch.where(batch.fixed[:, None], poses, compose(se3_exp(noise), poses))
    elif opts.pose_init == "copy":
        idx = torch.arange(F_, device=dev)
        last_fixed = torch.zeros(F_, dtype=torch.long, device=dev)
        for c in torch.unique(batch.clip):
            m = batch.clip == c
            fx = idx[m & batch.fixed]
            last_fixed[m] = fx.max() if fx.numel() else idx[m].min()
        poses = torch.where(batch.fixed[:, None], poses, poses[last_fixed])
    else:
        raise ValueError(f"unknown pose_init {opts.pose_init!r}; expected copy or noisy")
    return poses, disps


def _eta_full(model: CorrNet, net: torch.Tensor, ii: torch.Tensor, n_frames: int, hw: tuple[int, int]) -> torch.Tensor:
    """(F, h, w) depth damping from the aggregate head (0 for frames without outgoing edges)."""
    agg = model.aggregate(net, ii)
    out = torch.zeros(n_frames, *hw, dtype=agg.eta.dtype, device=agg.eta.device)
    return out.index_copy(0, agg.frames, agg.eta)


def supervised_loss(model: CorrNet, batch: Batch, opts: UnrollOptions,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Mode (a): unrolled update + differentiable BA against ground truth.

    Returns:
        ``(loss, metrics)``; metrics of the last iteration: the loss terms,
        ``epe`` (target end-point error, image px), ``epe_ba`` (induced flow),
        ``rot_deg`` / ``trans`` (relative pose errors).
    """
    if not batch.labelled:
        raise ValueError("supervised training needs labelled clips")
    ii, jj, K = batch.ii, batch.jj, batch.K
    F_ = batch.images.shape[0]
    h, w = batch.feature_size
    enc = encode(model, batch)
    net = enc.net
    poses, disps = initial_estimate(batch, batch.poses, opts, generator)
    lm = _lm(opts, opts.ba_iters)
    coords = project_edges(pp.SE3(poses), disps, K, ii, jj).coords
    static = (batch.dynamic[ii] < 0.5).float()
    tvalid = (batch.target_valid > 0.5).float()
    moving = (batch.dynamic[ii] >= 0.5).float()
    total = torch.zeros((), device=batch.images.device)
    terms: dict[str, torch.Tensor] = {}
    for k in range(opts.iters):
        poses, disps, coords = poses.detach(), disps.detach(), coords.detach()
        out = model.step(net, enc.inp, enc.corr, coords)
        net = out.net
        eta = _eta_full(model, net, ii, F_, (h, w))
        P, disps = ba_steps(pp.SE3(poses), disps, K, ii, jj, out.target, out.weight, batch.fixed,
                            iters=opts.ba_iters, eta=eta, lam=opts.ba_lambda, options=lm)
        poses = P.tensor()
        pr = project_edges(P, disps, K, ii, jj)
        coords = pr.coords
        geo, rot, tr = geodesic_loss(poses, batch.poses, ii, jj)
        fvalid = tvalid * static * pr.valid
        flow = masked_mean((pr.coords - batch.target).norm(dim=-1), fvalid)
        res = masked_mean((out.target - pr.coords).norm(dim=-1), pr.valid)
        t = {"geo": geo, "flow": flow, "res": res,
             **_correspondence_terms(model, out, net, batch, tvalid, moving, opts, k == opts.iters - 1)}
        it_loss = (opts.w_geo * geo + opts.w_flow * flow + opts.w_res * res + opts.w_target * t["target"]
                   + opts.w_conf * t["conf"] + opts.w_motion * t["motion"] + opts.w_up * t.get("up", 0.0))
        total = total + _weights(k, opts.iters, opts.gamma) * it_loss
        terms = t
    metrics = {k: float(v.detach()) for k, v in terms.items()}
    metrics["loss"] = float(total.detach())
    metrics["epe"] = float(masked_mean((out.target - batch.target).detach().norm(dim=-1), tvalid)) * model.stride
    metrics["epe_ba"] = float(masked_mean((coords - batch.target).detach().norm(dim=-1), tvalid * static)) * model.stride
    metrics["rot_deg"] = float(torch.rad2deg(rot).mean())
    metrics["trans"] = float(tr.mean())
    return total, metrics


def _correspondence_terms(model: CorrNet, out, net: torch.Tensor, batch: Batch, tvalid: torch.Tensor,
                          moving: torch.Tensor, opts: UnrollOptions, last: bool) -> dict[str, torch.Tensor]:
    """Per-iteration terms on the network's own outputs: target error against the exact
    flow (feature px), confidence mixture NLL, motion cross-entropy and, on the ``last``
    iteration with ``w_up > 0``, the convex-upsampled full-resolution flow error."""
    terr = out.target - batch.target
    err_eff = torch.where(tvalid[..., None] > 0, terr, torch.full_like(terr, opts.conf_range))
    t = {"target": masked_mean(terr.norm(dim=-1), tvalid),
         "conf": mixture_nll(err_eff.detach(), out.weight, opts.conf_sigma, opts.conf_range).mean(),
         "motion": F.binary_cross_entropy_with_logits(out.motion_logit, moving)}
    if last and opts.w_up > 0:
        up = model.upsample_flow(net, out.target)
        up_err = (up.permute(0, 2, 3, 1) - batch.flow).abs().sum(-1) / model.stride
        t["up"] = masked_mean(up_err, batch.flow_valid)
    return t


def flow_iterations(model: CorrNet, batch: Batch, iters: int, enc: Encoded | None = None):
    """Run the update operator as a pure flow estimator (no BA): coords start at
    identity and become each iteration's target.  Yields ``(k, StepOutput)``."""
    enc = enc or encode(model, batch)
    h, w = batch.feature_size
    E = batch.ii.numel()
    coords = identity_coords(E, h, w).to(batch.images.device)
    net = enc.net
    for k in range(iters):
        out = model.step(net, enc.inp, enc.corr, coords.detach())
        net, coords = out.net, out.target
        yield k, out


def flow_loss(model: CorrNet, batch: Batch, opts: UnrollOptions) -> tuple[torch.Tensor, dict[str, float]]:
    """Supervised flow only (RAFT style, no BA): the update operator refines a flow field from
    zero against the exact flow.  Terms: target (``w_target``), confidence NLL (``w_conf``),
    motion cross-entropy (``w_motion``), full-resolution upsampled flow (``w_up``, last iteration).

    Cheaper than :func:`supervised_loss` and a faster start from random weights: the
    supervised mode spends its first ``flow_warmup`` share of the schedule here.
    """
    if not batch.labelled:
        raise ValueError("flow supervision needs labelled clips")
    tvalid = (batch.target_valid > 0.5).float()
    moving = (batch.dynamic[batch.ii] >= 0.5).float()
    total = torch.zeros((), device=batch.images.device)
    terms: dict[str, torch.Tensor] = {}
    for k, out in flow_iterations(model, batch, opts.iters):
        t = _correspondence_terms(model, out, out.net, batch, tvalid, moving, opts, k == opts.iters - 1)
        # the target term carries the whole flow signal here: weight it like the BA terms together
        it_loss = t["target"] + opts.w_conf * t["conf"] + opts.w_motion * t["motion"] + opts.w_up * t.get("up", 0.0)
        total = total + _weights(k, opts.iters, opts.gamma) * it_loss
        terms = t
    metrics = {k: float(v.detach()) for k, v in terms.items()}
    metrics["loss"] = float(total.detach())
    metrics["epe"] = float(masked_mean((out.target - batch.target).detach().norm(dim=-1), tvalid)) * model.stride
    return total, metrics


def selfsup_loss(model: CorrNet, batch: Batch, opts: UnrollOptions) -> tuple[torch.Tensor, dict[str, float]]:
    """Mode (b): photometric + cycle consistency + smoothness + confidence NLL, no labels.

    Every edge needs its reverse edge in the batch (the clip graphs and the
    adapt pairs have both directions).
    """
    ii, jj = batch.ii, batch.jj
    rev = pair_index(ii, jj)
    if (rev < 0).any():
        raise ValueError("selfsup needs both directions of every edge")
    img = batch.images / 255.0
    Ii, Ij = img[ii], img[jj]
    h, w = batch.feature_size
    grid = identity_coords(1, h, w).to(img.device)
    total = torch.zeros((), device=img.device)
    terms: dict[str, torch.Tensor] = {}
    for k, out in flow_iterations(model, batch, opts.iters):
        up = model.upsample_flow(out.net, out.target)                       # (E, 2, H, W) image px
        warped, inside = warp(Ij, up)
        back, _ = warp(up[rev], up)                                          # flow j->i at x + f_ij
        e = up + back
        with torch.no_grad():
            mag = (up ** 2).sum(1) + (back ** 2).sum(1)
            vis = ((e ** 2).sum(1) < opts.occ_alpha * mag + opts.occ_beta) & inside
        pw = inside.float() * (vis.float() * (1.0 - opts.occ_floor) + opts.occ_floor)
        photo = masked_mean(photometric_error(Ii, warped, opts.ssim_alpha), pw)
        cycle = masked_mean(torch.sqrt((e / model.stride) ** 2 + 1e-6).sum(1), pw)
        smooth = smoothness(up / model.stride, Ii)
        flow_f = (out.target - grid).permute(0, 3, 1, 2)                     # (E, 2, h, w) feature px
        back_f, inside_f = warp(flow_f[rev], flow_f)
        err = (flow_f + back_f).permute(0, 2, 3, 1).detach()
        err = torch.where(inside_f[..., None], err, torch.full_like(err, opts.conf_range))
        conf = mixture_nll(err, out.weight, opts.conf_sigma, opts.conf_range).mean()
        it_loss = opts.w_photo * photo + opts.w_cycle * cycle + opts.w_smooth * smooth + opts.w_selfconf * conf
        total = total + _weights(k, opts.iters, opts.gamma) * it_loss
        terms = {"photo": photo, "cycle": cycle, "smooth": smooth, "conf": conf}
    metrics = {k: float(v.detach()) for k, v in terms.items()}
    metrics["loss"] = float(total.detach())
    if batch.labelled:
        tvalid = (batch.target_valid > 0.5).float()
        metrics["epe"] = float(masked_mean((out.target - batch.target).detach().norm(dim=-1), tvalid)) * model.stride
    return total, metrics


def converge_ba(batch: Batch, target: torch.Tensor, weight: torch.Tensor, poses: torch.Tensor,
                disps: torch.Tensor, fixed: torch.Tensor, opts: UnrollOptions,
                iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg-Marquardt BA without gradients; returns ``(poses (F, 7), disps (F, h, w))``."""
    with torch.no_grad():
        ba = DenseBA(batch.ii, batch.jj, target.detach(), weight.detach(), poses.shape[0], fixed=fixed,
                     options=_lm(opts, iters))
        res = ba.run(pp.SE3(poses.detach()), disps.detach(), batch.K)
    return res.poses.tensor(), res.disps


def ba_finetune_loss(model: CorrNet, batch: Batch, opts: UnrollOptions,
                     solution: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mode (c): fit the network's targets to a converged BA solution held constant.

    Args:
        solution: ``(poses (F, 7) world-to-camera [t, q], disps (F, h, w))`` in
            the batch's normalised scale, e.g. a classical reconstruction of a
            video (then the gauge frames start from it).  None: the network's
            own estimate - identity start with the first frame of each clip
            fixed, LM after every update, then LM to convergence.
    Returns:
        ``(loss, metrics)`` with ``ba_cost`` (mean weighted squared residual of
        the converged BA) and, with labels, ``epe``.
    """
    ii, jj, K = batch.ii, batch.jj, batch.K
    enc = encode(model, batch)
    if solution is not None:
        fixed = batch.fixed
        poses, disps = initial_estimate(batch, solution[0], opts)
    else:
        first = torch.ones_like(batch.fixed)
        first[1:] = batch.clip[1:] != batch.clip[:-1]
        fixed = first
        poses, disps = initial_estimate(batch, None, opts)
    coords = project_edges(pp.SE3(poses), disps, K, ii, jj).coords
    net = enc.net
    outs = []
    for _ in range(opts.iters):
        out = model.step(net, enc.inp, enc.corr, coords.detach())
        net = out.net
        outs.append(out)
        poses, disps = converge_ba(batch, out.target, out.weight, poses, disps, fixed, opts, opts.ba_iters)
        coords = project_edges(pp.SE3(poses), disps, K, ii, jj).coords
    if solution is None:
        poses, disps = converge_ba(batch, outs[-1].target, outs[-1].weight, poses, disps, fixed, opts,
                                   opts.ba_converge_iters)
    else:
        poses, disps = solution
    with torch.no_grad():
        pr = project_edges(pp.SE3(poses), disps, K, ii, jj)
        ref = pr.coords
        valid = pr.valid.float()
    total = torch.zeros((), device=batch.images.device)
    for k, out in enumerate(outs):
        nll = mixture_nll(out.target - ref, out.weight, opts.conf_sigma, opts.conf_range).sum(-1)
        total = total + _weights(k, opts.iters, opts.gamma) * opts.w_ba * masked_mean(nll, valid)
    last = outs[-1]
    r = (last.target - ref).detach()
    metrics = {"loss": float(total.detach()),
               "ba_res": float(masked_mean(r.norm(dim=-1), valid)) * model.stride,
               "weight": float(last.weight.detach().mean())}
    if batch.labelled:
        tvalid = (batch.target_valid > 0.5).float()
        metrics["epe"] = float(masked_mean((last.target - batch.target).detach().norm(dim=-1), tvalid)) * model.stride
    return total, metrics
