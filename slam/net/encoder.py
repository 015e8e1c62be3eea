"""Feature and context encoders: images -> 1/8-resolution maps.

Both are a strided stem convolution followed by stages of residual blocks
(the first block of a stage carries the stage's stride).  The feature encoder
uses instance normalisation (no affine parameters, so convolutions followed
by it have no bias); the context encoder uses no normalisation at all (no
batch statistics: the network behaves identically for one frame or many).

Input images are ``(B, 3, H, W)`` RGB floats in the uint8 range ``[0, 255]``
and are normalised inside the module to ``[-1, 1]``.  ``H`` and ``W`` should be
multiples of 8; the output is ``(B, C, ceil(H / 8), ceil(W / 8))`` (for
multiples of 8 exactly ``H / 8 x W / 8``, and feature pixel ``(u, v)`` covers
image pixels ``[8u, 8u + 8) x [8v, 8v + 8)``, see :mod:`slam.corr.base`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection; ``(B, cin, H, W) -> (B, cout, H/s, W/s)``.

    The skip is a strided 1x1 convolution when the shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "none") -> None:
        super().__init__()
        bias = norm == "none"  # a bias before instance norm is cancelled by it
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.norm1 = _norm(norm, cout)
        self.norm2 = _norm(norm, cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), _norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)), inplace=True)
        y = self.norm2(self.conv2(y))
        return F.relu(self.skip(x) + y, inplace=True)


class Encoder(nn.Module):
    """Stem + residual stages + 1x1 output projection.

    Args:
        dims: widths ``(stem, stage_1, ..., stage_n)``.
        strides: strides of ``(stem, stage_1, ..., stage_n)`` (product 8).
        out_dim: channels of the output map.
        blocks: residual blocks per stage.
        norm: ``"instance"`` or ``"none"``.
        stem_kernel: stem convolution kernel size.
    """

    def __init__(self, dims: tuple[int, ...], strides: tuple[int, ...], out_dim: int, blocks: int = 1,
                 norm: str = "none", stem_kernel: int = 7) -> None:
        super().__init__()
        bias = norm == "none"
        self.stem = nn.Sequential(
            nn.Conv2d(3, dims[0], stem_kernel, stride=strides[0], padding=stem_kernel // 2, bias=bias),
            _norm(norm, dims[0]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = dims[0]
        for cout, stride in zip(dims[1:], strides[1:]):
            for b in range(blocks):
                layers.append(ResidualBlock(cin, cout, stride if b == 0 else 1, norm))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.out = nn.Conv2d(cin, out_dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` floats in [0, 255] -> ``(B, out_dim, H/8, W/8)``."""
        x = images / 127.5 - 1.0
        return self.out(self.stages(self.stem(x)))


class FeatureEncoder(Encoder):
    """Correlation features ``(B, feature_dim, H/8, W/8)``; instance-normalised trunk."""

    def __init__(self, dims: tuple[int, ...], strides: tuple[int, ...], feature_dim: int, blocks: int = 1,
                 stem_kernel: int = 7) -> None:
        super().__init__(dims, strides, feature_dim, blocks, "instance", stem_kernel)


class ContextEncoder(Encoder):
    """Context of a frame, split into the GRU's initial hidden state and its per-step input.

    ``forward`` returns ``(net (B, hidden_dim, h, w) in (-1, 1) via tanh,
    inp (B, context_dim, h, w) >= 0 via relu)``.
    """

    def __init__(self, dims: tuple[int, ...], strides: tuple[int, ...], hidden_dim: int, context_dim: int,
                 blocks: int = 1, stem_kernel: int = 7) -> None:
        super().__init__(dims, strides, hidden_dim + context_dim, blocks, "none", stem_kernel)
        self.hidden_dim = hidden_dim

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x = super().forward(images)
        net, inp = x.split([self.hidden_dim, x.shape[1] - self.hidden_dim], dim=1)
        return torch.tanh(net), F.relu(inp)
