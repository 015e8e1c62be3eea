"""Geometry core: Lie group identities, camera rescaling, projective ops and their Jacobians."""
from __future__ import annotations

import numpy as np
import pypose as pp
import pytest
import torch

from slam.geometry.camera import Intrinsics, processing_size, resize_frame
from slam.geometry.lie import adjoint_matrix, geodesic_errors, relative, retract, skew
from slam.geometry.pose import cv_to_ned, invert, matrix_to_tq, ned_to_cv, tq_to_matrix
from slam.geometry.projective import backproject, pixel_grid, project_edges, project_points

DT = torch.float64


def random_poses(n: int, seed: int = 0, sigma: float = 0.3) -> pp.LieTensor:
    g = torch.Generator().manual_seed(seed)
    t = sigma * torch.randn(n, 3, generator=g, dtype=DT)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=DT) * torch.tensor([sigma, sigma, sigma, 3.0], dtype=DT) + torch.tensor([0, 0, 0, 1.0], dtype=DT), dim=-1)
    return pp.SE3(torch.cat([t, q], -1))


def twist_hat(xi: torch.Tensor) -> torch.Tensor:
    """(..., 6) [tau, phi] -> (..., 4, 4) Lie algebra matrix (plain torch, differentiable)."""
    M = torch.zeros(*xi.shape[:-1], 4, 4, dtype=xi.dtype)
    M[..., :3, :3] = skew(xi[..., 3:])
    M[..., :3, 3] = xi[..., :3]
    return M


# ----------------------------------------------------------------------------- Lie groups
def test_exp_log_roundtrip_and_inverse():
    xi = 0.5 * torch.randn(16, 6, dtype=DT)
    T = pp.se3(xi).Exp()
    assert torch.allclose(T.Log().tensor(), xi, atol=1e-10)
    eye = (T * T.Inv()).tensor()
    assert torch.allclose(eye, pp.identity_SE3(16, dtype=DT).tensor(), atol=1e-12)
    # Exp agrees with the matrix exponential of the twist
    assert torch.allclose(T.matrix(), torch.linalg.matrix_exp(twist_hat(xi)), atol=1e-10)


def test_composition_is_associative_and_matches_matrices():
    A, B, C = random_poses(5, 1), random_poses(5, 2), random_poses(5, 3)
    assert torch.allclose(((A * B) * C).matrix(), (A * (B * C)).matrix(), atol=1e-12)
    assert torch.allclose((A * B).matrix(), A.matrix() @ B.matrix(), atol=1e-12)


def test_adjoint_moves_left_perturbations():
    T = random_poses(8, 4)
    xi = 0.1 * torch.randn(8, 6, dtype=DT)
    lhs = (T * pp.se3(xi).Exp()).matrix()
    rhs = (pp.se3((adjoint_matrix(T) @ xi[..., None])[..., 0]).Exp() * T).matrix()
    assert torch.allclose(lhs, rhs, atol=1e-10)
    # pypose's own adjoint agrees
    assert torch.allclose((adjoint_matrix(T) @ xi[..., None])[..., 0], T.Adj(pp.se3(xi)).tensor(), atol=1e-10)


def test_retract_and_geodesic_errors():
    T = random_poses(4, 5)
    xi = torch.zeros(4, 6, dtype=DT)
    xi[:, 3] = np.deg2rad(2.0)
    T2 = retract(T, xi)
    rot, _ = geodesic_errors(T2, T)
    assert torch.allclose(rot, torch.full((4,), 2.0, dtype=DT), atol=1e-8)


def test_plain_torch_se3_ops_match_pypose_and_differentiate():
    from slam.geometry.lie import compose, inverse, quat_to_matrix, se3_exp

    xi = 0.5 * torch.randn(16, 6, dtype=DT)
    xi[:4, 3:] *= 1e-5  # the small-angle branch
    xi[4, 3:] = 0.0
    assert torch.allclose(se3_exp(xi), pp.se3(xi).Exp().tensor(), atol=1e-12)
    A, B = random_poses(6, 11), random_poses(6, 12)
    assert torch.allclose(compose(A.tensor(), B.tensor()), (A * B).tensor(), atol=1e-12)
    assert torch.allclose(inverse(A.tensor()), A.Inv().tensor(), atol=1e-12)
    assert torch.allclose(quat_to_matrix(A.tensor()[:, 3:]), A.rotation().matrix(), atol=1e-12)
    # Euclidean gradients through retract / relative (what the differentiable BA relies on)
    x = (0.1 * torch.randn(3, 6, dtype=DT)).requires_grad_(True)
    G = random_poses(3, 13)
    ii, jj = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])

    def f(v):
        return (relative(retract(G, v), ii, jj).tensor() * torch.arange(1.0, 8.0, dtype=DT)).sum()

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)


def test_relative_pose_convention():
    G = random_poses(3, 6)
    ii, jj = torch.tensor([0, 2]), torch.tensor([1, 0])
    Gij = relative(G, ii, jj).matrix()
    expect = G.matrix()[jj] @ torch.linalg.inv(G.matrix()[ii])
    assert torch.allclose(Gij, expect, atol=1e-12)


def test_sim3_exp_log_and_scale():
    x = 0.3 * torch.randn(6, 7, dtype=DT)
    S = pp.sim3(x).Exp()
    assert torch.allclose(S.Log().tensor(), x, atol=1e-9)
    p = torch.randn(6, 3, dtype=DT)
    # Sim3 scale multiplies distances
    d_in = (p[0] - p[1]).norm()
    q = S[0].Act(p[:2])
    assert torch.allclose((q[0] - q[1]).norm(), d_in * S[0].tensor()[7], atol=1e-10)


# ------------------------------------------------------------------------------ numpy poses
def test_tq_matrix_roundtrip_and_invert():
    T = random_poses(10, 7).matrix().numpy()
    assert np.allclose(tq_to_matrix(matrix_to_tq(T)), T, atol=1e-12)
    assert np.allclose(invert(T) @ T, np.eye(4), atol=1e-12)
    assert np.allclose(cv_to_ned(ned_to_cv(T)), T, atol=1e-12)
    # NED forward axis (x) is OpenCV's z
    P = np.eye(4)
    P[:3, 3] = [1.0, 0.0, 0.0]
    assert np.allclose(ned_to_cv(P)[:3, 3], [0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------------- camera
def test_intrinsics_rescale_keeps_projection_consistent():
    K = Intrinsics(300.0, 310.0, 159.5, 119.5, 320, 240)
    K2 = K.scaled(80, 60)
    assert K2.fx == pytest.approx(75.0) and K2.cx == pytest.approx(39.5)
    # a 3D point projects to the same relative image position at both resolutions
    X = np.array([0.3, -0.2, 2.0])
    u1 = K.fx * X[0] / X[2] + K.cx
    u2 = K2.fx * X[0] / X[2] + K2.cx
    assert (u1 + 0.5) / 320 == pytest.approx((u2 + 0.5) / 80)
    Kc = K.cropped(10, 20, 100, 100)
    assert (Kc.cx, Kc.cy, Kc.width) == (149.5, 99.5, 100)
    assert K.with_focal(200.0).fy == pytest.approx(200.0 * 310.0 / 300.0)


def test_resize_frame_and_processing_size():
    img = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    K = Intrinsics(300.0, 300.0, 159.5, 119.5, 320, 240)
    depth = np.ones((240, 320), np.float32)
    out, K2, d2 = resize_frame(img, K, 160, 120, depth)
    assert out.shape == (120, 160, 3) and d2.shape == (120, 160) and K2.width == 160
    assert processing_size(640, 480, 320 * 240) == (320, 240)
    w, h = processing_size(1920, 1080, 320 * 240)
    assert w % 8 == 0 and h % 8 == 0 and abs(w / h - 16 / 9) < 0.05
    with pytest.raises(ValueError):
        resize_frame(img, K.scaled(100, 100), 10, 10)


# ---------------------------------------------------------------------------- projective
def test_project_backproject_identity():
    disps = 0.2 + torch.rand(1, 6, 7, dtype=DT)
    K = torch.tensor([40.0, 42.0, 3.1, 2.4], dtype=DT)
    P = backproject(disps, K)
    uv = project_points(P, K)
    assert torch.allclose(uv[0], pixel_grid(6, 7, dtype=DT), atol=1e-12)
    # identity relative pose reprojects onto the same pixels
    poses = pp.identity_SE3(2, dtype=DT)
    pr = project_edges(poses, disps.expand(2, -1, -1), K, torch.tensor([0]), torch.tensor([1]))
    assert torch.allclose(pr.coords[0], pixel_grid(6, 7, dtype=DT), atol=1e-12) and pr.valid.all()


def test_projection_matches_3d_transform():
    poses = random_poses(2, 8, sigma=0.2)
    disps = 0.3 + torch.rand(2, 5, 6, dtype=DT)
    K = torch.tensor([40.0, 42.0, 2.5, 2.0], dtype=DT)
    pr = project_edges(poses, disps, K, torch.tensor([0]), torch.tensor([1]))
    P = backproject(disps[0], K)
    X = P[..., :3] / P[..., 3:]  # metric points in camera 0
    Tw = poses.matrix()
    Xj = (Tw[1] @ torch.linalg.inv(Tw[0]))[:3, :3] @ X.reshape(-1, 3).T + (Tw[1] @ torch.linalg.inv(Tw[0]))[:3, 3:]
    uv = torch.stack([K[0] * Xj[0] / Xj[2] + K[2], K[1] * Xj[1] / Xj[2] + K[3]], -1).reshape(5, 6, 2)
    assert torch.allclose(pr.coords[0], uv, atol=1e-10)


def test_validity_mask_behind_camera():
    poses = pp.identity_SE3(2, dtype=DT)
    poses_t = poses.tensor().clone()
    poses_t[1, 2] = -5.0  # camera j moved 5 units forward past the points at depth 1
    disps = torch.ones(2, 3, 3, dtype=DT)
    K = torch.tensor([10.0, 10.0, 1.0, 1.0], dtype=DT)
    pr = project_edges(pp.SE3(poses_t), disps, K, torch.tensor([0]), torch.tensor([1]))
    assert not pr.valid.any()
    disps[0, 0, 0] = -1.0
    pr = project_edges(poses, disps, K, torch.tensor([0]), torch.tensor([1]))
    assert not pr.valid[0, 0, 0] and pr.valid.sum() == 8


def _coords_fn(poses, disps, K, ii, jj):
    """Projection written with plain differentiable torch ops (matrix_exp perturbations)."""
    Tm = poses.matrix()

    def f(xi, dd, foc):
        T = torch.linalg.matrix_exp(twist_hat(xi)) @ Tm
        Kf = torch.stack([foc, foc * K[1] / K[0], K[2], K[3]])
        Gij = T[jj] @ torch.linalg.inv(T[ii])
        P = backproject(disps[ii] + dd[ii], Kf)
        Pj = torch.einsum("eab,ehwb->ehwa", Gij, P)
        return project_points(Pj, Kf)

    return f


def test_jacobians_match_autograd_float64():
    N, H, W = 4, 5, 6
    poses = random_poses(N, 9, sigma=0.2)
    disps = 0.4 + torch.rand(N, H, W, dtype=DT)
    K = torch.tensor([50.0, 55.0, 2.7, 2.2], dtype=DT)
    ii = torch.tensor([0, 1, 2, 0, 3])
    jj = torch.tensor([1, 0, 0, 2, 1])
    pr = project_edges(poses, disps, K, ii, jj, jacobians=True)
    assert pr.valid.all()
    f = _coords_fn(poses, disps, K, ii, jj)
    Jx, Jdd, Jff = torch.autograd.functional.jacobian(
        f, (torch.zeros(N, 6, dtype=DT), torch.zeros(N, H, W, dtype=DT), K[0].clone()))
    # reference from autograd equals the analytic Projection coords too
    assert torch.allclose(f(torch.zeros(N, 6, dtype=DT), torch.zeros(N, H, W, dtype=DT), K[0]), pr.coords, atol=1e-10)

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()

    for e in range(len(ii)):
        i, j = ii[e].item(), jj[e].item()
        assert rel(pr.Ji[e], Jx[e, :, :, :, i, :]) < 1e-6
        assert rel(pr.Jj[e], Jx[e, :, :, :, j, :]) < 1e-6
        Jd_auto = torch.einsum("hwchw->hwc", Jdd[e, :, :, :, i])
        assert rel(pr.Jd[e], Jd_auto) < 1e-6
    assert rel(pr.Jf, Jff) < 1e-6


def test_jacobians_match_central_differences():
    N, H, W = 2, 3, 4
    poses = random_poses(N, 10, sigma=0.3)
    disps = 0.5 + torch.rand(N, H, W, dtype=DT)
    K = torch.tensor([30.0, 30.0, 1.5, 1.0], dtype=DT)
    ii, jj = torch.tensor([1]), torch.tensor([0])
    pr = project_edges(poses, disps, K, ii, jj, jacobians=True)
    eps = 1e-6
    for which, J in ((1, pr.Ji[0]), (0, pr.Jj[0])):
        for k in range(6):
            xi = torch.zeros(N, 6, dtype=DT)
            xi[which, k] = eps
            cp = project_edges(retract(poses, xi), disps, K, ii, jj).coords[0]
            xi[which, k] = -eps
            cm = project_edges(retract(poses, xi), disps, K, ii, jj).coords[0]
            num = (cp - cm) / (2 * eps)
            assert ((num - J[..., k]).abs().max() / num.abs().max().clamp(min=1e-3)) < 1e-6


def _scene_flow(R: np.ndarray, t: np.ndarray, h: int = 30, w: int = 40, seed: int = 0):
    """Targets (h, w, 2) in frame b of frame a's pixels for a random-depth scene (depths 1-5)."""
    K = np.array([37.0, 37.0, (w - 1) / 2, (h - 1) / 2])
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    Z = np.random.default_rng(seed).uniform(1.0, 5.0, (h, w))
    X = np.stack([(u - K[2]) / K[0] * Z, (v - K[3]) / K[1] * Z, Z], -1)
    Y = X @ R.T + t
    tgt = np.stack([K[0] * Y[..., 0] / Y[..., 2] + K[2], K[1] * Y[..., 1] / Y[..., 2] + K[3]], -1)
    return tgt, K, 1.0 / Z, np.stack([u, v], -1)


def test_two_view_recovers_relative_pose_and_depth():
    from scipy.spatial.transform import Rotation
    from slam.geometry.twoview import two_view

    R = Rotation.from_euler("xyz", [1.0, -4.0, 2.0], degrees=True).as_matrix()
    t = np.array([0.2, 0.05, 0.1])
    tgt, K, disp, _ = _scene_flow(R, t)
    tv = two_view(tgt, np.ones(tgt.shape[:2]), K, ransac_px=0.1)
    assert tv is not None and tv.inlier_ratio > 0.99
    assert np.abs(tv.R - R).max() < 1e-6
    assert np.allclose(tv.t, t / np.linalg.norm(t), atol=1e-6)
    # depths in units of the baseline: inverse depths scale by the baseline length
    assert np.allclose(tv.disp[tv.valid], disp[tv.valid] * np.linalg.norm(t), rtol=1e-4)


def test_rotation_parallax_is_zero_for_pure_rotation_and_measures_translation():
    from scipy.spatial.transform import Rotation
    from slam.geometry.twoview import rotation_parallax

    R = Rotation.from_euler("xyz", [2.0, 3.0, 1.0], degrees=True).as_matrix()
    tgt, K, _, grid = _scene_flow(R, np.zeros(3))
    ones = np.ones(tgt.shape[:2])
    assert np.linalg.norm(tgt - grid, axis=-1).mean() > 2.0  # a large image motion ...
    assert rotation_parallax(tgt, ones, K) < 1e-9             # ... with no parallax
    tgt_t, *_ = _scene_flow(R, np.array([0.1, 0.0, 0.0]))
    par = rotation_parallax(tgt_t, ones, K)
    assert 0.3 < par < 1.5
    # low-confidence pixels are ignored: corrupting them changes nothing
    w = ones.copy()
    w[:, :5] = 0.0
    bad = tgt.copy()
    bad[:, :5] += 10.0
    assert rotation_parallax(bad, w, K) < 1e-9
    assert rotation_parallax(tgt, np.zeros_like(ones), K) == float("inf")
