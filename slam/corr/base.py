"""The correspondence interface: where the frame graph's targets and weights come from.

For a frame-graph edge ``(i, j)`` a source returns, for every pixel of frame i
at *feature resolution* (the processing image divided by ``stride``, 8), the
target coordinates in frame j and per-pixel, per-coordinate confidence
weights; learned sources also return a motion probability and carry a
recurrent hidden state per edge.

The frontend and backend iterate

    coords = reproject(current poses, depths)          # (E, h, w, 2)
    out = source.update(frames, ii, jj, coords, state) # targets, weights, state
    bundle adjustment on out.target / out.weight

``classical`` and ``oracle`` ignore ``coords`` except as an initial guess and
keep no state, so one update per edge suffices (``iterative = False``); the
learned update operator refines its estimate each round (``iterative = True``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class FrameData:
    """What a source keeps per frame (keyframes and the frame being tracked).

    Attributes:
        index: input-frame index.
        image: (H, W, 3) uint8 RGB at processing resolution.
        features: source-specific per-frame data (e.g. a grey image pyramid,
            or the network's feature and context maps (C, h, w)).
    """

    index: int
    image: np.ndarray
    features: Any = None


@dataclass
class EdgeUpdate:
    """Result of :meth:`CorrespondenceSource.update` for E edges at h x w.

    Attributes:
        target: (E, h, w, 2) target pixel coordinates in frame j (feature resolution).
        weight: (E, h, w, 2) confidence weights in [0, 1].
        motion: optional (E, h, w) probability that the pixel moves independently.
        state: optional per-edge recurrent state (opaque; the graph stores it).
        checked: False when the weights only mark valid pixels and are not a
            consistency-checked confidence (the trajectory filler measures such
            frames again before calling them tracked).
    """

    target: torch.Tensor
    weight: torch.Tensor
    motion: torch.Tensor | None = None
    state: Any = None
    checked: bool = True


class CorrespondenceSource(ABC):
    """Base class.  ``stride`` is the ratio of processing to feature resolution."""

    name: str = "base"
    iterative: bool = False
    refines: bool = False  #: implements :meth:`refine` (a final re-measurement at the converged estimate)
    stride: int = 8

    @abstractmethod
    def prepare(self, index: int, image: np.ndarray) -> FrameData:
        """Per-frame preprocessing of a (H, W, 3) uint8 image at processing resolution."""

    @abstractmethod
    def update(self, frames_i: list[FrameData], frames_j: list[FrameData], coords: torch.Tensor,
               state: Any = None) -> EdgeUpdate:
        """Targets and weights for the edges ``frames_i[e] -> frames_j[e]``.

        Args:
            frames_i, frames_j: the E edges' endpoint frames.
            coords: (E, h, w, 2) current reprojected coordinates (initial guess).
            state: the edges' recurrent state from the last update, or None.
        """

    def mean_flow(self, a: FrameData, b: FrameData) -> float:
        """Mean optical-flow magnitude from a to b in feature pixels (motion filter)."""
        h, w = a.image.shape[0] // self.stride, a.image.shape[1] // self.stride
        grid = identity_coords(1, h, w)
        out = self.update([a], [b], grid)
        valid = out.weight[0, ..., 0] > 0
        mag = (out.target[0] - grid[0]).norm(dim=-1)
        return float(mag[valid].mean()) if valid.any() else float("inf")


    def refine(self, frames_i: list[FrameData], frames_j: list[FrameData], coords: torch.Tensor) -> EdgeUpdate:
        """Re-measure the edges near ``coords`` (E, h, w, 2), the reprojection at a converged
        estimate; only sources with ``refines = True`` implement it (the backend's final
        refinement and the filler's re-measurement ask for it)."""
        raise NotImplementedError(f"{self.name} does not refine its correspondences")

    def ahead(self, index: int, image: np.ndarray) -> FrameData | None:
        """Called by the reader thread for every frame of the tracking stream, in order, before the
        frontend sees it: a source may prepare the frame there and start work that needs only the
        consecutive frames (classical: the motion filter's flow).  Returns the prepared frame for
        the frontend, or None (the default: the frontend calls :meth:`prepare` itself)."""
        return None

    def close(self) -> None:
        """Release what the source holds beyond its results (worker threads); it stays usable."""

    def frame_edge(self, keyframe: FrameData, frame: FrameData, accurate: bool = False) -> EdgeUpdate:
        """Correspondences keyframe -> frame for a tracked non-keyframe (one edge),
        called right after :meth:`mean_flow` on the same pair, so sources can
        reuse the motion filter's work.  The trajectory filler refines the
        frame's pose against them.  ``accurate``: the caller decides with them
        whether the frame becomes a keyframe (rotation parallax), so a source
        with a cheap record mode must give its checked correspondences."""
        h, w = keyframe.image.shape[0] // self.stride, keyframe.image.shape[1] // self.stride
        return self.update([keyframe], [frame], identity_coords(1, h, w))


def compose_targets(t_ab: torch.Tensor, w_ab: torch.Tensor, t_bc: torch.Tensor,
                    w_bc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain correspondences a->b and b->c into a->c (feature resolution).

    The target of pixel x of a in c is ``t_bc`` sampled bilinearly at
    ``t_ab(x)`` (pixel-centre coordinates); the weight is the product of the
    two weights, 0 where ``t_ab(x)`` falls outside b.

    Args:
        t_ab, t_bc: (h, w, 2) targets; w_ab, w_bc: (h, w, 2) weights.
    Returns:
        ``(t_ac (h, w, 2), w_ac (h, w, 2))``.
    """
    h, w = t_ab.shape[:2]
    grid = torch.stack([t_ab[..., 0] / max(w - 1, 1) * 2 - 1, t_ab[..., 1] / max(h - 1, 1) * 2 - 1], -1)[None]
    field = torch.cat([t_bc, w_bc], -1).permute(2, 0, 1)[None]
    out = torch.nn.functional.grid_sample(field, grid.to(field.dtype), mode="bilinear", padding_mode="zeros",
                                          align_corners=True)[0].permute(1, 2, 0)
    inside = ((t_ab[..., 0] >= 0) & (t_ab[..., 0] <= w - 1) & (t_ab[..., 1] >= 0) & (t_ab[..., 1] <= h - 1))
    return out[..., :2], w_ab * out[..., 2:] * inside[..., None]


def identity_coords(n: int, h: int, w: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, h, w, 2) pixel-centre coordinates ``(u, v)``."""
    v, u = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return torch.stack([u, v], -1).expand(n, h, w, 2).clone()


def flow_to_feature(flow: np.ndarray, valid: np.ndarray, stride: int, mode: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Reduce a full-resolution flow field to feature resolution.

    ``mode="mean"`` averages each ``stride x stride`` block (robust to noise);
    ``mode="center"`` averages only the 2x2 pixels around the block centre,
    which is the flow *at* the centre wherever the flow is locally affine and
    does not mix depths across the block (exact flow, e.g. the oracle); the
    returned fraction is then 1 only where all four are valid and agree
    within one pixel.

    Pixel-centre convention: feature pixel ``(u, v)`` covers image pixels
    ``[s u, s u + s)``; its centre is image coordinate ``s u + (s - 1) / 2``
    and the mean of the block's flows is the flow at that centre, so the
    target in feature coordinates is ``(u, v) + mean_flow / s``.

    Args:
        flow: (H, W, 2) flow in image pixels; valid: (H, W) bool or [0, 1].
    Returns:
        ``(target (h, w, 2), fraction_valid (h, w))`` with h = H // s, w = W // s.
    """
    H, W = flow.shape[:2]
    h, w = H // stride, W // stride
    if mode == "center":
        c = stride // 2
        f4 = np.stack([flow[c - 1 + dy: h * stride: stride, c - 1 + dx: w * stride: stride][:h, :w]
                       for dy in (0, 1) for dx in (0, 1)])
        v4 = np.stack([np.asarray(valid)[c - 1 + dy: h * stride: stride, c - 1 + dx: w * stride: stride][:h, :w]
                       for dy in (0, 1) for dx in (0, 1)]).astype(bool)
        mean = f4.mean(0)
        agree = (np.abs(f4 - mean).max(axis=(0, 3)) < 1.0) & v4.all(0)
        v, u = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        return (np.stack([u, v], -1) + mean / stride).astype(np.float32), agree.astype(np.float32)
    import cv2

    # block means by area resampling (exact for an integer factor, and much faster than numpy reductions)
    m = np.ascontiguousarray(valid[: h * stride, : w * stride], dtype=np.float32)
    fm = np.ascontiguousarray(flow[: h * stride, : w * stride], dtype=np.float32) * m[..., None]
    share = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)
    mean = cv2.resize(fm, (w, h), interpolation=cv2.INTER_AREA) / np.maximum(share, 1e-6)[..., None]
    v, u = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    target = np.stack([u, v], -1) + mean / stride
    return target.astype(np.float32), share.astype(np.float32)
