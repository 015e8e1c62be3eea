"""Aligning an up-to-scale-and-shift depth prior, and weighting it in bundle adjustment.

:func:`align_scale_shift`
    robust weighted least squares ``s * pred_inv + t ~ target_inv`` in inverse
    depth (the space in which monocular networks are affine-invariant), used to
    start keyframe inverse depths from the prior and to express the prior in the
    run's scale.

:func:`prior_weight_from_hessian`
    the MegaSaM-style rule for the prior's weight in BA: a pixel whose depth the
    geometry constrains well (large diagonal depth-block Hessian ``H_dd``,
    strong parallax) gets no prior, a pixel with weak parallax gets the full
    weight ``w_max``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from slam.data.sequence import InputError
from slam.depth.options import options_from

#: Robust losses understood by :func:`align_scale_shift`.
ALIGN_LOSSES: tuple[str, ...] = ("l2", "huber", "cauchy")


@dataclass
class AlignOptions:
    """Tunables of :func:`align_scale_shift` (``configs/depth/prior.yaml``, ``align``)."""

    iters: int = 5          #: IRLS iterations after the first (plain weighted) solve
    loss: str = "huber"     #: robust loss on the residuals: l2 | huber | cauchy
    k: float = 1.345        #: loss scale in robust standard deviations (1.4826 * weighted MAD)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """Weighted median of 1-D ``x`` with non-negative weights ``w`` (sum > 0)."""
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


def _solve_affine(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted LS ``s p + t ~ y``; scale only (``t = 0``) when ``p`` is (nearly) constant."""
    sw = w.sum()
    mp = (w * p).sum() / sw
    my = (w * y).sum() / sw
    var = (w * (p - mp) ** 2).sum() / sw
    if var <= 1e-12 * max(mp * mp, 1e-300):
        s = float((w * p * y).sum() / max((w * p * p).sum(), 1e-300))
        return s, 0.0
    s = float((w * (p - mp) * (y - my)).sum() / sw / var)
    return s, float(my - s * mp)


def align_scale_shift(pred_inv: np.ndarray | torch.Tensor, target_inv: np.ndarray | torch.Tensor,
                      weight: np.ndarray | torch.Tensor | None = None,
                      options: AlignOptions | Any = None) -> tuple[float, float]:
    """Robust scale and shift mapping a predicted inverse depth onto a target.

    Minimises ``sum_x weight(x) * rho(s * pred_inv(x) + t - target_inv(x))`` by
    iteratively reweighted least squares: a plain weighted solve, then
    ``options.iters`` reweightings with a Huber (``w = min(1, c / |r|)``) or
    Cauchy (``w = 1 / (1 + (r / c)^2)``) weight, ``c = k * 1.4826 * MAD`` where
    MAD is the weighted median absolute residual of the current solution.
    When ``pred_inv`` is (nearly) constant over the weighted pixels only a scale
    is fitted (``t = 0``).

    Args:
        pred_inv: (...) predicted inverse depth (any units, up to scale and shift).
        target_inv: (...) target inverse depth (1 / units of the poses), same shape.
        weight: (...) non-negative weights (e.g. confidence, or the inverse-depth
            Hessian of the target); None for all ones.  Pixels where any input is
            non-finite are ignored.
        options: :class:`AlignOptions` or a mapping of its fields.
    Returns:
        ``(s, t)`` as floats: ``target_inv ~ s * pred_inv + t``.
    Raises:
        ValueError: no pixel has a positive weight and finite values.
    """
    opt = options_from(AlignOptions, options, "align")
    if opt.loss not in ALIGN_LOSSES:
        raise InputError(f"align.loss must be one of {', '.join(ALIGN_LOSSES)}, got {opt.loss!r}")

    def flat(a) -> np.ndarray:
        if torch.is_tensor(a):
            a = a.detach().cpu().numpy()
        return np.asarray(a, dtype=np.float64).reshape(-1)

    p, y = flat(pred_inv), flat(target_inv)
    if p.shape != y.shape:
        raise ValueError(f"pred_inv has {p.size} values but target_inv {y.size}")
    w = np.ones_like(p) if weight is None else np.broadcast_to(flat(weight), p.shape).copy()
    ok = np.isfinite(p) & np.isfinite(y) & np.isfinite(w) & (w > 0)
    if not ok.any():
        raise ValueError("align_scale_shift: no pixel with a positive weight and finite values")
    p, y, w = p[ok], y[ok], w[ok]
    s, t = _solve_affine(p, y, w)
    if opt.loss == "l2":
        return s, t
    for _ in range(int(opt.iters)):
        r = np.abs(s * p + t - y)
        c = opt.k * 1.4826 * _weighted_median(r, w)
        if not c > 0:
            break
        if opt.loss == "huber":
            rw = np.minimum(1.0, c / np.maximum(r, 1e-300))
        else:
            rw = 1.0 / (1.0 + (r / c) ** 2)
        s_new, t_new = _solve_affine(p, y, w * rw)
        done = abs(s_new - s) <= 1e-9 * abs(s) + 1e-300 and abs(t_new - t) <= 1e-9 * (abs(t) + abs(s))
        s, t = s_new, t_new
        if done:
            break
    return s, t


# ----------------------------------------------------------------- BA weighting
#: Modes of :func:`prior_weight_from_hessian`.
WEIGHT_MODES: tuple[str, ...] = ("linear", "smooth")


@dataclass
class PriorWeightOptions:
    """Tunables of :func:`prior_weight_from_hessian` (``configs/depth/prior.yaml``, ``weight``).

    The defaults assume the scale-invariant form (``disp`` given, so ``h`` is the
    log-depth Hessian in feature px^2 per unit log depth, i.e. about the sum over
    edges of the squared parallax a depth change of 100 % causes).
    """

    mode: str = "linear"    #: linear: w_max * clamp(1 - h / h_thresh, 0, 1); smooth: smoothstep on log h
    w_max: float = 1.0      #: weight where the geometry does not constrain depth at all (h = 0)
    h_thresh: float = 4.0   #: h at and above which the prior weight is 0
    h_lo: float = 0.4       #: smooth mode: h at and below which the weight is w_max (0 < h_lo < h_thresh)
    check_sigma: float = 0.1  #: trust check (:func:`prior_trust`): log-depth disagreement at which the weight halves (0: off)
    check_power: float = 4.0  #: ... trust 1 / (1 + (sigma / check_sigma)^check_power) (large: a gate)
    check_pixels: int = 50    #: ... pixels with h >= h_thresh a keyframe needs for its own check (fewer: pooled, then trusted)
    gate_share: float = 0.05  #: problem gate (:func:`prior_gate`): share of the prior's confident pixels
                              #: with h >= h_thresh at which the whole prior term halves (0: off) ...
    gate_power: float = 4.0   #: ... gate 1 / (1 + (share / gate_share)^gate_power), > 0


def prior_weight_from_hessian(H_dd: torch.Tensor | np.ndarray, cfg: PriorWeightOptions | Any = None,
                              disp: torch.Tensor | np.ndarray | None = None) -> torch.Tensor | np.ndarray:
    """Per-pixel weight of the depth prior in BA from how well geometry constrains depth.

    With ``h = H_dd`` (or ``h = H_dd * disp^2`` when ``disp`` is given):

    * ``linear``: ``w = w_max * clamp(1 - h / h_thresh, 0, 1)``;
    * ``smooth``: ``w = w_max * (1 - smoothstep((log h - log h_lo) / (log h_thresh - log h_lo)))``
      with ``smoothstep(x) = 3x^2 - 2x^3`` on ``[0, 1]`` (C1, flat at both ends).

    Both are monotone non-increasing in ``h``, equal ``w_max`` at ``h = 0`` and 0
    for ``h >= h_thresh``.  Weak parallax therefore gets a strong prior and
    strong parallax none (MegaSaM).

    Scale: ``H_dd`` of inverse depth scales with the square of the (arbitrary)
    monocular scale.  Passing ``disp`` evaluates the rule on the scale-invariant
    log-depth Hessian ``H_dd * disp^2`` and returns ``w / disp^2``, so that the BA
    prior term ``w_ret * (d - d_prior)^2 ~ w * (log d - log d_prior)^2``.

    Args:
        H_dd: (n, h, w) non-negative diagonal of BA's depth-block Hessian (inverse
            depth), tensor or array; negative values are treated as 0.
        cfg: :class:`PriorWeightOptions` or a mapping of its fields.
        disp: optional (n, h, w) current inverse depths (> 0).
    Returns:
        (n, h, w) weights, same type, dtype and device as ``H_dd``.
    Raises:
        InputError: unknown mode or non-positive thresholds.
    """
    opt = options_from(PriorWeightOptions, cfg, "weight")
    if opt.mode not in WEIGHT_MODES:
        raise InputError(f"weight.mode must be one of {', '.join(WEIGHT_MODES)}, got {opt.mode!r}")
    if not opt.h_thresh > 0 or (opt.mode == "smooth" and not 0 < opt.h_lo < opt.h_thresh):
        raise InputError(f"weight: need h_thresh > 0 (and 0 < h_lo < h_thresh in smooth mode), "
                         f"got h_thresh={opt.h_thresh}, h_lo={opt.h_lo}")
    is_np = not torch.is_tensor(H_dd)
    H = torch.as_tensor(np.asarray(H_dd)) if is_np else H_dd
    h = H.clamp_min(0)
    d2 = None
    if disp is not None:
        d = torch.as_tensor(np.asarray(disp)) if not torch.is_tensor(disp) else disp
        d2 = (d.to(h.dtype).to(h.device) ** 2).clamp_min(1e-12)
        h = h * d2
    if opt.mode == "linear":
        w = opt.w_max * (1.0 - h / opt.h_thresh).clamp(0.0, 1.0)
    else:
        lo, hi = math.log(opt.h_lo), math.log(opt.h_thresh)
        x = ((torch.log(h.clamp_min(1e-30)) - lo) / (hi - lo)).clamp(0.0, 1.0)
        w = opt.w_max * (1.0 - x * x * (3.0 - 2.0 * x))
    if d2 is not None:
        w = w / d2
    w = w.to(H.dtype)
    return w.numpy() if is_np else w


def prior_trust(H_dd: torch.Tensor, disps: torch.Tensor, disp_prior: torch.Tensor, conf: torch.Tensor,
                cfg: PriorWeightOptions | Any = None) -> torch.Tensor:
    """Per-keyframe trust in an aligned depth prior, from where the geometry is strong.

    The Hessian rule (:func:`prior_weight_from_hessian`) uses the prior only where
    the geometry does not constrain depth; there nothing can tell a good prior
    from a bad one.  Where the geometry *is* strong (log-depth Hessian
    ``h = H_dd * disps^2 >= h_thresh``) it can: the robust spread of the log
    ratio between the aligned prior and the current inverse depths,
    ``sigma = 1.4826 * median |log(disp_prior / disps)|`` over those pixels (with
    prior confidence > 0.5), measures how far the prior is from the geometry.
    The trust is ``1 / (1 + (sigma / check_sigma)^p)``, ``p = check_power``: 1 for a
    prior that agrees, about ``(check_sigma / sigma)^p`` for one that does not (a
    monocular network on a scene unlike its training data); a large ``p`` makes it
    a gate.  A keyframe with fewer than ``check_pixels`` such pixels (a new
    keyframe with few edges yet) gets the trust of all keyframes' such pixels
    pooled: how well the prior does on this video; with too few of those too
    (pure rotation, a static camera) the trust is 1: the prior is then all
    there is.

    Args:
        H_dd: (N, h, w) diagonal of the depth block of the BA Hessian (inverse depth).
        disps: (N, h, w) current inverse depths (> 0).
        disp_prior: (N, h, w) prior inverse depths aligned to ``disps``.
        conf: (N, h, w) prior confidence in [0, 1].
        cfg: :class:`PriorWeightOptions` or a mapping of its fields.
    Returns:
        (N,) trust in (0, 1], same dtype and device as ``H_dd``.
    """
    opt = options_from(PriorWeightOptions, cfg, "weight")
    N = H_dd.shape[0]
    trust = torch.ones(N, dtype=H_dd.dtype, device=H_dd.device)
    if not opt.check_sigma > 0:
        return trust
    h = H_dd.clamp_min(0) * disps.to(H_dd) ** 2
    strong = (h >= opt.h_thresh) & (conf.to(H_dd) > 0.5) & (disps > 0) & (disp_prior > 0)
    r = torch.log(disp_prior.to(H_dd).clamp_min(1e-12) / disps.to(H_dd).clamp_min(1e-12)).abs()

    def of(x: torch.Tensor) -> float:
        sigma = 1.4826 * float(x.median())
        if sigma <= 0.0:
            return 1.0
        z = opt.check_power * math.log(sigma / opt.check_sigma)  # log form: no overflow for a large power
        return 0.0 if z > 700.0 else 1.0 / (1.0 + math.exp(z))

    own = strong.sum((1, 2)) >= opt.check_pixels
    for k in torch.nonzero(own)[:, 0].tolist():
        trust[k] = of(r[k][strong[k]])
    if not bool(own.all()) and int(strong.sum()) >= opt.check_pixels:
        trust[~own] = of(r[strong])  # pooled over all keyframes
    return trust


def prior_gate(H_dd: torch.Tensor, disps: torch.Tensor, conf: torch.Tensor,
               cfg: PriorWeightOptions | Any = None) -> float:
    """Gate on the prior's BA term for a whole problem, from how much of it the parallax constrains.

    The per-pixel rule (:func:`prior_weight_from_hessian`) gives the prior the
    pixels whose depth the geometry constrains weakly.  When the camera
    translates, those pixels (far away, or with little confident flow) are many
    and still pull the poses together: a monocular prior that is wrong there in
    aggregate (an affine fit to the strong pixels does not fix a wrong depth
    range) drags the scale of the translation with it.  MegaSaM decides per
    video from the Hessian whether its prior enters BA; here the decision is
    made per BA problem: ``s`` is the share of the prior's confident pixels
    (confidence > 0.5) whose log-depth Hessian ``h = H_dd * disps^2`` reaches
    ``h_thresh``, pooled over the keyframes with any parallax at all (``H_dd``
    not all zero: a keyframe that is only a target in the problem says
    nothing), and the gate is ``1 / (1 + (s / gate_share)^gate_power)``: about 1
    when almost nothing is constrained (pure rotation: the prior is all there
    is), about 0 when a sizeable share is (the geometry has a scale of its own).
    The prior still gives every new keyframe its initial depth.

    Args:
        H_dd: (N, h, w) diagonal of the depth block of the BA Hessian (inverse depth),
            best without the robust loss's reweighting (the parallax on offer, whatever
            the current residuals).
        disps: (N, h, w) current inverse depths (> 0).
        conf: (N, h, w) prior confidence in [0, 1].
        cfg: :class:`PriorWeightOptions` or a mapping of its fields.
    Returns:
        the gate in [0, 1]; 1 when ``gate_share`` is 0 (off) or no pixel counts.
    Raises:
        InputError: a negative ``gate_share`` or a non-positive ``gate_power``.
    """
    opt = options_from(PriorWeightOptions, cfg, "weight")
    if not (opt.gate_share >= 0 and opt.gate_power > 0):
        raise InputError(f"weight: need gate_share >= 0 and gate_power > 0, "
                         f"got gate_share={opt.gate_share}, gate_power={opt.gate_power}")
    if opt.gate_share == 0:
        return 1.0
    H = H_dd.clamp_min(0)
    h = H * disps.to(H_dd) ** 2
    seen = (H.flatten(1) > 0).any(1)[:, None, None]
    ok = (conf.to(H_dd) > 0.5) & (disps > 0) & seen
    n = int(ok.sum())
    share = float((h[ok] >= opt.h_thresh).sum()) / n if n else 0.0
    if share == 0.0:
        return 1.0
    x = opt.gate_power * math.log(share / opt.gate_share)
    return 0.0 if x > 700.0 else 1.0 / (1.0 + math.exp(x))
