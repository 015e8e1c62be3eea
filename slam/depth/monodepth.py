"""The project's own monocular depth network: a small U-Net predicting inverse
depth up to scale and shift, trained on the synthetic worlds.

Model: four stride-2 encoder stages (``width``, 2, 4, 8 x ``width`` channels,
down to 1/16 resolution), a decoder that upsamples bilinearly and fuses the
encoder's skip connections, and a softplus head giving a non-negative
inverse depth at the input resolution.  Images are fed as RGB in [0, 1],
normalised with a fixed mean and standard deviation; sides must be multiples
of 16 (:meth:`MonoDepthNet.predict` pads).

Loss (:func:`ssi_loss`): MiDaS-style scale- and shift-invariant L1 on inverse
depth, the prediction aligned to the ground truth per image by least squares
before the error is taken, plus the same on image gradients (multi-scale
gradient matching) for sharp depth edges.

Checkpoints (``torch.save`` dicts) hold ``state_dict``, ``config`` (the
constructor's keyword arguments) and ``provenance`` (command, seed, steps,
time, device, data); :func:`load_monodepth` gives one-line errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from slam.data.sequence import InputError

#: Shipped weights (trained by ``tools/train_monodepth.py``, see ``weights/README.md``).
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "monodepth_small.pt"
#: (W, H) the shipped weights were trained at (tools/train_monodepth.py); checkpoints that record
#: their own (``provenance["train_size"]``, written by ``slam adapt-depth``) override it
SHIPPED_TRAIN_SIZE = (128, 96)
_MEAN, _STD = 0.45, 0.225


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(max(1, cout // 8), cout), nn.ReLU(True),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(max(1, cout // 8), cout), nn.ReLU(True))


class MonoDepthNet(nn.Module):
    """Small U-Net: (B, 3, H, W) RGB in [0, 1] -> (B, H, W) inverse depth (>= 0, up to scale and shift).

    Args:
        width: channels of the first stage (the others are 2, 4 and 8 times it).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        c = [width, 2 * width, 4 * width, 8 * width]
        self.enc = nn.ModuleList([_block(3, c[0], 2), _block(c[0], c[1], 2), _block(c[1], c[2], 2),
                                  _block(c[2], c[3], 2)])
        self.dec = nn.ModuleList([_block(c[3] + c[2], c[2], 1), _block(c[2] + c[1], c[1], 1),
                                  _block(c[1] + c[0], c[0], 1)])
        self.head = nn.Conv2d(c[0], 1, 3, 1, 1)
        self.config = {"width": width}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - _MEAN) / _STD
        skips = []
        for stage in self.enc:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for stage in self.dec:
            s = skips.pop()
            x = stage(torch.cat([F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False), s], 1))
        x = F.interpolate(self.head(x), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return F.softplus(x[:, 0])

    @torch.no_grad()
    def predict(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W) float32 inverse depth of one (H, W, 3) uint8 RGB image.

        The image is resized to ``size`` (W, H) when given (else its own size),
        padded to multiples of 16 by edge replication, and the result resized back.
        """
        H, W = image.shape[:2]
        w, h = size or (W, H)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        if (w, h) != (W, H):
            x = F.interpolate(x, size=(h, w), mode="area")
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out = self.eval()(x.to(next(self.parameters()).device))[:, :h, :w]
        if (w, h) != (W, H):
            out = F.interpolate(out[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        return out[0].float().cpu().numpy()


def align_least_squares(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``s * pred + t`` with per-image ``(s, t)`` minimising the masked squared error to ``target``.

    Args:
        pred, target: (B, H, W); mask: (B, H, W) bool.
    """
    m = mask.float()
    n = m.sum((1, 2)).clamp(min=1)
    a00 = (m * pred * pred).sum((1, 2))
    a01 = (m * pred).sum((1, 2))
    b0 = (m * pred * target).sum((1, 2))
    b1 = (m * target).sum((1, 2))
    det = (a00 * n - a01 * a01).clamp(min=1e-9)
    s = (n * b0 - a01 * b1) / det
    t = (a00 * b1 - a01 * b0) / det
    return s[:, None, None] * pred + t[:, None, None]


def ssi_loss(pred: torch.Tensor, target_inv: torch.Tensor, mask: torch.Tensor, grad_weight: float = 0.5,
             scales: int = 3) -> torch.Tensor:
    """Scale- and shift-invariant L1 on inverse depth plus gradient matching.

    Args:
        pred: (B, H, W) predicted inverse depth; target_inv: (B, H, W) ground truth
            inverse depth (0 = infinitely far); mask: (B, H, W) bool, pixels to use.
        grad_weight: weight of the gradient term; scales: its number of scales.
    """
    aligned = align_least_squares(pred, target_inv, mask)
    scale = (target_inv * mask).sum((1, 2)) / mask.float().sum((1, 2)).clamp(min=1)
    scale = scale.clamp(min=1e-6)[:, None, None]
    r = (aligned - target_inv) / scale  # relative to the image's mean inverse depth
    m = mask.float()
    loss = (r.abs() * m).sum() / m.sum().clamp(min=1)
    for k in range(scales):
        if k:
            r = F.avg_pool2d(r[:, None], 2)[:, 0]
            m = (F.avg_pool2d(m[:, None], 2)[:, 0] > 0.99).float()
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
        gy = (r[:, 1:] - r[:, :-1]).abs() * m[:, 1:] * m[:, :-1]
        loss = loss + grad_weight * (gx.sum() + gy.sum()) / m.sum().clamp(min=1)
    return loss


def save_monodepth(path: str | Path, model: MonoDepthNet, provenance: dict[str, Any]) -> Path:
    """Write a checkpoint (see the module docstring)."""
    from slam.io.outputs import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # --eval-only rewrites the shipped file: never leave it half-written
        torch.save({"kind": "monodepth", "config": model.config, "state_dict": model.state_dict(),
                    "provenance": provenance}, tmp)
    return path


def load_monodepth(path: str | Path | None = None, device: str | torch.device = "cpu") -> MonoDepthNet:
    """Load a checkpoint (default: the shipped weights).

    The model's ``train_size`` attribute is the (W, H) recorded in the
    checkpoint's provenance (``train_size``), else :data:`SHIPPED_TRAIN_SIZE`.

    Raises:
        InputError: missing, unreadable, not a monodepth checkpoint, or not matching the model.
    """
    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        raise InputError(f"{path}: monodepth weights not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise InputError(f"{path}: not a readable checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ck, dict) or ck.get("kind") != "monodepth":
        raise InputError(f"{path}: not a monodepth checkpoint")
    try:
        model = MonoDepthNet(**ck.get("config", {}))
        model.load_state_dict(ck["state_dict"])
    except (TypeError, KeyError, RuntimeError) as e:
        raise InputError(f"{path}: checkpoint does not match the monodepth network ({e.__class__.__name__})") from None
    size = (ck.get("provenance") or {}).get("train_size")
    try:
        model.train_size = (int(size[0]), int(size[1])) if size else SHIPPED_TRAIN_SIZE
    except (TypeError, ValueError, IndexError):
        raise InputError(f"{path}: bad train_size {size!r} in the checkpoint's provenance") from None
    return model.to(device).eval()
