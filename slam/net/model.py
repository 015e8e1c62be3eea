""":class:`CorrNet`: encoders + correlation + update operator in one module.

Shapes: images ``(B, 3, H, W)`` RGB floats in ``[0, 255]`` with ``H, W``
multiples of 8; feature resolution ``h = H / 8``, ``w = W / 8``; E edges.
Coordinates are pixel-centre ``(u, v)`` at feature resolution, channel-last
``(E, h, w, 2)``, as in :mod:`slam.corr.base`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from slam.corr.base import identity_coords
from slam.net.config import STRIDE, NetConfig
from slam.net.corr import AllPairsCorr, CorrBlock, OnDemandCorr
from slam.net.encoder import ContextEncoder, FeatureEncoder
from slam.net.update import FrameOutput, UpdateBlock, upsample


@dataclass
class StepOutput:
    """Result of :meth:`CorrNet.step` for E edges.

    Attributes:
        net: ``(E, hidden_dim, h, w)`` new hidden state (keep it per edge).
        target: ``(E, h, w, 2)`` revised target coordinates ``coords + delta``.
        delta: ``(E, h, w, 2)`` the revision (feature px).
        weight: ``(E, h, w, 2)`` confidence in (0, 1) of target u and v.
        motion_logit: ``(E, h, w)`` logit of independent motion of frame i's pixel.
    """

    net: torch.Tensor
    target: torch.Tensor
    delta: torch.Tensor
    weight: torch.Tensor
    motion_logit: torch.Tensor


class CorrNet(nn.Module):
    """Feature encoder, context encoder and :class:`~slam.net.update.UpdateBlock`."""

    def __init__(self, cfg: NetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or NetConfig()
        self.fnet = FeatureEncoder(cfg.fnet_dims, cfg.enc_strides, cfg.feature_dim, cfg.enc_blocks, cfg.stem_kernel)
        self.cnet = ContextEncoder(cfg.cnet_dims, cfg.enc_strides, cfg.hidden_dim, cfg.context_dim,
                                   cfg.enc_blocks, cfg.stem_kernel)
        self.update = UpdateBlock(cfg)
        self.stride = STRIDE  #: image / feature resolution

    def num_parameters(self) -> int:
        """Number of scalar parameters."""
        return sum(p.numel() for p in self.parameters())

    # --- per frame -------------------------------------------------------
    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> correlation features ``(B, feature_dim, h, w)``."""
        return self.fnet(images)

    def encode_context(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` -> ``(net_init (B, hidden_dim, h, w), inp (B, context_dim, h, w))``."""
        return self.cnet(images)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` -> ``(fmap, net_init, inp)`` (see the two methods above)."""
        net, inp = self.encode_context(images)
        return self.encode_features(images), net, inp

    # --- per edge --------------------------------------------------------
    def correlation(self, fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, on_demand: bool = False,
                    **kwargs) -> CorrBlock:
        """Correlation pyramid for edges ``ii[e] -> jj[e]`` between frames of ``fmaps (F, C, h, w)``.

        ``on_demand`` picks :class:`OnDemandCorr` (``kwargs``: ``max_elements``,
        ``pyramid``) over :class:`AllPairsCorr`.
        """
        cls = OnDemandCorr if on_demand else AllPairsCorr
        return cls.from_frames(fmaps, ii, jj, self.cfg.corr_levels, self.cfg.corr_radius, **kwargs)

    def step(self, net: torch.Tensor, inp: torch.Tensor, corr: CorrBlock | Callable[[torch.Tensor], torch.Tensor],
             coords: torch.Tensor) -> StepOutput:
        """One iteration for E edges: lookup at ``coords``, update, revise.

        Args:
            net: ``(E, hidden_dim, h, w)`` hidden state (initially ``net_init[ii]``).
            inp: ``(E, context_dim, h, w)`` context input of the source frames (``inp[ii]``).
            corr: lookup ``(E, h, w, 2) -> (E, levels (2r+1)^2, h, w)``.
            coords: ``(E, h, w, 2)`` current target coordinates (e.g. reprojection).
        """
        h, w = coords.shape[1:3]
        flow = (coords - identity_coords(1, h, w, coords.dtype).to(coords.device)).permute(0, 3, 1, 2)
        out = self.update(net, inp, corr(coords), flow)
        return StepOutput(net=out.net, target=coords + out.delta, delta=out.delta, weight=out.weight,
                          motion_logit=out.motion_logit)

    def aggregate(self, net: torch.Tensor, ii: torch.Tensor) -> FrameOutput:
        """Per-frame damping and depth-upsampling mask (:meth:`UpdateBlock.aggregate`)."""
        return self.update.aggregate(net, ii)

    def upsample_flow(self, net: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Full-resolution flow ``(E, 2, H, W)`` in image pixels from ``target (E, h, w, 2)``."""
        h, w = target.shape[1:3]
        flow = (target - identity_coords(1, h, w, target.dtype).to(target.device)).permute(0, 3, 1, 2)
        return upsample(flow * self.stride, self.update.flow_mask(net), self.stride)
