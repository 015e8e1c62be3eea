"""NumPy conversions between 4x4 rigid transforms and ``(t, q)`` vectors.

Quaternions are ``(qx, qy, qz, qw)`` (Hamilton, scalar last) as in TUM,
TartanAir, EuRoC-derived files and pypose.  These helpers are for I/O; the
optimisers work on pypose ``LieTensor`` s and rotation matrices.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def tq_to_matrix(tq: np.ndarray) -> np.ndarray:
    """(..., 7) ``[tx ty tz qx qy qz qw]`` -> (..., 4, 4) float64 transforms."""
    tq = np.asarray(tq, dtype=np.float64)
    shape = tq.shape[:-1]
    flat = tq.reshape(-1, 7)
    T = np.tile(np.eye(4), (flat.shape[0], 1, 1))
    T[:, :3, :3] = Rotation.from_quat(flat[:, 3:7]).as_matrix()
    T[:, :3, 3] = flat[:, :3]
    return T.reshape(*shape, 4, 4)


def matrix_to_tq(T: np.ndarray) -> np.ndarray:
    """(..., 4, 4) transforms -> (..., 7) ``[tx ty tz qx qy qz qw]`` with qw >= 0."""
    T = np.asarray(T, dtype=np.float64)
    shape = T.shape[:-2]
    flat = T.reshape(-1, 4, 4)
    q = Rotation.from_matrix(flat[:, :3, :3]).as_quat()
    q = np.where(q[:, 3:4] < 0, -q, q)
    return np.concatenate([flat[:, :3, 3], q], axis=1).reshape(*shape, 7)


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of (..., 4, 4) rigid transforms."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ t[..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


# TartanAir stores camera-to-world poses in NED axes (x forward, y right, z down)
# for both the camera body and the world.  NED_TO_CV maps NED coordinates to the
# OpenCV camera axes (x right, y down, z forward).  A TartanAir pose P_ned becomes
# the OpenCV-convention camera-to-world pose  T_wc = NED_TO_CV @ P_ned @ NED_TO_CV^T
# (the world frame is re-expressed with the same axis permutation).
NED_TO_CV = np.array([[0.0, 1.0, 0.0, 0.0],
                      [0.0, 0.0, 1.0, 0.0],
                      [1.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0]])


def ned_to_cv(P_ned: np.ndarray) -> np.ndarray:
    """TartanAir NED camera-to-world (..., 4, 4) -> OpenCV-convention camera-to-world."""
    return NED_TO_CV @ np.asarray(P_ned, dtype=np.float64) @ NED_TO_CV.T


def cv_to_ned(T_wc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ned_to_cv`."""
    return NED_TO_CV.T @ np.asarray(T_wc, dtype=np.float64) @ NED_TO_CV
