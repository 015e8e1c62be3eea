"""SE(3) / Sim(3) helpers on top of pypose.

Conventions
-----------
* Poses are pypose ``SE3`` LieTensors, data layout ``[tx, ty, tz, qx, qy, qz, qw]``.
* The SLAM system stores **world-to-camera** poses ``G_i`` (a world point
  ``p_w`` is ``G_i * p_w`` in camera i); outputs convert to camera-to-world.
* Twists are pypose ``se3`` vectors ``[tau (3, translation), phi (3, rotation)]``.
* Updates are **left** perturbations: ``G <- Exp(xi) * G``.  With this choice
  the adjoint of ``T = (R, t)`` is ``Ad_T = [[R, [t]_x R], [0, R]]`` so that
  ``T * Exp(xi) = Exp(Ad_T xi) * T``.
"""
from __future__ import annotations

import pypose as pp
import torch


def identity_poses(n: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> pp.LieTensor:
    """(n,) identity SE3 poses."""
    return pp.identity_SE3(n, device=device, dtype=dtype)


def retract(poses: pp.LieTensor, xi: torch.Tensor) -> pp.LieTensor:
    """Left retraction ``Exp(xi) * poses`` for (..., 7) poses and (..., 6) twists."""
    return pp.se3(xi).Exp() * poses


def relative(poses: pp.LieTensor, ii: torch.Tensor, jj: torch.Tensor) -> pp.LieTensor:
    """Relative poses ``G_ij = G_j * G_i^{-1}`` (maps camera-i points to camera j), shape (E, 7)."""
    return poses[jj] * poses[ii].Inv()


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices ``[v]_x``."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([
        torch.stack([z, -w, y], -1),
        torch.stack([w, z, -x], -1),
        torch.stack([-y, x, z], -1),
    ], -2)


def rotation_translation(T: pp.LieTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation matrices (..., 3, 3) and translations (..., 3) of SE3 poses."""
    return T.rotation().matrix(), T.translation()


def adjoint_matrix(T: pp.LieTensor) -> torch.Tensor:
    """(..., 6, 6) adjoint ``[[R, [t]_x R], [0, R]]`` in pypose's ``[tau, phi]`` order."""
    R, t = rotation_translation(T)
    top = torch.cat([R, skew(t) @ R], -1)
    bottom = torch.cat([torch.zeros_like(R), R], -1)
    return torch.cat([top, bottom], -2)


def geodesic_errors(est: pp.LieTensor, ref: pp.LieTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation (degrees) and translation errors between two pose sets (..., 7).

    Both must be of the same direction (e.g. world-to-camera).  The translation
    error is that of the camera centres.
    """
    dR = (est.rotation().Inv() * ref.rotation()).Log().norm(dim=-1)
    c_est = est.Inv().translation()
    c_ref = ref.Inv().translation()
    return torch.rad2deg(dR), (c_est - c_ref).norm(dim=-1)
