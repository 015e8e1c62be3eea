"""The monocular depth prior inside tracking (MegaSaM-style).

For each new keyframe the prior (:mod:`slam.depth.prior`) is evaluated on its
processing-resolution image and reduced to feature resolution; the raw map
(inverse depth up to scale and shift) and its confidence live in the keyframe
store.  It is used twice:

* **initial depth**: a new keyframe's inverse depth starts from the raw prior
  scaled so that its median matches the depth the keyframe would otherwise
  start from (the mean of its predecessors'); the first keyframe's prior is
  scaled to a median of 1;
* **BA term**: before each bundle adjustment, the raw prior of every active
  keyframe is aligned in scale and shift to its current inverse depth
  (:func:`slam.depth.align.align_scale_shift`, weighted by the BA confidence
  of those depths; scale only while a keyframe has none yet), and enters BA as
  ``alpha (d - d_prior)^2`` with a per-pixel weight ``alpha`` from the depth
  block of the BA Hessian (:func:`slam.depth.align.prior_weight_from_hessian`:
  weak parallax, strong prior; strong parallax, none), times the prior's own
  confidence, times a gate on the whole problem
  (:func:`slam.depth.align.prior_gate`: off once a sizeable share of the
  pixels is constrained by the geometry, which then has a scale of its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from slam.depth.align import (AlignOptions, PriorWeightOptions, align_scale_shift, prior_gate, prior_trust,
                              prior_weight_from_hessian)
from slam.depth.options import options_from, to_plain
from slam.depth.prior import DepthPrior, make_prior


@dataclass
class PriorTerm:
    """A depth prior with its alignment and BA-weight rules.

    Args:
        prior: the monocular prior.
        align: options of the scale-shift alignment.
        weight: options of the Hessian-based weight rule.
        stride: processing / feature resolution.
        min_pixels: confident pixels a keyframe needs for a scale-shift
            alignment (else scale only).
        min_disp_ratio: aligned inverse depths are kept above this fraction of
            their median (an affine-invariant prior's near-zero values are "far",
            not "infinitely far").
    """

    prior: DepthPrior
    align: AlignOptions
    weight: PriorWeightOptions
    stride: int = 8
    min_pixels: int = 50
    min_disp_ratio: float = 0.05

    @classmethod
    def from_config(cls, cfg: Any, stride: int, n_frames: int | None = None) -> PriorTerm | None:
        """From the ``depth.prior`` node of ``configs/run.yaml``; None for ``kind: none``."""
        cfg = to_plain(cfg) or {}
        prior = make_prior(cfg, n_frames)
        if prior is None:
            return None
        return cls(prior, options_from(AlignOptions, cfg.get("align"), "depth.prior.align"),
                   options_from(PriorWeightOptions, cfg.get("weight"), "depth.prior.weight"), stride,
                   min_disp_ratio=float(cfg.get("min_disp_ratio", 0.05)))

    def features(self, image: np.ndarray, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw prior inverse depth and confidence of one frame at feature resolution.

        Args:
            image: (H, W, 3) uint8 RGB at processing resolution.
            index: the frame's row in the sequence.
        Returns:
            ``(inverse_depth (h, w), confidence (h, w))`` float32; a block's value
            is the confidence-weighted mean of its pixels.
        """
        inv, conf = self.prior.predict(image, index)
        s = self.stride
        H, W = image.shape[:2]
        h, w = H // s, W // s
        inv_t = torch.from_numpy(np.nan_to_num(np.asarray(inv, np.float32)[: h * s, : w * s]))
        c_t = torch.from_numpy(np.asarray(conf, np.float32)[: h * s, : w * s]).clamp(0, 1)
        c_t = c_t * (inv_t > 0)
        num = F.avg_pool2d((inv_t * c_t)[None, None], s)[0, 0]
        den = F.avg_pool2d(c_t[None, None], s)[0, 0]
        return num / den.clamp(min=1e-6), den

    def _floor(self, d: torch.Tensor) -> torch.Tensor:
        pos = d[d > 0]
        floor = self.min_disp_ratio * float(pos.median()) if pos.numel() else 1e-6
        return d.clamp(min=max(floor, 1e-6))

    def initial_disp(self, raw: torch.Tensor, conf: torch.Tensor, reference: torch.Tensor | float) -> torch.Tensor:
        """(h, w) inverse depth: ``raw`` scaled to the median of ``reference`` (a map or a number)."""
        ok = conf > 0.5
        if int(ok.sum()) == 0:
            return torch.as_tensor(reference, dtype=raw.dtype).expand_as(raw).clone()
        ref = float(reference.median()) if torch.is_tensor(reference) else float(reference)
        return self._floor(raw * (ref / float(raw[ok].median().clamp(min=1e-9))))

    def aligned(self, raw: torch.Tensor, conf: torch.Tensor, disps: torch.Tensor,
                geo_conf: torch.Tensor) -> torch.Tensor:
        """(N, h, w) prior inverse depths aligned to the current estimate.

        Args:
            raw, conf: (N, h, w) raw prior and its confidence.
            disps: (N, h, w) current inverse depths.
            geo_conf: (N, h, w) BA confidence of those depths (0: never adjusted).
        """
        out = torch.empty_like(disps)
        for k in range(disps.shape[0]):
            w = (conf[k] * geo_conf[k]).cpu().numpy()
            if int((w > 0.1).sum()) >= self.min_pixels:
                try:
                    s, t = align_scale_shift(raw[k].cpu().numpy(), disps[k].cpu().numpy(), w, self.align)
                    out[k] = self._floor(raw[k] * s + t).to(disps)
                    continue
                except ValueError:
                    pass
            out[k] = self.initial_disp(raw[k], conf[k], disps[k]).to(disps)
        return out

    def weight_rule(self, conf: torch.Tensor, disp_prior: torch.Tensor | None = None):
        """The per-pixel BA weight as a function of the geometric depth Hessian.

        Returns ``fn(C (N, h, w), disps (N, h, w), C_geo (N, h, w)) -> alpha (N, h, w)``
        (for :class:`slam.ba.dense_ba.DenseBA`'s ``prior_weight``; ``C`` with the
        robust loss's IRLS factors, ``C_geo`` without, defaulting to ``C``), the
        Hessian rule on ``C`` times the prior's confidence ``conf`` (N, h, w), times
        the problem's gate on ``C_geo`` (:func:`slam.depth.align.prior_gate`: how
        much of it the parallax constrains), times, when the aligned
        prior ``disp_prior`` (N, h, w) is given, each keyframe's trust in it
        (:func:`slam.depth.align.prior_trust`: how well it agrees with the
        depths where the geometry is strong).
        """
        def fn(C: torch.Tensor, disps: torch.Tensor, C_geo: torch.Tensor | None = None) -> torch.Tensor:
            w = prior_weight_from_hessian(C, self.weight, disps) * conf.to(C)
            w = w * prior_gate(C if C_geo is None else C_geo, disps, conf, self.weight)
            if disp_prior is not None:
                w = w * prior_trust(C, disps, disp_prior, conf, self.weight)[:, None, None]
            return w

        return fn

    def close(self) -> None:
        self.prior.close()
