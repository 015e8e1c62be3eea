"""The recurrent update operator and its helpers.

Per edge ``(i, j)`` and iteration the :class:`UpdateBlock` reads

* ``corr``  ``(E, levels (2r+1)^2, h, w)``: a correlation lookup at the current coords,
* ``flow``  ``(E, 2, h, w)``: the current flow ``coords - identity`` (feature px),
* ``inp``   ``(E, context_dim, h, w)``: context input of frame i,
* ``net``   ``(E, hidden_dim, h, w)``: the edge's hidden state,

and returns the new hidden state and per-edge heads (channel-last, to match
:class:`slam.corr.base.EdgeUpdate`):

* ``delta``  ``(E, h, w, 2)``: flow revision, feature px (new target = coords + delta),
* ``weight`` ``(E, h, w, 2)``: confidence of the target's u and v in (0, 1) (sigmoid),
* ``motion_logit`` ``(E, h, w)``: logit of "pixel of frame i moves independently".

Heads needed less often are separate calls: :meth:`UpdateBlock.flow_mask`
(per-edge convex-upsampling mask for full-resolution flow) and
:meth:`UpdateBlock.aggregate`, which pools the hidden states of all edges
leaving the same frame (like DROID-SLAM's per-frame aggregation) into the
damping ``eta (F, h, w)`` for the depth block of bundle adjustment and a
per-frame upsampling mask for full-resolution depth.

Frame indices ``ii`` are LongTensors ``(E,)`` (source frame of each edge);
for a batch of sequences, offset them per sequence so they are distinct.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slam.net.config import STRIDE, NetConfig


def _conv(cin: int, cout: int, k: int | tuple[int, int] = 3) -> nn.Conv2d:
    ks = (k, k) if isinstance(k, int) else k
    return nn.Conv2d(cin, cout, ks, padding=(ks[0] // 2, ks[1] // 2))


class ConvGRU(nn.Module):
    """Convolutional GRU: ``z, r = sigmoid(conv([h, x]))``, ``q = tanh(conv([r h, x]))``,
    ``h' = (1 - z) h + z q``.  ``h (N, hidden, h, w)``, ``x (N, input_dim, h, w)``."""

    def __init__(self, hidden: int, input_dim: int, kernel: int | tuple[int, int] = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.convzr = _conv(hidden + input_dim, 2 * hidden, kernel)
        self.convq = _conv(hidden + input_dim, hidden, kernel)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.convzr(torch.cat([h, x], 1))).split(self.hidden, 1)
        q = torch.tanh(self.convq(torch.cat([r * h, x], 1)))
        return h + z * (q - h)


class SepConvGRU(nn.Module):
    """Two ConvGRU passes with ``1 x k`` then ``k x 1`` kernels (wide receptive field, fewer weights)."""

    def __init__(self, hidden: int, input_dim: int, kernel: int = 5) -> None:
        super().__init__()
        self.horizontal = ConvGRU(hidden, input_dim, (1, kernel))
        self.vertical = ConvGRU(hidden, input_dim, (kernel, 1))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.vertical(self.horizontal(h, x), x)


class DWSepConvGRU(nn.Module):
    """ConvGRU with depthwise-separable convolutions: a ``k x k`` depthwise
    convolution per input channel, then a 1x1 convolution (the depthwise
    filter of ``x`` is shared by the gates and the candidate).  Roughly 8x
    fewer MACs than :class:`ConvGRU` at k = 3; fast on CPU in channels-last."""

    def __init__(self, hidden: int, input_dim: int, kernel: int = 5) -> None:
        super().__init__()
        self.hidden = hidden
        self.dw_h = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.dw_rh = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.dw_x = nn.Conv2d(input_dim, input_dim, kernel, padding=kernel // 2, groups=input_dim)
        self.pw_zr = nn.Conv2d(hidden + input_dim, 2 * hidden, 1)
        self.pw_q = nn.Conv2d(hidden + input_dim, hidden, 1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dx = self.dw_x(x)
        z, r = torch.sigmoid(self.pw_zr(torch.cat([self.dw_h(h), dx], 1))).split(self.hidden, 1)
        q = torch.tanh(self.pw_q(torch.cat([self.dw_rh(r * h), dx], 1)))
        return h + z * (q - h)


def _head(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, mid), nn.ReLU(inplace=True), _conv(mid, cout))


@dataclass
class UpdateOutput:
    """Per-edge result of one :class:`UpdateBlock` step.

    Attributes:
        net: ``(E, hidden, h, w)`` new hidden state.
        delta: ``(E, h, w, 2)`` flow revision (feature px).
        weight: ``(E, h, w, 2)`` confidence in (0, 1).
        motion_logit: ``(E, h, w)`` independent-motion logit.
    """

    net: torch.Tensor
    delta: torch.Tensor
    weight: torch.Tensor
    motion_logit: torch.Tensor


@dataclass
class FrameOutput:
    """Per-frame result of :meth:`UpdateBlock.aggregate`.

    Attributes:
        frames: ``(F,)`` sorted distinct source frames.
        eta: ``(F, h, w)`` positive damping of the frames' inverse depths.
        mask: ``(F, 9 * 8 * 8, h, w)`` convex-upsampling logits for depth (see :func:`upsample`).
    """

    frames: torch.Tensor
    eta: torch.Tensor
    mask: torch.Tensor


def pool_per_frame(x: torch.Tensor, ii: torch.Tensor, reduce: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Pool per-edge values over the edges that leave the same frame.

    Args:
        x: ``(E, ...)`` per-edge values (e.g. motion logits ``(E, h, w)``).
        ii: ``(E,)`` source frame of each edge.
        reduce: ``"mean"`` (index_add) or ``"amax"`` / ``"amin"`` (scatter_reduce).
    Returns:
        ``(frames (F,), pooled (F, ...))`` with ``frames`` the sorted distinct ``ii``.
    """
    frames, inv = torch.unique(ii, return_inverse=True)
    out = x.new_zeros((frames.shape[0],) + tuple(x.shape[1:]))
    if reduce == "mean":
        out.index_add_(0, inv, x)
        count = torch.bincount(inv, minlength=frames.shape[0]).to(x.dtype)
        return frames, out / count.view(-1, *([1] * (x.ndim - 1)))
    if reduce in ("amax", "amin"):
        index = inv.view(-1, *([1] * (x.ndim - 1))).expand_as(x)
        return frames, out.scatter_reduce(0, index, x, reduce=reduce, include_self=False)
    raise ValueError(f"unknown reduce {reduce!r}; expected mean, amax or amin")


class UpdateBlock(nn.Module):
    """Correlation/flow encoders, ConvGRU and heads (see module docstring)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, c1 = cfg.corr_dims
        f0, f1 = cfg.flow_dims
        hd, md = cfg.hidden_dim, cfg.motion_dim
        up = 9 * STRIDE * STRIDE
        self.corr_enc = nn.Sequential(_conv(cfg.corr_channels, c0, 1), nn.ReLU(inplace=True),
                                      _conv(c0, c1), nn.ReLU(inplace=True))
        self.flow_enc = nn.Sequential(_conv(2, f0, 7), nn.ReLU(inplace=True), _conv(f0, f1), nn.ReLU(inplace=True))
        self.motion_enc = nn.Sequential(_conv(c1 + f1, md - 2), nn.ReLU(inplace=True))
        gin = cfg.context_dim + md
        self.gru: nn.Module
        if cfg.gru == "conv3":
            self.gru = ConvGRU(hd, gin, 3)
        elif cfg.gru == "sep":
            self.gru = SepConvGRU(hd, gin, cfg.gru_kernel)
        else:
            self.gru = DWSepConvGRU(hd, gin, cfg.gru_kernel)
        self.delta_head = _head(hd, cfg.head_dim, 2)
        self.weight_head = _head(hd, cfg.head_dim, 2)
        self.motion_head = _head(hd, cfg.head_dim, 1)
        self.flow_mask_head = nn.Sequential(_conv(hd, cfg.head_dim), nn.ReLU(inplace=True), _conv(cfg.head_dim, up, 1))
        self.agg_edge = _conv(hd, cfg.agg_dim)
        self.agg_frame = _conv(cfg.agg_dim, cfg.agg_dim)
        self.eta_head = _conv(cfg.agg_dim, 1)
        self.depth_mask_head = _conv(cfg.agg_dim, up, 1)

    def forward(self, net: torch.Tensor, inp: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor) -> UpdateOutput:
        """One step.  ``net (E, hidden, h, w)``, ``inp (E, context, h, w)``,
        ``corr (E, levels (2r+1)^2, h, w)``, ``flow (E, 2, h, w)`` -> :class:`UpdateOutput`."""
        flow = flow.clamp(-self.cfg.flow_clip, self.cfg.flow_clip)
        feats = torch.cat([self.corr_enc(corr), self.flow_enc(flow)], 1)
        motion = torch.cat([self.motion_enc(feats), flow], 1)
        net = self.gru(net, torch.cat([inp, motion], 1))
        delta = self.delta_head(net).permute(0, 2, 3, 1)
        weight = torch.sigmoid(self.weight_head(net)).permute(0, 2, 3, 1)
        motion_logit = self.motion_head(net)[:, 0]
        return UpdateOutput(net=net, delta=delta, weight=weight, motion_logit=motion_logit)

    def flow_mask(self, net: torch.Tensor) -> torch.Tensor:
        """Per-edge upsampling logits ``(E, 9 * 8 * 8, h, w)`` for :func:`upsample` of the flow."""
        return self.flow_mask_head(net)

    def aggregate(self, net: torch.Tensor, ii: torch.Tensor) -> FrameOutput:
        """Pool hidden states ``(E, hidden, h, w)`` over each source frame ``ii (E,)`` -> :class:`FrameOutput`."""
        frames, pooled = pool_per_frame(F.relu(self.agg_edge(net)), ii)
        x = F.relu(self.agg_frame(pooled))
        eta = self.cfg.eta_scale * F.softplus(self.eta_head(x))[:, 0]
        return FrameOutput(frames=frames, eta=eta, mask=self.depth_mask_head(x))


def upsample(x: torch.Tensor, mask: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Convex upsampling: each of the ``s x s`` full-resolution pixels of a
    feature pixel is a convex combination of the 3x3 feature neighbours.

    Args:
        x: ``(N, D, h, w)`` field at feature resolution (values are not
            rescaled: multiply a flow by ``stride`` for image pixels).
        mask: ``(N, 9 * s * s, h, w)`` logits; channel ``k * s * s + a * s + b``
            weighs neighbour ``k = (dy + 1) * 3 + (dx + 1)`` for the
            sub-pixel in row ``a``, column ``b``; softmax over ``k``.
        stride: ``s``.
    Returns:
        ``(N, D, s h, s w)``.  Borders replicate ``x``, so a constant field
        stays constant everywhere.
    """
    N, D, h, w = x.shape
    s = stride
    if mask.shape != (N, 9 * s * s, h, w):
        raise ValueError(f"mask shape {tuple(mask.shape)} != {(N, 9 * s * s, h, w)}")
    weights = torch.softmax(mask.view(N, 1, 9, s, s, h, w), dim=2)
    nbrs = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3).view(N, D, 9, 1, 1, h, w)
    up = (weights * nbrs).sum(2)                                   # (N, D, s, s, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(N, D, s * h, s * w)


def bilinear_mask(h: int, w: int, stride: int = STRIDE, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """``(1, 9 * s * s, h, w)`` logits for which :func:`upsample` is bilinear interpolation.

    Pixel-centre convention: full-resolution pixel ``X = s u + a`` sits at
    feature coordinate ``u + (a - (s - 1) / 2) / s``.  Zero weights are ``-inf``
    logits.  Useful as a learning-free fallback and in tests.
    """
    s = stride
    t = (torch.arange(s, dtype=torch.float64) - (s - 1) / 2) / s                # (s,) offsets in (-1/2, 1/2)
    w1 = torch.stack([(-t).clamp(min=0), 1 - t.abs(), t.clamp(min=0)])           # (3, s): weight of -1, 0, +1
    w2 = w1[:, None, :, None] * w1[None, :, None, :]                              # (3 dy, 3 dx, s a, s b)
    logits = torch.log(w2).reshape(9 * s * s, 1, 1).to(dtype)
    return logits.expand(9 * s * s, h, w).unsqueeze(0).contiguous().to(device)
