"""Per-keyframe motion-probability maps: which pixels move independently of the camera.

Each keyframe slot of the store holds a map ``m`` (h, w) in [0, 1] at feature
resolution.  Bundle adjustment multiplies the weights of every edge leaving
keyframe i by ``1 - m_i`` (moving objects then do not pull the poses), and
the trajectory filler does the same for the non-keyframes tracked against i.

Where the map comes from (``MotionOptions.mode``):

* ``source``: the correspondence source's per-edge motion probability (the
  learned network's motion head; ground-truth masks for ``oracle``), pooled
  per frame as the mean over the frame's outgoing edges (as DROID-SLAM /
  MegaSaM pool their per-edge outputs);
* ``geometric``: after each BA, the residual ``r = |target - reprojection|``
  (feature px) of each edge is scored by a two-component mixture, a 2-D
  Gaussian for static pixels, whose standard deviation is estimated robustly
  per edge (``median(r) / 1.1774``, the median of a 2-D Gaussian's radius),
  and a uniform density over ``outlier_area`` for moving ones; the posterior
  of the uniform component is the pixel's motion probability on that edge,
  pooled per frame as above and used from the next BA on (iteratively
  re-weighted BA);
* ``auto`` (default): ``source`` when the source returns motion, else
  ``geometric``;
* ``off``: no map (all zeros).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from slam.data.sequence import InputError

#: median of the radius of a 2-D isotropic Gaussian, in units of its standard deviation
_RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))


@dataclass
class MotionOptions:
    """Tunables (mirrored, with comments, in ``configs/run.yaml`` under ``motion``)."""

    weighting: bool = True          # multiply BA (and filler) weights by 1 - motion probability
    mode: str = "auto"              # auto | source | geometric | off
    inlier_floor: float = 0.25      # smallest static-pixel residual std (feature px)
    outlier_prior: float = 0.1      # prior probability that a pixel moves
    outlier_area: float = 64.0      # area (feature px^2) over which a moving pixel's residual is uniform
    dilate: int = 0                 # grow moving regions of a pooled map by this many feature px (max filter)
    min_weight: float = 0.05        # edge pixels with a weight below this give no evidence
    mask_thresh: float = 0.5        # probability above which a pixel is written as moving (PNG masks)

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "source", "geometric", "off"):
            raise InputError(f"motion.mode must be auto, source, geometric or off, not {self.mode!r}")

    def uses_source(self, source_has_motion: bool) -> bool:
        return self.mode == "source" or (self.mode == "auto" and source_has_motion)

    def uses_geometry(self, source_has_motion: bool) -> bool:
        return self.mode == "geometric" or (self.mode == "auto" and not source_has_motion)


def residual_motion(residual: torch.Tensor, valid: torch.Tensor, opt: MotionOptions) -> torch.Tensor:
    """Per-edge motion probability from reprojection residuals.

    Args:
        residual: (E, h, w) residual norm ``|target - reprojection|`` (feature px).
        valid: (E, h, w) bool, pixels that give evidence (confident, projecting in front).
        opt: the mixture's parameters.
    Returns:
        (E, h, w) posterior probability of the uniform ("moving") component;
        0 where ``valid`` is False.
    """
    E = residual.shape[0]
    r = residual.reshape(E, -1)
    v = valid.reshape(E, -1)
    med = torch.where(v, r, torch.full_like(r, float("nan"))).nanmedian(dim=1).values
    sigma = (med / _RAYLEIGH_MEDIAN).nan_to_num(opt.inlier_floor).clamp(min=opt.inlier_floor)[:, None]
    # log densities: 2-D Gaussian N(r; 0, sigma^2 I) and uniform 1 / area
    log_in = -0.5 * (r / sigma) ** 2 - torch.log(2 * math.pi * sigma ** 2) + math.log(1 - opt.outlier_prior)
    log_out = torch.full_like(r, math.log(opt.outlier_prior / opt.outlier_area))
    post = torch.sigmoid(log_out - log_in)
    return (post * v).reshape_as(residual)


def pool_per_frame(prob: torch.Tensor, valid: torch.Tensor, ii: torch.Tensor, n: int,
                   dilate: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-edge probability over each frame's outgoing edges.

    Args:
        prob: (E, h, w) per-edge motion probability; valid: (E, h, w) bool evidence mask.
        ii: (E,) source frame (0 .. n-1) of each edge.
        n: number of frames.
        dilate: radius (feature px) of a max filter applied to the pooled map
            (0: none); it makes object borders, where block-averaged
            correspondences mix static and moving pixels, count as moving.
    Returns:
        ``(map (n, h, w), has (n,) bool)``: pixels of a frame without any
        evidence get 0; ``has`` marks frames with at least one edge.
    """
    h, w = prob.shape[-2:]
    num = torch.zeros(n, h, w, dtype=prob.dtype, device=prob.device).index_add_(0, ii, prob * valid)
    den = torch.zeros(n, h, w, dtype=prob.dtype, device=prob.device).index_add_(0, ii, valid.to(prob.dtype))
    m = num / den.clamp(min=1e-6)
    if dilate > 0:
        m = F.max_pool2d(m[:, None], 2 * dilate + 1, stride=1, padding=dilate)[:, 0]
    has = torch.zeros(n, dtype=torch.bool, device=prob.device)
    has[ii] = True
    return m.clamp(0, 1), has


def warp_motion(motion: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                min_weight: float = 0.05) -> torch.Tensor:
    """Carry a keyframe's motion map to another frame along correspondences.

    Every confident keyframe pixel deposits its probability at the rounded
    target pixel; a target pixel keeps the largest deposit (moving regions
    are not thinned out by static neighbours).

    Args:
        motion: (h, w) keyframe motion probability.
        target: (h, w, 2) target coordinates ``(u, v)`` in the frame (pixel centres).
        weight: (h, w, 2) confidence of those correspondences.
        min_weight: pixels below this confidence deposit nothing.
    Returns:
        (h, w) motion probability of the frame's pixels (0 where nothing landed).
    """
    h, w = motion.shape
    u = target[..., 0].round().long()
    v = target[..., 1].round().long()
    ok = (weight[..., 0] >= min_weight) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    out = torch.zeros(h * w, dtype=motion.dtype, device=motion.device)
    out.scatter_reduce_(0, (v * w + u)[ok], motion[ok], reduce="amax")
    return out.view(h, w)


def frame_motion(snap, feature_K: torch.Tensor, poses_wc: np.ndarray, frame_ids: np.ndarray, tracks: dict,
                 opt: MotionOptions, chunk: int = 64) -> np.ndarray:
    """(F, h, w) float16 motion probability of every input frame.

    A keyframe has its own map.  A tracked non-keyframe t with a record
    against keyframe a gets its own evidence too: the record's correspondences
    are compared with the rigid reprojection of a's pixels (a's depths, both
    final poses) and scored by the residual mixture (:func:`residual_motion`),
    so that an object that moves after the keyframe, or enters the view, is
    marked where the keyframe's pixels are covered or displaced; that evidence
    and a's own map are carried to t's pixels along the correspondences
    (:func:`warp_motion`) and combined by a maximum.  Frames without a record
    get 0.

    Args:
        snap: the final keyframe snapshot (poses, inverse depths, motion maps).
        feature_K: (4,) intrinsics at feature resolution.
        poses_wc: (F, 4, 4) camera-to-world poses of every frame (the filler's).
        frame_ids: (F,) input-frame index of each row; tracks: index -> TrackRecord.
        opt: mixture parameters (``mode == "off"``: all zeros).
    """
    import pypose as pp

    from slam.geometry.projective import project_edges

    h, w = snap.disps.shape[-2:]
    F_ = len(frame_ids)
    out = np.zeros((F_, h, w), dtype=np.float16)
    if snap.motion is None or opt.mode == "off":
        return out
    slot_of = {int(f): k for k, f in enumerate(snap.frame_index.tolist())}
    motion = snap.motion.float().cpu()
    rows = []
    for r, f in enumerate(frame_ids.tolist()):
        if f in slot_of:
            out[r] = motion[slot_of[f]].numpy()
        elif f in tracks and tracks[f].anchor in slot_of:
            rows.append(r)
    disps = snap.disps.float().cpu()
    G_kf = snap.poses.float().cpu()
    K = feature_K.float().cpu()
    for c in range(0, len(rows), chunk):
        part = rows[c:c + chunk]
        recs = [tracks[int(frame_ids[r])] for r in part]
        slots = [slot_of[rec.anchor] for rec in recs]
        T_cw = np.linalg.inv(poses_wc[part]).astype(np.float32)
        G_f = pp.mat2SE3(torch.from_numpy(T_cw), check=False).tensor().float()
        n = len(part)
        G = pp.SE3(torch.cat([G_kf[slots], G_f]))
        D = torch.cat([disps[slots], torch.ones(n, h, w)])
        ii, jj = torch.arange(n), torch.arange(n, 2 * n)
        pr = project_edges(G, D, K, ii, jj)
        target = torch.stack([rec.target.float() for rec in recs])
        weight = torch.stack([rec.weight.float() for rec in recs])
        ok = (weight[..., 0] >= opt.min_weight) & pr.valid
        prob = residual_motion((target - pr.coords).norm(dim=-1), ok, opt)
        for e, r in enumerate(part):
            m = torch.maximum(prob[e], motion[slots[e]])
            out[r] = warp_motion(m, target[e], weight[e], opt.min_weight).numpy()
    return out
