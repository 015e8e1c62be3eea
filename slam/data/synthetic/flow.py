"""Exact ground-truth optical flow between two rendered frames.

For every pixel of frame i with a hit, the 3D point is back-projected from its
depth, moved with the motion of what it lies on (nothing for static geometry,
``T_wo(j) T_wo(i)^-1`` for mover k), and projected into frame j.  The flow is
valid where the point lands inside frame j in front of the camera and is
visible there: the depth rendered at the nearest pixel of frame j agrees with
the point's depth within a tolerance and shows the same object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slam.data.synthetic.render import LABEL_STATIC
from slam.geometry.camera import Intrinsics
from slam.geometry.pose import invert


@dataclass(frozen=True)
class FlowParams:
    """Visibility test tolerances."""

    depth_rel_tol: float = 0.03   # relative depth difference allowed in the occlusion test
    depth_abs_tol: float = 0.01   # plus this many metres
    min_depth: float = 1e-3       # points closer than this to camera j are invalid


def backproject(depth: np.ndarray, K: Intrinsics) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) camera-frame points (pixel-centre convention)."""
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    z = depth.astype(np.float64)
    return np.stack([(u - K.cx) / K.fx * z, (v - K.cy) / K.fy * z, z], -1)


def ground_truth_flow(K: Intrinsics, T_wc_i: np.ndarray, T_wc_j: np.ndarray, depth_i: np.ndarray,
                      label_i: np.ndarray, depth_j: np.ndarray, label_j: np.ndarray,
                      objects_i: np.ndarray | None = None, objects_j: np.ndarray | None = None,
                      params: FlowParams = FlowParams()) -> tuple[np.ndarray, np.ndarray]:
    """Flow from frame i to frame j.

    Args:
        K: intrinsics of both frames.
        T_wc_i, T_wc_j: (4, 4) camera-to-world poses.
        depth_i, depth_j: (H, W) depth (0 where nothing was hit).
        label_i, label_j: (H, W) labels (-1 nothing, 0 static, k + 1 mover k).
        objects_i, objects_j: (M, 4, 4) world-from-object poses of the movers at i and j.
    Returns:
        ``(flow (H, W, 2) float32, valid (H, W) bool)``: pixel ``(u, v)`` of frame i is at
        ``(u + flow[v, u, 0], v + flow[v, u, 1])`` in frame j.  The flow is also filled for
        occluded and out-of-view points; it is 0 where nothing was hit or the point is behind
        camera j.
    """
    H, W = depth_i.shape
    X = backproject(depth_i, K).reshape(-1, 3)
    lab = label_i.reshape(-1).astype(np.int64)
    # frame-i camera -> world -> (object motion) -> frame-j camera, one 4x4 per label
    T_ji = invert(T_wc_j) @ T_wc_i
    n_obj = 0 if objects_i is None else len(objects_i)
    transforms = np.tile(T_ji, (n_obj + 1, 1, 1))
    for k in range(n_obj):
        transforms[k + 1] = invert(T_wc_j) @ objects_j[k] @ invert(objects_i[k]) @ T_wc_i
    A = transforms[np.clip(lab, 0, n_obj)]
    Y = np.einsum("nij,nj->ni", A[:, :3, :3], X) + A[:, :3, 3]
    z = Y[:, 2]
    zs = np.where(z > params.min_depth, z, 1.0)
    u2 = K.fx * Y[:, 0] / zs + K.cx
    v2 = K.fy * Y[:, 1] / zs + K.cy
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    flow = np.stack([u2 - u.ravel(), v2 - v.ravel()], -1)
    computable = (lab >= LABEL_STATIC) & (depth_i.reshape(-1) > 0) & (z > params.min_depth)
    valid = computable.copy()
    valid &= (u2 > -0.5) & (u2 < W - 0.5) & (v2 > -0.5) & (v2 < H - 0.5)
    ui = np.clip(np.rint(u2), 0, W - 1).astype(np.int64)
    vi = np.clip(np.rint(v2), 0, H - 1).astype(np.int64)
    dj = depth_j[vi, ui].astype(np.float64)
    valid &= np.abs(dj - z) <= params.depth_rel_tol * z + params.depth_abs_tol
    valid &= label_j[vi, ui] == lab
    flow[~computable] = 0.0  # occluded and out-of-view points keep their (exact) flow
    return flow.reshape(H, W, 2).astype(np.float32), valid.reshape(H, W)
