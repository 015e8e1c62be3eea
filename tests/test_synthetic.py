"""Synthetic worlds: determinism, geometry, exact flow, movers, every scene and motion kind."""
from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.data.sequence import Frame, InputError, Sequence
from slam.data.synthetic import MOTION_KINDS, SCENE_KINDS, make_world, sample_path
from slam.data.synthetic.motion import MotionParams
from slam.geometry.pose import invert

SMALL = dict(width=96, height=72)
MEDIUM = dict(width=160, height=120)


def _grid(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))


def _warp_error(seq, i: int, j: int, flow: np.ndarray) -> np.ndarray:
    """|grey(frame i) - grey(frame j sampled at (u, v) + flow)| per pixel."""
    H, W = flow.shape[:2]
    u, v = _grid(H, W)
    Ij = seq[j].image.astype(np.float32)
    warped = cv2.remap(Ij, (u + flow[..., 0]).astype(np.float32), (v + flow[..., 1]).astype(np.float32),
                       cv2.INTER_LINEAR)
    return np.abs(seq[i].image.astype(np.float32).mean(2) - warped.mean(2))


@pytest.fixture(scope="module")
def room() -> Sequence:
    return make_world(seed=3, scene="room", motion="handheld", frames=12, **MEDIUM)


@pytest.fixture(scope="module")
def dynamic_world() -> Sequence:
    return make_world(seed=4, scene="room", motion="handheld", frames=40, dynamic=True, mover_size=0.5, **SMALL)


# ---------------------------------------------------------------- interface
def test_sequence_interface(room):
    assert isinstance(room, Sequence) and room.kind == "synthetic"
    n = len(room)
    assert n == 12 and room.gt_poses.shape == (n, 4, 4) and room.has_ground_truth
    np.testing.assert_allclose(room.timestamps, np.arange(n) / 30.0)
    K = room.intrinsics
    assert (K.width, K.height) == (160, 120) and K.fx == K.fy
    frames = list(room)
    assert len(frames) == n
    f = room[-1]
    assert isinstance(f, Frame) and f.index == n - 1 and f.intrinsics == K
    assert f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8
    assert f.depth.shape == (120, 160) and f.depth.dtype == np.float32
    np.testing.assert_array_equal(f.pose, room.gt_poses[-1])
    R = room.gt_poses[:, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    # the continuous trajectory agrees with the frame poses
    np.testing.assert_allclose(room.poses_at(room.timestamps), room.gt_poses, atol=1e-12)


def test_deterministic_from_seed():
    kw = dict(seed=11, scene="clutter", motion="shaky", frames=5, dynamic=True, noise=True, **SMALL)
    a, b = make_world(**kw), make_world(**kw)
    assert a.intrinsics == b.intrinsics
    np.testing.assert_array_equal(a.gt_poses, b.gt_poses)
    for k in (0, 4):
        np.testing.assert_array_equal(a[k].image, b[k].image)
        np.testing.assert_array_equal(a[k].depth, b[k].depth)
        np.testing.assert_array_equal(a.dynamic_mask(k), b.dynamic_mask(k))
    # rendering order does not matter (noise is per frame)
    c = make_world(**kw)
    np.testing.assert_array_equal(c[4].image, a[4].image)
    other = make_world(**{**kw, "seed": 12})
    assert not np.array_equal(other[0].image, a[0].image)


def test_intrinsics():
    K = make_world(seed=1, frames=1, width=100, height=37, focal=55.0).intrinsics
    assert (K.fx, K.fy, K.width, K.height) == (55.0, 55.0, 100, 37)
    for seed in range(6):
        K = make_world(seed=seed, frames=1, **SMALL).intrinsics
        assert 0.6 * 96 <= K.fx <= 1.4 * 96 and K.fy == K.fx
        assert abs(K.cx - 47.5) <= 0.03 * 96 and abs(K.cy - 35.5) <= 0.03 * 72


@pytest.mark.parametrize("kw", [dict(scene="moon"), dict(motion="teleport"), dict(width=10), dict(frames=0),
                                dict(focal=-3.0), dict(low_texture=2.0), dict(fps=0.0)])
def test_bad_arguments(kw):
    with pytest.raises(InputError):
        make_world(**{"frames": 2, **SMALL, **kw})


# ------------------------------------------------------- every kind renders
@pytest.mark.parametrize("scene,motion", list(itertools.product(SCENE_KINDS, MOTION_KINDS)))
def test_every_kind_renders_without_collisions(scene, motion):
    seq = make_world(seed=2, scene=scene, motion=motion, frames=30, width=48, height=36)
    margin = MotionParams().margin
    centres = seq.gt_poses[:, :3, 3]
    assert seq.scene.raycaster.distance(centres).min() >= margin * 0.999  # camera centre clear of geometry
    assert np.all(centres >= seq.scene.free_lo - 1e-6) and np.all(centres <= seq.scene.free_hi + 1e-6)
    for k in (0, len(seq) - 1):
        f = seq[k]
        assert f.image.reshape(-1, 3).std(0).max() > 8.0  # not a constant image
        hit = f.depth > 0
        assert np.all(np.isfinite(f.depth))
        assert hit.mean() >= (0.4 if scene == "street" else 0.99)
        assert f.depth[hit].min() > 0.1  # nothing touches the camera
    if motion == "rotation":
        np.testing.assert_array_equal(centres, np.broadcast_to(centres[0], centres.shape))
    elif motion == "static":
        assert np.linalg.norm(centres - centres[0], axis=1).max() < 0.05
    else:
        assert np.linalg.norm(np.diff(centres, axis=0), axis=1).sum() > 0.05


def test_low_texture_and_flat_worlds():
    flat = make_world(seed=1, frames=2, low_texture=1.0, **SMALL)
    assert all(s.texture < 0 for s in flat.scene.surfaces)
    assert flat[0].image.std() > 3.0  # shading and colours still vary
    some = make_world(seed=1, frames=2, low_texture=0.5, **SMALL)
    share = np.mean([s.texture < 0 for s in some.scene.surfaces])
    assert 0.15 < share < 0.85


def test_noise_and_supersampling_keep_geometry():
    base = make_world(seed=6, frames=3, **SMALL)
    noisy = make_world(seed=6, frames=3, noise=True, **SMALL)
    aa = make_world(seed=6, frames=3, supersample=2, **SMALL)
    np.testing.assert_array_equal(base.gt_poses, noisy.gt_poses)
    np.testing.assert_array_equal(base[1].depth, noisy[1].depth)
    np.testing.assert_array_equal(base[1].depth, aa[1].depth)
    diff = np.abs(base[1].image.astype(float) - noisy[1].image.astype(float))
    assert 0.5 < diff.mean() < 25.0
    assert np.abs(base[1].image.astype(float) - aa[1].image.astype(float)).mean() < 12.0


# --------------------------------------------------------- ground-truth flow
def test_depth_consistency_with_flow(room):
    """Back-project frame i, move to frame j with the poses, project: matches the flow, and the
    rendered depth of frame j agrees with the transported depth."""
    K = room.intrinsics
    i, j = 0, 8
    D = room[i].depth.astype(np.float64)
    u, v = _grid(*D.shape)
    Kinv = np.linalg.inv(K.matrix())
    rays = np.stack([u, v, np.ones_like(u)], -1) @ Kinv.T
    Xc = rays * D[..., None]
    T = invert(room.gt_poses[j]) @ room.gt_poses[i]
    Y = Xc @ T[:3, :3].T + T[:3, 3]
    proj = Y @ K.matrix().T
    uj, vj = proj[..., 0] / proj[..., 2], proj[..., 1] / proj[..., 2]
    flow, valid = room.flow(i, j)
    assert valid.mean() > 0.6
    np.testing.assert_allclose(flow[valid][:, 0], (uj - u)[valid], atol=1e-3)
    np.testing.assert_allclose(flow[valid][:, 1], (vj - v)[valid], atol=1e-3)
    Dj = room[j].depth
    sampled = cv2.remap(Dj, uj.astype(np.float32), vj.astype(np.float32), cv2.INTER_LINEAR)
    rel = np.abs(sampled[valid] - Y[..., 2][valid]) / Y[..., 2][valid]
    assert np.median(rel) < 2e-3 and np.mean(rel < 0.01) > 0.95
    # out-of-view projections are never valid
    out = (uj < -0.5) | (uj > K.width - 0.5) | (vj < -0.5) | (vj > K.height - 0.5)
    assert not np.any(valid & out)


@pytest.mark.parametrize("scene,motion", [("room", "handheld"), ("table", "orbit"), ("clutter", "forward"),
                                          ("street", "shaky")])
def test_flow_warps_frame_j_onto_frame_i(scene, motion):
    seq = make_world(seed=5, scene=scene, motion=motion, frames=8, **MEDIUM)
    i, j = 0, 6
    flow, valid = seq.flow(i, j)
    assert valid.mean() > 0.5
    err = _warp_error(seq, i, j, flow)[valid]
    no_flow = _warp_error(seq, i, j, np.zeros_like(flow))[valid]
    # measured (seeds 5-7, 160x120, no noise): mean 0.8-3.2, median 0.3-0.7 grey levels, from bilinear
    # resampling of sharp textures and occlusion edges; warping without the flow gives 5-35
    assert err.mean() < 4.5 and np.median(err) < 1.5
    assert err.mean() < 0.6 * no_flow.mean()


def test_sky_and_occlusions_are_invalid():
    seq = make_world(seed=1, scene="street", motion="forward", frames=10, **SMALL)
    _, valid = seq.flow(0, 9)
    sky = seq[0].depth == 0
    assert sky.any() and not np.any(valid & sky)
    clutter = make_world(seed=3, scene="clutter", motion="shaky", frames=12, **SMALL)
    _, valid = clutter.flow(0, 11)
    D = clutter[0].depth
    assert (D > 0).all() and 0.3 < valid.mean() < 1.0
    # a flow for the same frame is zero and valid wherever something was hit
    f0, v0 = clutter.flow(4, 4)
    assert v0.all() and np.abs(f0).max() < 1e-6


def test_rotation_flow_is_a_homography():
    seq = make_world(seed=7, scene="room", motion="rotation", frames=10, **SMALL)
    i, j = 0, 9
    Km = seq.intrinsics.matrix()
    R_ji = seq.gt_poses[j][:3, :3].T @ seq.gt_poses[i][:3, :3]
    Hm = Km @ R_ji @ np.linalg.inv(Km)
    flow, valid = seq.flow(i, j)
    u, v = _grid(*flow.shape[:2])
    p = np.stack([u, v, np.ones_like(u)], -1) @ Hm.T
    expect = np.stack([p[..., 0] / p[..., 2] - u, p[..., 1] / p[..., 2] - v], -1)
    assert valid.mean() > 0.5 and np.abs(flow).max() > 1.0
    np.testing.assert_allclose(flow[valid], expect[valid], atol=1e-3)


# ------------------------------------------------------------------ movers
def test_dynamic_masks_and_object_flow(dynamic_world):
    seq = dynamic_world
    fractions = [seq.dynamic_mask(k).mean() for k in range(0, len(seq), 3)]
    assert np.mean(fractions) >= 0.2  # mover_size=0.5 reaches 20% moving pixels
    assert seq.object_poses(0).shape == (1, 4, 4)
    assert not np.allclose(seq.object_poses(0), seq.object_poses(len(seq) - 1))
    i, j = 0, 4
    dyn = seq.dynamic_mask(i)
    flow, valid = seq.flow(i, j)
    sel = dyn & valid
    assert sel.sum() > 100
    # the camera-only flow (treating the mover as static) is wrong on the mover
    K = seq.intrinsics
    D = seq[i].depth.astype(np.float64)
    u, v = _grid(*D.shape)
    X = np.stack([(u - K.cx) / K.fx * D, (v - K.cy) / K.fy * D, D], -1)
    T = invert(seq.gt_poses[j]) @ seq.gt_poses[i]
    Y = X @ T[:3, :3].T + T[:3, 3]
    cam_flow = np.stack([K.fx * Y[..., 0] / Y[..., 2] + K.cx - u, K.fy * Y[..., 1] / Y[..., 2] + K.cy - v], -1)
    np.testing.assert_allclose(flow[valid & ~dyn], cam_flow[valid & ~dyn], atol=1e-3)
    assert np.median(np.linalg.norm(flow[sel] - cam_flow[sel], axis=1)) > 0.5
    err = _warp_error(seq, i, j, flow)[sel]
    err_cam = _warp_error(seq, i, j, cam_flow.astype(np.float32))[sel]
    assert err.mean() < 6.0 and err.mean() < 0.5 * err_cam.mean()


def test_static_world_has_no_movers(room):
    assert room.object_poses(0).shape == (0, 4, 4)
    assert not room.dynamic_mask(0).any()


# ------------------------------------------------------------------ sample
def test_bundled_sample():
    root = sample_path()
    assert isinstance(root, Path) and root.is_dir()
    for name in ("video.mp4", "groundtruth.txt", "calib.txt", "synth.json", "README.md"):
        assert (root / name).is_file(), name
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) <= 5 * 2**20
    from slam.io.tum import read_tum

    stamps, poses = read_tum(root / "groundtruth.txt")
    cap = cv2.VideoCapture(str(root / "video.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(stamps) == len(poses) >= 60
    assert len((root / "calib.txt").read_text().split()) == 4
