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

Differentiability: pypose's own autograd treats the gradient of a LieTensor
as a tangent-space vector, which does not mix with plain tensor views of the
same data (``.tensor()``, ``.translation()``).  The operations the bundle
adjustment uses (:func:`retract`, :func:`relative`,
:func:`rotation_translation`, :func:`adjoint_matrix`) are therefore written
in plain torch on the ``[t, q]`` storage (:func:`se3_exp`, :func:`compose`,
:func:`inverse`, :func:`quat_to_matrix`): their gradients are ordinary
Euclidean ones, so a loss on BA results back-propagates correctly (the
differentiable BA, :func:`slam.ba.dense_ba.ba_steps`).
"""
from __future__ import annotations

import pypose as pp
import torch


def identity_poses(n: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> pp.LieTensor:
    """(n,) identity SE3 poses."""
    return pp.identity_SE3(n, device=device, dtype=dtype)


def _data(T: torch.Tensor) -> torch.Tensor:
    """The plain ``(..., 7)`` ``[t, q]`` tensor of a LieTensor (autograd history kept)."""
    return T.tensor() if isinstance(T, pp.LieTensor) else T


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (..., 4) quaternions ``[x, y, z, w]``."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack([aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw,
                        aw * bw - ax * bx - ay * by - az * bz], -1)


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate (..., 3) vectors by unit (..., 4) quaternions ``[x, y, z, w]``."""
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternions ``[x, y, z, w]`` -> (..., 3, 3) rotation matrices."""
    x, y, z, w = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz, wx, wy, wz = x * y, x * z, y * z, w * x, w * y, w * z
    return torch.stack([
        torch.stack([1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)], -1),
        torch.stack([2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)], -1),
        torch.stack([2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)], -1),
    ], -2)


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b`` for (..., 7) ``[t, q]`` tensors (plain torch)."""
    return torch.cat([a[..., :3] + quat_rotate(a[..., 3:], b[..., :3]), quat_mul(a[..., 3:], b[..., 3:])], -1)


def inverse(a: torch.Tensor) -> torch.Tensor:
    """``a^{-1}`` for (..., 7) ``[t, q]`` tensors (plain torch)."""
    qc = torch.cat([-a[..., 3:6], a[..., 6:]], -1)
    return torch.cat([-quat_rotate(qc, a[..., :3]), qc], -1)


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """Exponential map (..., 6) ``[tau, phi]`` -> (..., 7) ``[t, q]`` (pypose's ``se3.Exp``).

    ``q = [sin(th/2) phi / th, cos(th/2)]``, ``t = J_l(phi) tau`` with the left
    Jacobian of SO(3); Taylor expansions near ``th = 0`` keep it smooth.
    """
    tau, phi = xi[..., :3], xi[..., 3:]
    th2 = (phi * phi).sum(-1, keepdim=True)
    small = th2 < 1e-6
    th2s = torch.where(small, torch.ones_like(th2), th2)
    th = th2s.sqrt()
    half_sinc = torch.where(small, 0.5 - th2 / 48.0, torch.sin(0.5 * th) / th)
    q = torch.cat([half_sinc * phi, torch.where(small, 1.0 - th2 / 8.0, torch.cos(0.5 * th))], -1)
    a = torch.where(small, 0.5 - th2 / 24.0, (1.0 - torch.cos(th)) / th2s)          # (1 - cos th) / th^2
    b = torch.where(small, 1.0 / 6.0 - th2 / 120.0, (th - torch.sin(th)) / (th2s * th))  # (th - sin th) / th^3
    pxt = torch.cross(phi, tau, dim=-1)
    t = tau + a * pxt + b * torch.cross(phi, pxt, dim=-1)
    return torch.cat([t, q], -1)


def retract(poses: pp.LieTensor, xi: torch.Tensor) -> pp.LieTensor:
    """Left retraction ``Exp(xi) * poses`` for (..., 7) poses and (..., 6) twists (differentiable)."""
    return pp.SE3(compose(se3_exp(xi), _data(poses)))


def relative(poses: pp.LieTensor, ii: torch.Tensor, jj: torch.Tensor) -> pp.LieTensor:
    """Relative poses ``G_ij = G_j * G_i^{-1}`` (maps camera-i points to camera j), shape (E, 7)."""
    d = _data(poses)
    return pp.SE3(compose(d[jj], inverse(d[ii])))


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
    """Rotation matrices (..., 3, 3) and translations (..., 3) of SE3 poses (differentiable)."""
    d = _data(T)
    return quat_to_matrix(d[..., 3:]), d[..., :3]


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
