"""Projective operations on batched dense inverse-depth maps, with analytic Jacobians.

For a frame-graph edge ``(i, j)`` every pixel ``(u, v)`` of frame i (pixel
centres at integer coordinates, see :mod:`slam.geometry.camera`) with inverse
depth ``d`` is back-projected to the homogeneous point

    P_i = [x, y, 1, d],   x = (u - cx) / fx,   y = (v - cy) / fy

(which is the 3D point ``[x, y, 1] / d``), moved by ``G_ij = G_j * G_i^{-1}``
(world-to-camera poses) to ``P_j = [R_ij [x, y, 1] + t_ij d, d]`` and projected:

    u' = fx X_j / Z_j + cx,   v' = fy Y_j / Z_j + cy

``Z_j`` is the depth in frame j divided by the depth in frame i, so the
validity test ``Z_j > min_depth_ratio`` and ``d > 0`` keeps points in front of
both cameras.

Jacobians (left perturbation ``G <- Exp(xi) G``, ``xi = [tau, phi]``):

* w.r.t. pose j: ``J_j = dpi/dP * [d I, -[P_j]_x]``;
* w.r.t. pose i: ``J_i = -J_j Ad(G_ij)``;
* w.r.t. inverse depth of i: ``J_d = dpi/dP * t_ij``;
* w.r.t. the shared focal ``f`` (``fx = f``, ``fy = a f`` with fixed aspect
  ``a``), through both the back-projection and the projection.
"""
from __future__ import annotations

from dataclasses import dataclass

import pypose as pp
import torch

from slam.geometry.lie import adjoint_matrix, relative, rotation_translation

#: default threshold on Z_j (ratio of depth in j to depth in i) for validity.
DEFAULT_MIN_DEPTH_RATIO = 0.2


@dataclass
class Projection:
    """Result of :func:`project_edges` for E edges at resolution H x W.

    Attributes:
        coords: (E, H, W, 2) projected pixel coordinates ``(u', v')`` in frame j.
        valid: (E, H, W) bool, point in front of both cameras.
        Jj: (E, H, W, 2, 6) d coords / d xi_j (left twist ``[tau, phi]`` of pose j).
        Jd: (E, H, W, 2) d coords / d inverse depth of frame i at that pixel.
        Jf: (E, H, W, 2) d coords / d shared focal ``f``.
        adj: (E, 6, 6) adjoint of ``G_ij``; ``d coords / d xi_i = -Jj @ adj``
            (see :attr:`Ji`).  The BA uses this identity to avoid forming Ji.
    """

    coords: torch.Tensor
    valid: torch.Tensor
    Jj: torch.Tensor | None = None
    Jd: torch.Tensor | None = None
    Jf: torch.Tensor | None = None
    adj: torch.Tensor | None = None
    Jjf: torch.Tensor | None = None  #: (E, H, W, 2, 7) ``[Jj | Jf]``; Jj and Jf are views of it

    @property
    def Ji(self) -> torch.Tensor:
        """(E, H, W, 2, 6) d coords / d xi_i (left twist of pose i) ``= -Jj Ad(G_ij)``."""
        E = self.Jj.shape[0]
        return -(self.Jj.reshape(E, -1, 6) @ self.adj).reshape(self.Jj.shape)


def pixel_grid(height: int, width: int, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H, W, 2) pixel-centre coordinates ``(u, v)``."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u, v], -1)


def backproject(disps: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Homogeneous points ``[x, y, 1, d]`` of inverse-depth maps.

    Args:
        disps: (..., H, W) inverse depth.
        intrinsics: (4,) ``[fx, fy, cx, cy]``.
    Returns:
        (..., H, W, 4).
    """
    H, W = disps.shape[-2:]
    fx, fy, cx, cy = intrinsics.unbind(-1)
    uv = pixel_grid(H, W, disps.device, disps.dtype)
    x = ((uv[..., 0] - cx) / fx).expand_as(disps)
    y = ((uv[..., 1] - cy) / fy).expand_as(disps)
    return torch.stack([x, y, torch.ones_like(disps), disps], -1)


def project_points(P: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Project homogeneous points (..., 4) (or 3D points (..., 3)) to pixels (..., 2)."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    Z = P[..., 2]
    return torch.stack([fx * P[..., 0] / Z + cx, fy * P[..., 1] / Z + cy], -1)


def project_edges(poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor,
                  ii: torch.Tensor, jj: torch.Tensor, *, jacobians: bool = False,
                  min_depth_ratio: float = DEFAULT_MIN_DEPTH_RATIO) -> Projection:
    """Reproject the pixels of frames ``ii`` into frames ``jj``.

    Args:
        poses: (N, 7) SE3 world-to-camera poses.
        disps: (N, H, W) inverse depths (positive in front of the camera).
        intrinsics: (4,) ``[fx, fy, cx, cy]`` at the resolution of ``disps``.
        ii, jj: (E,) long source and target frame indices.
        jacobians: also return the analytic Jacobians.
        min_depth_ratio: validity threshold on ``Z_j`` (see module doc).

    Returns:
        :class:`Projection`.
    """
    Gij = relative(poses, ii, jj)
    R, t = rotation_translation(Gij)  # (E, 3, 3), (E, 3)
    P = backproject(disps[ii], intrinsics)  # (E, H, W, 4)
    x, y, d = P[..., 0], P[..., 1], P[..., 3]
    Rb = R[:, None, None]  # (E, 1, 1, 3, 3)
    tb = t[:, None, None]  # (E, 1, 1, 3)
    # q = R [x, y, 0]; P_j = q + R[:, 2] + t d
    q = Rb[..., 0] * x[..., None] + Rb[..., 1] * y[..., None]
    Pj = q + Rb[..., 2] + tb * d[..., None]
    X, Y, Z = Pj.unbind(-1)
    valid = (Z > min_depth_ratio) & (d > 0)
    Zs = torch.where(valid, Z, torch.ones_like(Z))  # avoid dividing by ~0 on invalid points
    iz = 1.0 / Zs
    a = X * iz
    b = Y * iz
    fx, fy, cx, cy = intrinsics.unbind(-1)
    coords = torch.stack([fx * a + cx, fy * b + cy], -1)
    out = Projection(coords=coords, valid=valid)
    if not jacobians:
        return out

    c = d * iz
    zero = torch.zeros_like(a)
    ab = a * b
    # d / d inverse depth
    Jd = torch.stack([fx * (tb[..., 0] - a * tb[..., 2]) * iz,
                      fy * (tb[..., 1] - b * tb[..., 2]) * iz], -1)
    # d / d shared focal f (fx = f, fy = aspect * f)
    qx, qy, qz = q.unbind(-1)
    jfu = a - (qx - a * qz) * iz
    jfv = (fy / fx) * (b - (qy - b * qz) * iz)
    # d(u', v') / d xi_j, columns [tau_x, tau_y, tau_z, phi_x, phi_y, phi_z], then the
    # focal column: built as one (E, H, W, 2, 7) tensor so that Jj and Jf are views.
    fxc, fyc = fx * c, fy * c
    Ju = torch.stack([fxc, zero, -a * fxc, -fx * ab, fx * (1.0 + a * a), -fx * b, jfu], -1)
    Jv = torch.stack([zero, fyc, -b * fyc, -fy * (1.0 + b * b), fy * ab, fy * a, jfv], -1)
    J7 = torch.stack([Ju, Jv], -2)
    Jj, Jf = J7[..., :6], J7[..., 6]
    out.Jj, out.Jd, out.Jf, out.adj, out.Jjf = Jj, Jd, Jf, adjoint_matrix(Gij), J7
    return out


def induced_flow(poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor,
                 ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """(E, H, W, 2) optical flow from i to j induced by the current geometry."""
    coords = project_edges(poses, disps, intrinsics, ii, jj).coords
    H, W = disps.shape[-2:]
    return coords - pixel_grid(H, W, disps.device, disps.dtype)
