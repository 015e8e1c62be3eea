"""Depth accuracy after median scale alignment (monocular depth has no absolute scale).

For a frame with valid pixels ``V`` the prediction is scaled by
``s = median(gt[V]) / median(pred[V])`` (per frame, or one ``s`` for the whole
sequence with ``per_frame=False``, computed over the valid pixels of all
frames), then

* ``abs_rel = mean_V |s * pred - gt| / gt``
* ``delta_1.25 = mean_V [max(s * pred / gt, gt / (s * pred)) < 1.25]``

are computed per frame and averaged over the frames that have valid pixels
(every frame counts the same, as in the usual KITTI / Sintel protocols).
"""
from __future__ import annotations

import numpy as np


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, *, per_frame: bool = True,
                  max_depth: float | None = None) -> dict[str, float]:
    """Median-scaled depth errors (see the module docstring).

    Args:
        pred: (N, H, W) or (H, W) predicted depth (any scale).
        gt: same shape, ground-truth depth; pixels with ``gt <= 0`` or non-finite are ignored.
        valid: optional same-shape bool mask further restricting the pixels.
        per_frame: median scale per frame (True) or one for the sequence (False).
        max_depth: ignore ground truth beyond this depth (None: no cap).
    Returns:
        ``{"abs_rel", "delta_1.25", "frames", "pixels", "scale"}``: the averaged
        metrics (NaN when no pixel is valid), the number of frames and pixels
        used, and the median of the applied scale factors.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape} but gt {gt.shape}")
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
        valid = None if valid is None else np.asarray(valid)[None]
    ok = np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)
    if max_depth is not None:
        ok &= gt <= max_depth
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool).reshape(ok.shape)
    nan = {"abs_rel": float("nan"), "delta_1.25": float("nan"), "frames": 0, "pixels": 0, "scale": float("nan")}
    if not ok.any():
        return nan
    if not per_frame:
        s_seq = np.median(gt[ok]) / np.median(pred[ok])
    abs_rel, delta, scales = [], [], []
    for k in range(pred.shape[0]):
        m = ok[k]
        if not m.any():
            continue
        p, g = pred[k][m], gt[k][m]
        s = np.median(g) / np.median(p) if per_frame else s_seq
        p = s * p
        abs_rel.append(np.mean(np.abs(p - g) / g))
        delta.append(np.mean(np.maximum(p / g, g / p) < 1.25))
        scales.append(s)
    return {"abs_rel": float(np.mean(abs_rel)), "delta_1.25": float(np.mean(delta)), "frames": len(abs_rel),
            "pixels": int(ok.sum()), "scale": float(np.median(scales))}
