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

    With ``jacobians=True`` the Jacobians are stored channels-first (``J7``,
    ``Jd_cf``, ``coords_cf``: pixels contiguous last, the layout in which the
    bundle adjustment reduces them over pixels); the per-pixel views
    ``Jj``, ``Jf``, ``Jjf`` and ``Jd`` below are permuted views of them.

    Attributes:
        coords: (E, H, W, 2) projected pixel coordinates ``(u', v')`` in frame j.
        valid: (E, H, W) bool, point in front of both cameras.
        adj: (E, 6, 6) adjoint of ``G_ij``; ``d coords / d xi_i = -Jj @ adj``
            (see :attr:`Ji`).  The BA uses this identity to avoid forming Ji.
        J7: (E, 7, 2, H, W) ``d (u', v') / d [xi_j, f]``: rows the left twist
            ``[tau, phi]`` of pose j, then the shared focal ``f``.
        Jd_cf: (E, 2, H, W) ``d (u', v') / d`` inverse depth of frame i at that pixel.
        coords_cf: (E, 2, H, W) the coordinates, channels first.
    """

    coords: torch.Tensor
    valid: torch.Tensor
    adj: torch.Tensor | None = None
    J7: torch.Tensor | None = None
    Jd_cf: torch.Tensor | None = None
    coords_cf: torch.Tensor | None = None

    @property
    def Jjf(self) -> torch.Tensor:
        """(E, H, W, 2, 7) ``[Jj | Jf]`` per pixel (a view of :attr:`J7`)."""
        return self.J7.permute(0, 3, 4, 2, 1)

    @property
    def Jj(self) -> torch.Tensor:
        """(E, H, W, 2, 6) d coords / d xi_j (left twist ``[tau, phi]`` of pose j)."""
        return self.Jjf[..., :6]

    @property
    def Jf(self) -> torch.Tensor:
        """(E, H, W, 2) d coords / d shared focal ``f``."""
        return self.Jjf[..., 6]

    @property
    def Jd(self) -> torch.Tensor:
        """(E, H, W, 2) d coords / d inverse depth of frame i at that pixel."""
        return self.Jd_cf.permute(0, 2, 3, 1)

    @property
    def Ji(self) -> torch.Tensor:
        """(E, H, W, 2, 6) d coords / d xi_i (left twist of pose i) ``= -Jj Ad(G_ij)``."""
        Jj = self.Jj
        E = Jj.shape[0]
        return -(Jj.reshape(E, -1, 6) @ self.adj).reshape(Jj.shape)


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
    H, W = disps.shape[-2:]
    E = ii.numel()
    d = disps[ii]  # (E, H, W)
    fx, fy, cx, cy = intrinsics.unbind(-1)
    uv = pixel_grid(H, W, disps.device, disps.dtype)
    x = (uv[..., 0] - cx) / fx  # (H, W)
    y = (uv[..., 1] - cy) / fy
    # P_j = R [x, y, 1] + t d, one component at a time with per-edge scalars (E, 1, 1)
    Rs, ts = R[:, :, :, None, None], t[:, :, None, None]
    q = [Rs[:, k, 0] * x + Rs[:, k, 1] * y for k in range(3)]  # R [x, y, 0]: (E, H, W) each
    X, Y, Z = (q[k] + Rs[:, k, 2] + ts[:, k] * d for k in range(3))
    valid = (Z > min_depth_ratio) & (d > 0)
    Zs = torch.where(valid, Z, torch.ones_like(Z))  # avoid dividing by ~0 on invalid points
    iz = 1.0 / Zs
    a = X * iz
    b = Y * iz
    if not jacobians:
        return Projection(coords=torch.stack([fx * a + cx, fy * b + cy], -1), valid=valid)
    coords_cf = torch.stack([fx * a + cx, fy * b + cy], 1)  # (E, 2, H, W)
    c = d * iz
    ab = a * b
    tx, ty, tz = ts[:, 0], ts[:, 1], ts[:, 2]
    # d / d inverse depth
    Jd = torch.stack([fx * (tx - a * tz) * iz, fy * (ty - b * tz) * iz], 1)  # (E, 2, H, W)
    # d(u', v') / d xi_j, rows [tau_x, tau_y, tau_z, phi_x, phi_y, phi_z], then d / d shared focal
    # f (fx = f, fy = aspect * f, through both the back-projection and the projection)
    fxc, fyc = fx * c, fy * c
    J = torch.empty(E, 7, 2, H, W, dtype=disps.dtype, device=disps.device)
    ju, jv = J[:, :, 0], J[:, :, 1]
    ju[:, 0] = fxc
    ju[:, 1] = 0.0
    ju[:, 2] = -a * fxc
    ju[:, 3] = -fx * ab
    ju[:, 4] = fx * (1.0 + a * a)
    ju[:, 5] = -fx * b
    ju[:, 6] = a - (q[0] - a * q[2]) * iz
    jv[:, 0] = 0.0
    jv[:, 1] = fyc
    jv[:, 2] = -b * fyc
    jv[:, 3] = -fy * (1.0 + b * b)
    jv[:, 4] = fy * ab
    jv[:, 5] = fy * a
    jv[:, 6] = (fy / fx) * (b - (q[1] - b * q[2]) * iz)
    return Projection(coords=coords_cf.permute(0, 2, 3, 1), valid=valid, adj=adjoint_matrix(Gij), J7=J,
                      Jd_cf=Jd, coords_cf=coords_cf)


def induced_flow(poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor,
                 ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """(E, H, W, 2) optical flow from i to j induced by the current geometry."""
    coords = project_edges(poses, disps, intrinsics, ii, jj).coords
    H, W = disps.shape[-2:]
    return coords - pixel_grid(H, W, disps.device, disps.dtype)
