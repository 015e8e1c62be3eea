"""Loss terms of the three training modes (plain torch, differentiable).

Shapes follow :mod:`slam.net`: E edges, feature resolution ``h x w``, image
resolution ``H x W``, coordinates channel-last ``(..., 2)`` pixel-centre
``(u, v)``; flows channel-first ``(E, 2, H, W)`` where noted.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from slam.geometry.lie import compose, inverse


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(mask x) / max(sum(mask), 1)`` (mask broadcast to x)."""
    mask = mask.to(x.dtype).expand_as(x)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def geodesic_loss(poses: torch.Tensor, poses_gt: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor,
                  eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Error of the relative poses of the edges.

    Args:
        poses, poses_gt: (F, 7) world-to-camera ``[t, q]`` (plain tensors).
        ii, jj: (E,) edges.
    Returns:
        ``(loss, rot_err, trans_err)``: ``loss = mean |t_err| + mean angle`` of
        ``E_ij = (G_ij^gt)^{-1} G_ij`` with ``G_ij = G_j G_i^{-1}``; ``rot_err``
        (E,) radians and ``trans_err`` (E,) (normalised scene units), detached.
    """
    rel = compose(poses[jj], inverse(poses[ii]))
    rel_gt = compose(poses_gt[jj], inverse(poses_gt[ii]))
    err = compose(inverse(rel_gt), rel)
    t = torch.sqrt((err[:, :3] ** 2).sum(-1) + eps)
    v = torch.sqrt((err[:, 3:6] ** 2).sum(-1) + eps)
    ang = 2.0 * torch.atan2(v, err[:, 6].abs())
    return t.mean() + ang.mean(), ang.detach(), t.detach()


def mixture_nll(err: torch.Tensor, weight: torch.Tensor, sigma: float, outlier_range: float) -> torch.Tensor:
    """Negative log-likelihood of errors under a Gaussian-inlier / uniform-outlier mixture.

    ``p(e) = w N(e; 0, sigma^2) + (1 - w) / outlier_range`` per coordinate, with
    the inlier probability ``w`` the network's confidence.  Gradients reach
    both ``w`` (it learns how often a correspondence is an inlier at that
    error) and ``e`` (a robust, responsibility-weighted pull towards 0).

    Args:
        err: (...) errors (same units as ``sigma``).
        weight: (...) confidences in (0, 1).
        sigma: inlier standard deviation.
        outlier_range: width of the uniform outlier density.
    Returns:
        (...) per-element NLL (>= a constant; 0-mean-free).
    """
    log_in = torch.log(weight.clamp(min=1e-6)) - 0.5 * (err / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
    log_out = torch.log((1.0 - weight).clamp(min=1e-6)) - math.log(outlier_range)
    return -torch.logaddexp(log_in, log_out)


def ssim(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """Per-pixel SSIM over 3x3 windows of (N, C, H, W) images in [0, 1] -> (N, C, H, W)."""
    pad = (1, 1, 1, 1)
    x, y = F.pad(x, pad, mode="reflect"), F.pad(y, pad, mode="reflect")
    mx, my = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sx = F.avg_pool2d(x * x, 3, 1) - mx * mx
    sy = F.avg_pool2d(y * y, 3, 1) - my * my
    sxy = F.avg_pool2d(x * y, 3, 1) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sx + sy + c2)
    return (num / den).clamp(-1, 1)


def photometric_error(a: torch.Tensor, b: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """``alpha (1 - SSIM) / 2 + (1 - alpha) |a - b|`` averaged over channels: (N, 3, H, W) -> (N, H, W)."""
    return (alpha * (1.0 - ssim(a, b)) / 2.0 + (1.0 - alpha) * (a - b).abs()).mean(1)


def warp(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``x (N, C, H, W)`` at ``p + flow(p)`` (bilinear, pixel-centre convention).

    Args:
        flow: (N, 2, H, W) in pixels of ``x``.
    Returns:
        ``(warped (N, C, H, W), inside (N, H, W) bool)``.
    """
    _, _, H, W = flow.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=flow.dtype, device=flow.device),
                          torch.arange(W, dtype=flow.dtype, device=flow.device), indexing="ij")
    px = u + flow[:, 0]
    py = v + flow[:, 1]
    grid = torch.stack([2.0 * px / max(W - 1, 1) - 1.0, 2.0 * py / max(H - 1, 1) - 1.0], -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = (px > -0.5) & (px < W - 0.5) & (py > -0.5) & (py < H - 0.5)
    return out, inside


def smoothness(flow: torch.Tensor, image: torch.Tensor, edge: float = 10.0) -> torch.Tensor:
    """Edge-aware first-order smoothness of ``flow (N, 2, H, W)`` given ``image (N, 3, H, W)`` in [0, 1]."""
    dfx = (flow[..., :, 1:] - flow[..., :, :-1]).abs().mean(1)
    dfy = (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean(1)
    wx = torch.exp(-edge * (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1))
    wy = torch.exp(-edge * (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1))
    return (dfx * wx).mean() + (dfy * wy).mean()


def pair_index(ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """(E,) index of the reverse edge ``(j, i)`` of every edge (-1 when absent)."""
    m = int(torch.maximum(ii.max(), jj.max())) + 1 if ii.numel() else 1
    key = ii * m + jj
    rkey = jj * m + ii
    order = torch.argsort(key)
    pos = torch.searchsorted(key[order], rkey).clamp(max=max(key.numel() - 1, 0))
    found = key[order][pos] == rkey
    return torch.where(found, order[pos], torch.full_like(pos, -1))
