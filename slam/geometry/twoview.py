"""Two-view initialisation from dense correspondences: essential matrix,
relative pose and triangulated inverse depth.

Used to start the frontend's initialisation far from the degenerate "identity
poses, constant depth" guess, which falls into wrong local minima under
forward motion.

Conventions: pixel centres at integer coordinates; ``K = [fx, fy, cx, cy]``
of the resolution the correspondences are given at; the returned pose is the
**world-to-camera** pose of frame b with frame a as the world
(``X_b = R X_a + t``), ``|t| = 1``; inverse depths are of frame a's pixels in
that unit.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class TwoView:
    """Result of :func:`two_view`.

    Attributes:
        R: (3, 3) rotation a -> b;  t: (3,) unit translation a -> b.
        disp: (h, w) inverse depth of frame a (0 where not triangulated).
        valid: (h, w) bool, inlier pixels with a triangulated point in front of both cameras.
        inlier_ratio: share of the candidate pixels that are RANSAC inliers.
        parallax_deg: median triangulation angle of the valid pixels (degrees).
    """

    R: np.ndarray
    t: np.ndarray
    disp: np.ndarray
    valid: np.ndarray
    inlier_ratio: float
    parallax_deg: float


def two_view(target: np.ndarray, weight: np.ndarray, K: np.ndarray, *, min_weight: float = 0.5,
             ransac_px: float = 0.5, confidence: float = 0.999, seed: int = 0) -> TwoView | None:
    """Relative pose and depths of frame a from dense correspondences a -> b.

    Args:
        target: (h, w, 2) coordinates in frame b of every pixel ``(u, v)`` of frame a.
        weight: (h, w) confidence of each correspondence in [0, 1].
        K: (4,) intrinsics ``[fx, fy, cx, cy]`` at this resolution.
        min_weight: correspondences below this confidence are not used.
        ransac_px: RANSAC inlier threshold in pixels of this resolution.
        confidence: RANSAC confidence.
        seed: OpenCV's RNG seed (results are deterministic).
    Returns:
        A :class:`TwoView`, or None when there are too few correspondences or
        the essential matrix cannot be estimated.
    """
    h, w = target.shape[:2]
    fx, fy, cx, cy = (float(x) for x in K)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    sel = weight >= min_weight
    if int(sel.sum()) < 16:
        return None
    xa = np.stack([(u[sel] - cx) / fx, (v[sel] - cy) / fy], -1)
    tb = target[sel].astype(np.float64)
    xb = np.stack([(tb[:, 0] - cx) / fx, (tb[:, 1] - cy) / fy], -1)
    f = 0.5 * (fx + fy)
    cv2.setRNGSeed(seed)
    E, mask = cv2.findEssentialMat(xa, xb, np.eye(3), method=cv2.RANSAC, prob=confidence,
                                   threshold=ransac_px / f)
    if E is None or E.shape != (3, 3):
        return None
    inl = mask.ravel().astype(bool)
    _, R, t, _ = cv2.recoverPose(E, xa[inl], xb[inl], np.eye(3))
    t = t.ravel() / max(np.linalg.norm(t), 1e-12)
    disp_sel, angle = triangulate_inverse_depth(xa, xb, R, t)
    ok = inl & (disp_sel > 0) & np.isfinite(disp_sel)
    disp = np.zeros((h, w))
    valid = np.zeros((h, w), bool)
    idx = np.flatnonzero(sel)
    disp.flat[idx[ok]] = disp_sel[ok]
    valid.flat[idx[ok]] = True
    par = float(np.degrees(np.median(angle[ok]))) if ok.any() else 0.0
    return TwoView(R, t, disp.astype(np.float32), valid, float(inl.mean()), par)


def triangulate_inverse_depth(xa: np.ndarray, xb: np.ndarray, R: np.ndarray,
                              t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse depth in frame a of the points seen at normalised coordinates xa (a) and xb (b).

    Least squares along the ray of a: the point ``X_a = r_a / d`` with
    ``r_a = [xa, 1]`` satisfies ``X_b = R r_a / d + t``; multiplying by ``d``,
    ``[xb, 1] * z = R r_a + t d`` is linear in ``(z, d)`` (z the depth ratio).

    Args:
        xa, xb: (N, 2) normalised image coordinates.  R: (3, 3), t: (3,) a -> b.
    Returns:
        ``(disp (N,), angle (N,))``: inverse depths (negative or inf where the
        point is behind a camera or at infinity) and triangulation angles (rad).
    """
    ra = np.concatenate([xa, np.ones((len(xa), 1))], 1)
    rb = np.concatenate([xb, np.ones((len(xb), 1))], 1)
    Rra = ra @ R.T                                    # (N, 3)
    # solve [rb, -t] [z, d]^T = Rra in least squares, per point (2x2 normal equations)
    a11 = (rb * rb).sum(1)
    a12 = -(rb @ t)
    a22 = float(t @ t) * np.ones(len(xa))
    b1 = (rb * Rra).sum(1)
    b2 = -(Rra @ t)
    det = a11 * a22 - a12 * a12
    z = (a22 * b1 - a12 * b2) / np.where(np.abs(det) < 1e-12, 1e-12, det)
    d = (a11 * b2 - a12 * b1) / np.where(np.abs(det) < 1e-12, 1e-12, det)
    d = np.where(z > 0, d, -1.0)
    # angle between the two viewing rays at the point (in frame b)
    ray_b = rb / np.linalg.norm(rb, axis=1, keepdims=True)
    ray_a_in_b = Rra / np.linalg.norm(Rra, axis=1, keepdims=True)
    # a's viewing ray expressed in b is R r_a: the parallax is its angle to b's ray
    cosang = np.clip((ray_b * ray_a_in_b).sum(1), -1.0, 1.0)
    return d, np.arccos(cosang)


def rotation_parallax(target: np.ndarray, weight: np.ndarray, K: np.ndarray, min_weight: float = 0.5) -> float:
    """Mean flow magnitude left after the best-fitting pure rotation (pixels of this resolution).

    The flow of a rotating camera carries no depth information; what a
    rotation cannot explain is parallax from translation.  The rotation
    maximising ``sum w c_i . R b_i`` over the unit bearings ``b_i`` of the
    pixels of frame a and ``c_i`` of their targets in b (Wahba's problem,
    solved by SVD) maps every pixel to ``K R b_i``; the weighted mean distance
    of the targets from those points is returned.

    Args:
        target: (h, w, 2) coordinates in frame b of every pixel ``(u, v)`` of
            frame a (pixel centres at integer coordinates).
        weight: (h, w) confidences in [0, 1]; pixels below ``min_weight`` are ignored.
        K: (4,) ``[fx, fy, cx, cy]`` at this resolution.
    Returns:
        The mean residual flow in pixels; ``inf`` with fewer than 8 usable pixels.
    """
    h, w = target.shape[:2]
    fx, fy, cx, cy = (float(x) for x in K)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    sel = np.asarray(weight) >= min_weight
    if int(sel.sum()) < 8:
        return float("inf")
    wt = np.asarray(weight, np.float64)[sel]
    tb = np.asarray(target, np.float64)[sel]
    ba = np.stack([(u[sel] - cx) / fx, (v[sel] - cy) / fy, np.ones(int(sel.sum()))], -1)
    bb = np.stack([(tb[:, 0] - cx) / fx, (tb[:, 1] - cy) / fy, np.ones(len(tb))], -1)
    ba /= np.linalg.norm(ba, axis=1, keepdims=True)
    bb /= np.linalg.norm(bb, axis=1, keepdims=True)
    U, _, Vt = np.linalg.svd((bb * wt[:, None]).T @ ba)  # B = sum w c b^T; R = U diag(1, 1, det) V^T
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    rb = ba @ R.T
    z = np.maximum(rb[:, 2], 1e-6)
    pred = np.stack([fx * rb[:, 0] / z + cx, fy * rb[:, 1] / z + cy], -1)
    return float((wt * np.linalg.norm(pred - tb, axis=1)).sum() / wt.sum())
