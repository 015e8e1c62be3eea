"""Output writers: PLY, point-cloud fusion, COLMAP text model, the run's output folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.geometry.pose import invert
from slam.io.colmap import write_colmap
from slam.io.outputs import write_outputs
from slam.io.ply import read_ply, write_ply
from slam.io.pointcloud import fuse_cloud, fuse_points
from slam.io.tum import read_tum
from slam.system.result import Reconstruction

PLANE_Z = 4.0  # the scene: the world plane z = PLANE_Z


def plane_poses(n: int) -> np.ndarray:
    """(n, 4, 4) camera-to-world poses looking at the plane z = PLANE_Z from z ~ 0."""
    s = np.linspace(0.0, 1.0, n)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.from_euler("yx", np.stack([-3 + 6 * s, 2 * np.sin(3 * s)], 1), degrees=True).as_matrix()
    T[:, 0, 3] = -0.4 + 0.8 * s
    T[:, 1, 3] = 0.1 * np.sin(2 * s)
    T[:, 2, 3] = 0.2 * s
    return T


def plane_disps(T_wc: np.ndarray, K: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w) exact inverse depth of the plane z = PLANE_Z seen from ``T_wc`` with intrinsics ``K``."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ray_c = np.stack([(u - K[2]) / K[0], (v - K[3]) / K[1], np.ones_like(u)], -1)
    ray_w = ray_c @ T_wc[:3, :3].T
    z = (PLANE_Z - T_wc[2, 3]) / ray_w[..., 2]  # depth along the optical axis (ray_c has z = 1)
    return 1.0 / z


def gradient_image(W: int, H: int) -> np.ndarray:
    """(H, W, 3) uint8 image with R = 2x and G = 2y (linear, so bilinear sampling is exact)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([2 * x, 2 * y, np.full_like(x, 50)], -1).astype(np.uint8)


def plane_recon(n_frames: int = 12, kf_indices=(0, 4, 8, 11), W: int = 128, H: int = 96, stride: int = 8,
                ) -> Reconstruction:
    """A small Reconstruction of the plane scene with exact poses and depths."""
    poses = plane_poses(n_frames)
    K = np.array([100.0, 100.0, (W - 1) / 2, (H - 1) / 2])
    kf = np.asarray(kf_indices)
    h, w = H // stride, W // stride
    recon = Reconstruction(
        timestamps=1000.0 + 0.1 * np.arange(n_frames), poses=poses, tracked=np.arange(n_frames) != 5,
        kf_indices=kf, kf_poses=poses[kf], kf_disps=np.zeros((len(kf), h, w)),
        kf_confidence=np.ones((len(kf), h, w)), kf_images=np.stack([gradient_image(W, H)] * len(kf)),
        intrinsics=K, image_size=(W, H), input_size=(2 * W, 2 * H),
        input_intrinsics=np.array([200.0, 200.0, 2 * (K[2] + 0.5) - 0.5, 2 * (K[3] + 0.5) - 0.5]),
        focal_estimated=True, correspondence="oracle", stats={"fps": 12.5, "wall_s": 0.96, "peak_rss_mb": 321.0,
                                                              "ba_iters": 7})
    Kf = recon.feature_intrinsics
    recon.kf_disps = np.stack([plane_disps(T, Kf, h, w) for T in recon.kf_poses])
    return recon


# ---------------------------------------------------------------------------- PLY
def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(257, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(257, 3), dtype=np.uint8)
    path = write_ply(tmp_path / "sub" / "p.ply", xyz, rgb)
    x2, c2 = read_ply(path)
    np.testing.assert_array_equal(x2, xyz)
    np.testing.assert_array_equal(c2, rgb)
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")

    import open3d as o3d

    pc = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(pc.points), xyz, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pc.colors) * 255, rgb, atol=0.5)

    x0, c0 = read_ply(write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8)))
    assert x0.shape == (0, 3) and c0.shape == (0, 3)


# ---------------------------------------------------------------------------- fusion
def test_fuse_points_on_plane_with_colours():
    recon = plane_recon()
    cloud = fuse_cloud(recon, min_views=2)
    h, w = recon.kf_disps.shape[1:]
    assert len(cloud) > 0.5 * len(recon.kf_indices) * h * w
    np.testing.assert_allclose(cloud.xyz[:, 2], PLANE_Z, atol=1e-4)
    assert set(np.unique(cloud.keyframe)) == set(range(len(recon.kf_indices)))
    # colours: bilinear samples of R = 2x, G = 2y at the processing-resolution pixel centres
    np.testing.assert_allclose(cloud.rgb[:, 0], np.rint(2 * cloud.uv[:, 0]), atol=1)
    np.testing.assert_allclose(cloud.rgb[:, 1], np.rint(2 * cloud.uv[:, 1]), atol=1)
    # the feature pixel (u, v) at stride 8 has its centre at image coordinate 8u + 3.5
    assert np.allclose((cloud.uv[:, 0] - 3.5) / 8, np.rint((cloud.uv[:, 0] - 3.5) / 8))
    xyz, rgb = fuse_points(recon, min_views=2)
    np.testing.assert_array_equal(xyz, cloud.xyz)
    np.testing.assert_array_equal(rgb, cloud.rgb)
    sub = fuse_cloud(recon, max_points=100)
    assert len(sub) == 100 and np.isin(sub.xyz, cloud.xyz).all()


def test_fuse_points_drops_inconsistent_keyframe():
    recon = plane_recon(n_frames=9, kf_indices=(0, 4, 8))
    h, w = recon.kf_disps.shape[1:]
    clean = fuse_cloud(recon, min_views=1)
    assert set(np.unique(clean.keyframe)) == {0, 1, 2}
    recon.kf_disps[2] *= 1.3  # keyframe 2's depth is 23% too small: inconsistent with the others
    cloud = fuse_cloud(recon, min_views=1)
    assert not np.any(cloud.keyframe == 2)
    for k in (0, 1):
        assert (cloud.keyframe == k).sum() > 0.5 * h * w
    np.testing.assert_allclose(cloud.xyz[:, 2], PLANE_Z, atol=1e-4)
    # with 4 keyframes and one corrupted, min_views=2 still keeps the other three
    recon4 = plane_recon()
    recon4.kf_disps[1] *= 0.7
    c4 = fuse_cloud(recon4, min_views=2)
    assert not np.any(c4.keyframe == 1) and set(np.unique(c4.keyframe)) == {0, 2, 3}
    np.testing.assert_allclose(c4.xyz[:, 2], PLANE_Z, atol=1e-4)


def test_fuse_points_low_confidence_neighbours_still_confirm():
    recon = plane_recon(n_frames=9, kf_indices=(0, 4, 8))
    h, w = recon.kf_disps.shape[1:]
    recon.kf_confidence[1:] = 0.1  # only keyframe 0 is confident; its neighbours' depths are right but weak
    cloud = fuse_cloud(recon, min_confidence=0.5, min_views=2)
    assert set(np.unique(cloud.keyframe)) == {0} and len(cloud) > 0.5 * h * w
    np.testing.assert_allclose(cloud.xyz[:, 2], PLANE_Z, atol=1e-4)
    # demanding confident neighbours (the old rule) leaves nothing to confirm keyframe 0
    assert len(fuse_cloud(recon, min_confidence=0.5, ref_confidence=0.5, min_views=2)) == 0
    recon.kf_disps[1:] *= 1.3  # wrong weak neighbours do not confirm either
    assert len(fuse_cloud(recon, min_confidence=0.5, min_views=2)) == 0


def test_fuse_points_single_keyframe_and_confidence():
    recon = plane_recon(n_frames=1, kf_indices=(0,))
    h, w = recon.kf_disps.shape[1:]
    recon.kf_confidence[0, :, : w // 2] = 0.1
    recon.kf_disps[0, 0, -1] = np.nan
    recon.kf_disps[0, 1, -1] = -1.0
    cloud = fuse_cloud(recon, min_confidence=0.5)
    assert len(cloud) == h * (w - w // 2) - 2
    np.testing.assert_allclose(cloud.xyz[:, 2], PLANE_Z, atol=1e-4)
    assert len(fuse_cloud(recon, min_confidence=0.0)) == h * w - 2


# ---------------------------------------------------------------------------- COLMAP
def test_colmap_model_loads_in_pycolmap(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    recon = plane_recon()
    cloud = fuse_cloud(recon, min_views=2, max_points=500)
    out = write_colmap(recon, tmp_path / "colmap", cloud)
    model = pycolmap.Reconstruction(str(out))
    assert model.num_images() == len(recon.kf_indices)
    assert model.num_points3D() == len(cloud)
    cam = next(iter(model.cameras.values()))
    assert (cam.width, cam.height) == recon.image_size and cam.model_name == "PINHOLE"
    np.testing.assert_allclose(cam.params, recon.intrinsics + np.array([0, 0, 0.5, 0.5]))
    by_name = {im.name: im for im in model.images.values()}
    for k, idx in enumerate(recon.kf_indices):
        im = by_name[f"frame_{idx:06d}.png"]
        np.testing.assert_allclose(im.projection_center(), recon.kf_poses[k][:3, 3], atol=1e-7)
        T_cw = np.eye(4)
        T_cw[:3] = im.cam_from_world().matrix()
        np.testing.assert_allclose(invert(T_cw), recon.kf_poses[k], atol=1e-7)
        assert (out / "images" / im.name).is_file()
    # every point is observed where it projects in its keyframe (COLMAP's +0.5 pixel convention)
    for pid, p in list(model.points3D.items())[:50]:
        el = p.track.elements[0]
        im = model.images[el.image_id]
        uv = cam.img_from_cam(im.cam_from_world() * p.xyz)
        np.testing.assert_allclose(uv, im.points2D[el.point2D_idx].xy, atol=2e-3)
        assert im.points2D[el.point2D_idx].point3D_id == pid


# ---------------------------------------------------------------------------- write_outputs
def test_write_outputs_parses_back(tmp_path):
    recon = plane_recon()
    paths = write_outputs(recon, tmp_path / "run", colmap=True, fuse={"min_views": 2, "max_points": 1000})
    assert set(paths) == {"trajectory", "keyframes", "points", "summary", "colmap"}
    t, T = read_tum(paths["trajectory"])
    np.testing.assert_allclose(t, recon.timestamps, atol=1e-6)
    np.testing.assert_allclose(T, recon.poses, atol=1e-7)

    kf = np.load(paths["keyframes"])
    assert set(kf.files) == {"indices", "timestamps", "poses", "disps", "confidence", "intrinsics", "image_size",
                             "feature_intrinsics"}
    np.testing.assert_array_equal(kf["indices"], recon.kf_indices)
    np.testing.assert_allclose(kf["timestamps"], recon.timestamps[recon.kf_indices])
    np.testing.assert_allclose(kf["poses"], recon.kf_poses)
    assert kf["disps"].shape == recon.kf_disps.shape and kf["disps"].dtype == np.float32
    np.testing.assert_allclose(kf["feature_intrinsics"], recon.feature_intrinsics)
    assert tuple(kf["image_size"]) == recon.image_size

    xyz, rgb = read_ply(paths["points"])
    assert 0 < len(xyz) <= 1000 and rgb is not None
    np.testing.assert_allclose(xyz[:, 2], PLANE_Z, atol=1e-4)

    s = json.loads(paths["summary"].read_text())
    for key in ("frames", "keyframes", "fps", "wall_s", "peak_rss_mb", "intrinsics", "focal_estimated",
                "correspondence", "tracked_fraction", "interrupted", "input_size", "processing_size", "points"):
        assert key in s, key
    assert s["frames"] == 12 and s["keyframes"] == 4 and s["points"] == len(xyz)
    assert s["intrinsics"] == pytest.approx(list(recon.input_intrinsics))
    assert s["tracked_fraction"] == pytest.approx(11 / 12)
    assert s["input_size"] == [256, 192] and s["processing_size"] == [128, 96]
    assert s["ba_iters"] == 7 and s["correspondence"] == "oracle" and s["interrupted"] is False

    assert (tmp_path / "run" / "colmap" / "points3D.txt").is_file()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temporaries left
    # rewriting replaces everything, including the COLMAP folder
    recon.stats["wall_s"] = float("nan")
    paths2 = write_outputs(recon, tmp_path / "run", colmap=True, ply=False)
    assert "points" not in paths2 and json.loads(paths2["summary"].read_text())["wall_s"] is None
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
