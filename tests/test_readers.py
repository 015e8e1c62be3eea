"""Readers on tiny hand-written fixtures of every layout (see slam/data/*.py for the conventions)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.data.calib import Undistorter, parse_calib_text, read_calib
from slam.data.detect import detect_kind, open_sequence
from slam.data.euroc import EurocSequence, interpolate_poses
from slam.data.folder import FolderSequence, natural_key, timestamps_from_names
from slam.data.kitti import KittiSequence
from slam.data.sequence import InputError
from slam.data.tartanair import TartanAirSequence
from slam.data.tum import TumRgbdSequence, associate_nearest, associate_unique
from slam.data.video import VideoSequence
from slam.geometry.pose import cv_to_ned, matrix_to_tq
from slam.io.tum import write_tum


# --------------------------------------------------------------------- helpers
def random_poses(rng: np.random.Generator, n: int) -> np.ndarray:
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=rng.integers(1 << 30)).as_matrix()
    T[:, :3, 3] = rng.normal(size=(n, 3))
    return T


def random_image(rng: np.random.Generator, w: int = 32, h: int = 24) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), img)


def smooth_texture(w: int, h: int) -> np.ndarray:
    """A smooth RGB pattern (so that undistortion visibly moves content)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(u / 5.0)
    g = 127 + 120 * np.cos(v / 4.0)
    b = 127 + 120 * np.sin((u + v) / 7.0)
    return np.stack([r, g, b], -1).astype(np.uint8)


def assert_input_error(fn, *needles: str) -> InputError:
    with pytest.raises(InputError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return ei.value


# ----------------------------------------------------------------- calibration
def test_calib_parsing(tmp_path):
    c = parse_calib_text("# my camera\n500, 501.5, 320 240  # fx fy cx cy\n")
    assert (c.fx, c.fy, c.cx, c.cy, c.dist, c.has_distortion) == (500, 501.5, 320, 240, (), False)
    c = parse_calib_text("500 500 320 240 0.1 -0.2 0.001 0.002 0.05")
    assert c.dist == (0.1, -0.2, 0.001, 0.002, 0.05) and c.has_distortion
    assert parse_calib_text("1 2 3 4 0 0 0 0").has_distortion is False
    K = c.intrinsics(640, 480)
    assert (K.width, K.height, K.dist) == (640, 480, (0.1, -0.2, 0.001, 0.002, 0.05))

    bad = tmp_path / "calib.txt"
    bad.write_text("500 500 320 240 0.1\n")
    assert_input_error(lambda: read_calib(bad), str(bad), "found 5")
    bad.write_text("fx=500 500 320 240\n")
    assert_input_error(lambda: read_calib(bad), str(bad), "fx=500")
    bad.write_text("0 500 320 240\n")
    assert_input_error(lambda: read_calib(bad), str(bad), "positive")
    assert_input_error(lambda: read_calib(tmp_path / "nope.txt"), "nope.txt")


def test_undistorter_removes_known_distortion():
    """Distort a pattern with a known model, undistort it back, compare in the valid centre."""
    w, h = 160, 120
    K = np.array([[150.0, 0, 80.0], [0, 150.0, 60.0], [0, 0, 1]])
    D = np.array([0.15, -0.1, 0.001, -0.002, 0.0])
    clean = smooth_texture(w, h)
    # The distorted image samples the clean one at the undistorted location of each pixel.
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    pts = cv2.undistortPoints(np.stack([u, v], -1).reshape(-1, 1, 2), K, D, P=K).reshape(h, w, 2)
    distorted = cv2.remap(clean, pts[..., 0], pts[..., 1], cv2.INTER_LINEAR)
    calib = parse_calib_text(" ".join(str(x) for x in [150, 150, 80, 60, *D]))
    und = Undistorter(calib, w, h).image(distorted)
    c = (slice(20, h - 20), slice(25, w - 25))
    err_before = np.abs(distorted[c].astype(float) - clean[c]).mean()
    err_after = np.abs(und[c].astype(float) - clean[c]).mean()
    assert err_after < 3.0 < err_before


# ---------------------------------------------------------------------- folder
def test_folder_reader_images_order_calib_and_selection(tmp_path):
    rng = np.random.default_rng(0)
    names = ["frame1.png", "frame2.jpg", "frame10.png", "frame3.bmp", "frame20.tif"]
    order = ["frame1.png", "frame2.jpg", "frame3.bmp", "frame10.png", "frame20.tif"]
    imgs = {n: random_image(rng) for n in names}
    imgs["frame3.bmp"] = np.repeat(rng.integers(0, 256, (24, 32, 1), dtype=np.uint8), 3, 2)  # grey
    imgs["frame2.jpg"] = smooth_texture(32, 24)  # JPEG is lossy: use content it keeps
    for n, im in imgs.items():
        write_rgb(tmp_path / n, im[:, :, 0] if n == "frame3.bmp" else im)  # the BMP stored single-channel
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "calib.txt").write_text("30 31 15.5 11.5\n")

    seq = FolderSequence(tmp_path)
    assert (seq.kind, len(seq)) == ("folder", 5)
    assert [Path(f.source).name for f in seq] == order
    assert seq.intrinsics.as_array().tolist() == [30, 31, 15.5, 11.5]
    assert (seq.intrinsics.width, seq.intrinsics.height, seq.intrinsics.dist) == (32, 24, ())
    np.testing.assert_allclose(seq.timestamps, np.arange(5) / 30.0)
    assert seq.gt_poses is None
    for f in seq:
        name = Path(f.source).name
        assert f.image.dtype == np.uint8 and f.image.shape == (24, 32, 3)
        if name.endswith(".jpg"):
            assert np.abs(f.image.astype(int) - imgs[name]).mean() < 8  # lossy
        else:
            np.testing.assert_array_equal(f.image, imgs[name])
    assert np.array_equal(seq[2].image[..., 0], seq[2].image[..., 2])  # grey -> 3 equal channels

    sub = FolderSequence(tmp_path, start=1, end=5, stride=2, fps=10)
    assert [Path(f.source).name for f in sub] == ["frame2.jpg", "frame10.png"]
    np.testing.assert_allclose(sub.timestamps, [0.1, 0.3])
    assert [f.index for f in sub] == [0, 1]
    assert len(FolderSequence(tmp_path, max_frames=2)) == 2
    assert len(FolderSequence(tmp_path, stride=2)) == 3

    # An explicit calibration overrides calib.txt.
    other = tmp_path.parent / "other_calib.txt"
    other.write_text("40 40 16 12")
    assert FolderSequence(tmp_path, calib=other).intrinsics.fx == 40


def test_folder_timestamps_from_names(tmp_path):
    assert natural_key("a2.png") < natural_key("a10.png")
    ns = [1403636579763555584, 1403636579813555456, 1403636579863555584]
    np.testing.assert_allclose(timestamps_from_names([str(v) for v in ns]), np.array(ns) / 1e9)
    np.testing.assert_allclose(timestamps_from_names(["1305031102.175304", "1305031102.21"]),
                               [1305031102.175304, 1305031102.21])
    assert timestamps_from_names(["000000", "000001"]) is None  # frame numbers, not times
    rng = np.random.default_rng(1)
    # Decimal names sort by value (natural order would put .21 before .175304).
    for n in ["1305031102.21", "1305031102.175304", "1305031103.0"]:
        write_rgb(tmp_path / f"{n}.png", random_image(rng))
    seq = FolderSequence(tmp_path)
    np.testing.assert_allclose(seq.timestamps, [1305031102.175304, 1305031102.21, 1305031103.0])
    assert seq.intrinsics is None  # no calib.txt: unknown camera


def test_folder_undistorts_with_distorted_calib(tmp_path):
    img = smooth_texture(64, 48)
    write_rgb(tmp_path / "0.png", img)
    (tmp_path / "calib.txt").write_text("60 60 31.5 23.5 0.3 -0.1 0.002 0.001 0.02\n")
    seq = FolderSequence(tmp_path)
    K = seq.intrinsics
    assert (K.fx, K.fy, K.cx, K.cy, K.dist) == (60, 60, 31.5, 23.5, ())
    out = seq[0].image
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() > 5
    Km = np.array([[60, 0, 31.5], [0, 60, 23.5], [0, 0, 1.0]])
    ref = cv2.undistort(img, Km, np.array([0.3, -0.1, 0.002, 0.001, 0.02]), newCameraMatrix=Km)
    assert np.abs(out.astype(int) - ref).mean() < 1.0


def test_folder_bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_input_error(lambda: FolderSequence(empty), str(empty), "no images")
    assert_input_error(lambda: open_sequence(empty), str(empty), "unknown input layout")

    rng = np.random.default_rng(2)
    sizes = tmp_path / "sizes"
    write_rgb(sizes / "a1.png", random_image(rng, 32, 24))
    write_rgb(sizes / "a2.png", random_image(rng, 32, 24))
    write_rgb(sizes / "a3.png", random_image(rng, 30, 24))
    seq = FolderSequence(sizes)  # lazily checked: construction succeeds
    seq[1]
    assert_input_error(lambda: seq[2], str(sizes / "a3.png"), "30x24", "32x24")

    corrupt = tmp_path / "corrupt"
    write_rgb(corrupt / "a1.png", random_image(rng))
    (corrupt / "a2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    seq = FolderSequence(corrupt)
    assert_input_error(lambda: seq[1], str(corrupt / "a2.png"))
    (corrupt / "a0.png").write_bytes(b"")
    assert_input_error(lambda: FolderSequence(corrupt), str(corrupt / "a0.png"))

    badcal = tmp_path / "badcal"
    write_rgb(badcal / "a1.png", random_image(rng))
    (badcal / "calib.txt").write_text("1 2 3\n")
    assert_input_error(lambda: FolderSequence(badcal), str(badcal / "calib.txt"), "found 3")
    (badcal / "calib.txt").unlink()
    assert_input_error(lambda: FolderSequence(badcal, start=5), str(badcal), "no frames selected")


# ------------------------------------------------------------------- TartanAir
def write_tartanair(root: Path, T_cv: np.ndarray, images: list[np.ndarray], depth: dict[int, np.ndarray]):
    for k, im in enumerate(images):
        write_rgb(root / "image_left" / f"{k:06d}_left.png", im)
    tq = matrix_to_tq(cv_to_ned(T_cv))
    np.savetxt(root / "pose_left.txt", tq)
    (root / "depth_left").mkdir(exist_ok=True)
    for k, d in depth.items():
        np.save(root / "depth_left" / f"{k:06d}_left_depth.npy", d)


def test_tartanair_reader(tmp_path):
    rng = np.random.default_rng(3)
    n = 6
    T = random_poses(rng, n)
    imgs = [random_image(rng, 40, 30) for _ in range(n)]
    depth = {0: rng.uniform(1, 5, (30, 40)).astype(np.float32), 3: rng.uniform(1, 5, (30, 40)).astype(np.float32)}
    write_tartanair(tmp_path, T, imgs, depth)
    (tmp_path / "calib.txt").write_text("20 20 19.5 14.5\n")

    assert detect_kind(tmp_path) == "tartanair"
    seq = open_sequence(tmp_path)
    assert isinstance(seq, TartanAirSequence) and len(seq) == n
    np.testing.assert_allclose(seq.gt_poses, T, atol=1e-6)
    np.testing.assert_allclose(seq.timestamps, np.arange(n) / 10.0)
    assert seq.intrinsics.as_array().tolist() == [20, 20, 19.5, 14.5]
    for k, f in enumerate(seq):
        np.testing.assert_array_equal(f.image, imgs[k])
        np.testing.assert_allclose(f.pose, T[k], atol=1e-6)
        if k in depth:
            np.testing.assert_array_equal(f.depth, depth[k])
        else:
            assert f.depth is None

    sub = TartanAirSequence(tmp_path, start=1, stride=2)
    assert len(sub) == 3
    np.testing.assert_allclose(sub.gt_poses, T[1::2], atol=1e-6)
    np.testing.assert_allclose(sub.timestamps, [0.1, 0.3, 0.5])
    assert sub[1].depth is not None and sub[0].depth is None

    (tmp_path / "times.txt").write_text("\n".join(str(1000 + 0.05 * k) for k in range(n)))
    np.testing.assert_allclose(TartanAirSequence(tmp_path).timestamps, 1000 + 0.05 * np.arange(n))

    # Bad pose line names the file and line.
    lines = (tmp_path / "pose_left.txt").read_text().splitlines()
    lines[2] = "1 2 3"
    (tmp_path / "pose_left.txt").write_text("\n".join(lines))
    assert_input_error(lambda: TartanAirSequence(tmp_path), f"{tmp_path / 'pose_left.txt'}:3")
    (tmp_path / "pose_left.txt").write_text("\n".join(lines[:3]))
    assert_input_error(lambda: TartanAirSequence(tmp_path), str(tmp_path / "pose_left.txt"))


def test_tartanair_default_intrinsics(tmp_path):
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:200, 300:400] = (10, 200, 30)
    write_tartanair(tmp_path, np.tile(np.eye(4), (2, 1, 1)), [img, img], {})
    seq = TartanAirSequence(tmp_path)
    assert seq.intrinsics.as_array().tolist() == [320, 320, 320, 240]
    assert seq.intrinsics.size == (640, 480)
    np.testing.assert_array_equal(seq[1].image, img)


# ----------------------------------------------------------------------- EuRoC
def body_trajectory(t: np.ndarray) -> np.ndarray:
    """Constant velocity and constant angular velocity about a fixed axis (exact under lerp+slerp)."""
    T = np.tile(np.eye(4), (len(t), 1, 1))
    R0 = Rotation.from_euler("xyz", [0.3, -0.2, 1.0])
    T[:, :3, :3] = (R0 * Rotation.from_rotvec(np.outer(t, [0.2, 0.5, -0.4]))).as_matrix()
    T[:, :3, 3] = np.array([1.0, 2.0, 0.5]) + np.outer(t, [0.3, -0.1, 0.2])
    return T


def write_euroc(root: Path, rng, t_img_ns, t_gt_ns, T_BS, dist=(0.0, 0.0, 0.0, 0.0)):
    cam = root / "mav0" / "cam0"
    (cam / "data").mkdir(parents=True)
    imgs = []
    with open(cam / "data.csv", "w") as f:
        f.write("#timestamp [ns],filename\n")
        for t in t_img_ns:
            im = rng.integers(0, 256, (24, 32), dtype=np.uint8)
            imgs.append(im)
            cv2.imwrite(str(cam / "data" / f"{t}.png"), im)
            f.write(f"{t},{t}.png\n")
    (cam / "sensor.yaml").write_text(
        "%YAML:1.0\n"
        "sensor_type: camera\ncomment: VI-Sensor cam0 (MT9M034)\n"
        "T_BS:\n  cols: 4\n  rows: 4\n  data: [" + ", ".join(f"{v:.17g}" for v in T_BS.ravel()) + "]\n"
        "rate_hz: 20\nresolution: [32, 24]\ncamera_model: pinhole\n"
        "intrinsics: [30.5, 30.25, 15.75, 11.5] #fu, fv, cu, cv\n"
        "distortion_model: radial-tangential\n"
        f"distortion_coefficients: [{', '.join(str(d) for d in dist)}]\n")
    T_WB = body_trajectory(np.asarray(t_gt_ns) / 1e9 - 100.0)
    q = Rotation.from_matrix(T_WB[:, :3, :3]).as_quat()  # x y z w
    gt = root / "mav0" / "state_groundtruth_estimate0"
    gt.mkdir(parents=True)
    with open(gt / "data.csv", "w") as f:
        f.write("#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], "
                "q_RS_z [], v_RS_R_x [m s^-1], v_RS_R_y, v_RS_R_z, b_w_x, b_w_y, b_w_z, b_a_x, b_a_y, b_a_z\n")
        for t, T, qq in zip(t_gt_ns, T_WB, q):
            vals = [*T[:3, 3], qq[3], qq[0], qq[1], qq[2]] + [0.0] * 9
            f.write(f"{t}," + ",".join(f"{v:.17g}" for v in vals) + "\n")
    return imgs


def test_euroc_reader_body_to_camera_and_interpolation(tmp_path):
    rng = np.random.default_rng(4)
    t0 = 100 * 10**9
    t_gt = t0 + np.arange(0, 400) * 5_000_000  # 200 Hz for 2 s
    t_img = t0 + np.array([0, 3_000_000, 51_234_567, 1_000_000_000, 1_994_999_999, 2_500_000_000])  # last: no GT
    T_BS = np.eye(4)
    T_BS[:3, :3] = Rotation.from_euler("zyx", [90, 5, -3], degrees=True).as_matrix()
    T_BS[:3, 3] = [-0.02, 0.07, 0.01]
    imgs = write_euroc(tmp_path / "MH_01_easy", rng, t_img, t_gt, T_BS)

    for root in (tmp_path / "MH_01_easy", tmp_path / "MH_01_easy" / "mav0"):
        assert detect_kind(root) == "euroc"
        seq = open_sequence(root)
        assert isinstance(seq, EurocSequence) and len(seq) == 6 and seq.name == "MH_01_easy"
        np.testing.assert_allclose(seq.timestamps, t_img / 1e9)
        expected = body_trajectory(t_img[:5] / 1e9 - 100.0) @ T_BS
        np.testing.assert_allclose(seq.gt_poses[:5], expected, atol=1e-9)
        assert np.isnan(seq.gt_poses[5]).all() and seq[5].pose is None
        assert seq.intrinsics.as_array().tolist() == [30.5, 30.25, 15.75, 11.5]
        f = seq[2]
        np.testing.assert_array_equal(f.image, np.repeat(imgs[2][:, :, None], 3, 2))
        np.testing.assert_allclose(f.pose, expected[2], atol=1e-9)

    # Body pose != camera pose: T_BS really is applied.
    assert not np.allclose(seq.gt_poses[0], body_trajectory(np.zeros(1))[0], atol=1e-3)
    sub = EurocSequence(tmp_path / "MH_01_easy", start=1, max_frames=2)
    np.testing.assert_allclose(sub.timestamps, t_img[1:3] / 1e9)


def test_euroc_undistorts_and_checks_resolution(tmp_path):
    rng = np.random.default_rng(5)
    t = 10**18 + np.arange(3) * 50_000_000
    write_euroc(tmp_path, rng, t, t, np.eye(4), dist=(-0.28, 0.07, 0.0002, 0.00002))
    seq = EurocSequence(tmp_path)
    assert seq.intrinsics.dist == () and seq.intrinsics.fx == 30.5
    raw = cv2.imread(str(tmp_path / "mav0/cam0/data" / f"{t[0]}.png"), cv2.IMREAD_GRAYSCALE)
    assert not np.array_equal(seq[0].image[..., 0], raw)
    yaml = tmp_path / "mav0/cam0/sensor.yaml"
    yaml.write_text(yaml.read_text().replace("resolution: [32, 24]", "resolution: [752, 480]"))
    assert_input_error(lambda: EurocSequence(tmp_path), str(yaml), "752x480")
    yaml.write_text("intrinsics: [1, 2\n")
    assert_input_error(lambda: EurocSequence(tmp_path), str(yaml))


def test_interpolate_poses_gaps():
    t = np.array([0, 10, 20, 100])
    T = body_trajectory(t / 100.0)
    out = interpolate_poses(np.array([-1, 0, 5, 20, 50, 100, 101]), t, T, max_gap=15)
    assert np.isnan(out[[0, 4, 6]]).all()
    np.testing.assert_allclose(out[[1, 3, 5]], T[[0, 2, 3]])
    np.testing.assert_allclose(out[2], body_trajectory(np.array([0.05]))[0], atol=1e-12)


# ----------------------------------------------------------------------- TUM
def test_tum_association():
    q = np.array([0.0, 1.0, 2.0, 3.0])
    r = np.array([2.015, 0.01, 0.99, 1.005, 5.0])
    np.testing.assert_array_equal(associate_nearest(q, r, 0.02), [1, 3, 0, -1])
    # one-to-one: the closer of two queries wins a shared candidate
    np.testing.assert_array_equal(associate_unique(np.array([1.0, 1.012]), np.array([1.01]), 0.02), [-1, 0])
    np.testing.assert_array_equal(associate_nearest(np.array([1.0, 1.012]), np.array([1.01]), 0.02), [0, 0])


def test_tum_rgbd_reader(tmp_path):
    rng = np.random.default_rng(6)
    seq_dir = tmp_path / "rgbd_dataset_freiburg3_long_office"
    t_rgb = 1305031102.0 + np.array([0.0, 0.033, 0.066, 0.1, 0.5])
    t_gt = np.concatenate([1305031102.0 + np.array([0.004, 0.03, 0.04, 0.07, 0.085, 0.12]), [1305031102.53]])
    T_gt = random_poses(rng, len(t_gt))
    write_tum(seq_dir / "groundtruth.txt", t_gt, T_gt)
    imgs, depths = [], []
    rgb_lines, depth_lines = ["# color images", "# file: 'x'", "# timestamp filename"], ["# depth maps"]
    for k, t in enumerate(t_rgb):
        im = smooth_texture(640, 480)  # TUM's size (the defaults need it); compressible
        im[:16, :16] = random_image(rng, 16, 16)
        imgs.append(im)
        write_rgb(seq_dir / "rgb" / f"{t:.6f}.png", im)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        if k != 2:
            d = np.zeros((480, 640), np.uint16)
            d[100:120, 200:230] = rng.integers(0, 40000, (20, 30))
            depths.append(d)
            td = t + 0.004
            (seq_dir / "depth").mkdir(exist_ok=True)
            cv2.imwrite(str(seq_dir / "depth" / f"{td:.6f}.png"), d)
            depth_lines.append(f"{td:.6f} depth/{td:.6f}.png")
        else:
            depths.append(None)
    (seq_dir / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (seq_dir / "depth.txt").write_text("\n".join(depth_lines) + "\n")

    assert detect_kind(seq_dir) == "tum"
    seq = open_sequence(seq_dir)
    assert isinstance(seq, TumRgbdSequence) and len(seq) == 5
    np.testing.assert_allclose(seq.timestamps, t_rgb)
    # nearest GT within 20 ms: 0.0->0.004, 0.033->0.03, 0.066->0.07, 0.1->0.085 (15 ms), 0.5->0.53 too far
    expected = [0, 1, 3, 4]
    np.testing.assert_allclose(seq.gt_poses[:4], T_gt[expected], atol=1e-6)
    assert np.isnan(seq.gt_poses[4]).all() and seq[4].pose is None
    K = seq.intrinsics  # freiburg3 defaults, no distortion
    assert (K.fx, K.fy, K.cx, K.cy, K.dist) == (535.4, 539.2, 320.1, 247.6, ())
    for k, f in enumerate(seq):
        np.testing.assert_array_equal(f.image, imgs[k])
        if depths[k] is None:
            assert f.depth is None
        else:
            np.testing.assert_allclose(f.depth, depths[k] / 5000.0, rtol=1e-6)

    (seq_dir / "calib.txt").write_text("30 30 15.5 11.5")
    assert TumRgbdSequence(seq_dir).intrinsics.fx == 30


def test_tum_freiburg1_defaults_undistort(tmp_path):
    d = tmp_path / "rgbd_dataset_freiburg1_xyz"
    img = smooth_texture(640, 480)
    write_rgb(d / "rgb" / "1.0.png", img)
    (d / "rgb.txt").write_text("1.0 rgb/1.0.png\n")
    seq = TumRgbdSequence(d)
    K = seq.intrinsics
    assert (K.fx, K.fy, K.cx, K.cy, K.dist, K.size) == (517.3, 516.5, 318.6, 255.3, (), (640, 480))
    assert seq.gt_poses is None
    assert np.abs(seq[0].image.astype(int) - img).mean() > 5
    assert TumRgbdSequence(tmp_path / "rgbd_dataset_freiburg1_xyz", calib=None).intrinsics is not None
    d2 = tmp_path / "my_sequence"
    d.rename(d2)
    assert TumRgbdSequence(d2).intrinsics is None


# ---------------------------------------------------------------------- KITTI
def write_kitti(root: Path, rng, n: int, cam: str = "image_0"):
    seq = root / "sequences" / "03"
    grey = [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(n)]
    for k, g in enumerate(grey):
        write_rgb(seq / cam / f"{k:06d}.png", g)
    P0 = [700.0, 0, 16.2, 0, 0, 701.0, 11.7, 0, 0, 0, 1, 0]
    P2 = [700.0, 0, 16.2, 45.0, 0, 701.0, 11.7, -0.3, 0, 0, 1, 0.003]
    (seq / "calib.txt").write_text("P0: " + " ".join(f"{v:e}" for v in P0) + "\nP1: " + " ".join(f"{v:e}" for v in P0)
                                   + "\nP2: " + " ".join(f"{v:e}" for v in P2) + "\nTr: " + " ".join(["0"] * 12) + "\n")
    (seq / "times.txt").write_text("\n".join(f"{0.1036 * k:e}" for k in range(n)) + "\n")
    T = random_poses(rng, n)
    (root / "poses").mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "poses" / "03.txt", T[:, :3, :4].reshape(n, 12), fmt="%.12e")
    return seq, grey, T, np.array(P2).reshape(3, 4)


def test_kitti_reader(tmp_path):
    rng = np.random.default_rng(7)
    seq_dir, grey, T, _ = write_kitti(tmp_path, rng, 5)
    assert detect_kind(seq_dir) == "kitti"
    seq = open_sequence(seq_dir, stride=2)
    assert isinstance(seq, KittiSequence) and len(seq) == 3
    assert seq.intrinsics.as_array().tolist() == [700, 701, 16.2, 11.7]
    np.testing.assert_allclose(seq.gt_poses, T[::2], atol=1e-10)
    np.testing.assert_allclose(seq.timestamps, 0.1036 * np.arange(0, 5, 2))
    for f, g in zip(seq, grey[::2]):
        np.testing.assert_array_equal(f.image, np.repeat(g[:, :, None], 3, 2))

    pose_file = tmp_path / "poses" / "03.txt"
    lines = pose_file.read_text().splitlines()
    lines[1] = lines[1] + " 7"
    pose_file.write_text("\n".join(lines))
    assert_input_error(lambda: KittiSequence(seq_dir), f"{pose_file}:2", "found 13")
    pose_file.write_text("\n".join(lines[:1]))
    assert_input_error(lambda: KittiSequence(seq_dir), str(pose_file), "1 poses for 5 images")
    pose_file.unlink()
    assert KittiSequence(seq_dir).gt_poses is None
    alt = tmp_path / "alt.txt"
    np.savetxt(alt, T[:, :3, :4].reshape(5, 12))
    np.testing.assert_allclose(KittiSequence(seq_dir, poses=alt).gt_poses, T)


def test_kitti_colour_camera_offset(tmp_path):
    rng = np.random.default_rng(8)
    seq_dir, _, T, P2 = write_kitti(tmp_path, rng, 3, cam="image_2")
    seq = KittiSequence(seq_dir)
    t = np.linalg.solve(P2[:, :3], P2[:, 3])  # cam2 = cam0 + t
    # A world point seen by cam0 at X0 is seen by cam2 at X0 + t.
    X0 = np.array([0.3, -0.2, 4.0, 1.0])
    Xw = T[1] @ X0
    X2 = np.linalg.inv(seq.gt_poses[1]) @ Xw
    np.testing.assert_allclose(X2[:3], X0[:3] + t, atol=1e-9)


# ---------------------------------------------------------------------- video
def write_video(path: Path, n: int, w: int = 64, h: int = 48, fps: float = 10.0) -> list[np.ndarray]:
    """Frames whose brightness encodes the frame number (robust to compression)."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    frames = []
    for k in range(n):
        f = np.full((h, w, 3), 10 + 10 * k, np.uint8)
        f[:, : w // 2, 0] = 255 - 10 * k  # R channel in RGB
        frames.append(f)
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    return frames


def frame_number(image: np.ndarray) -> int:
    return int(round((image[:, -8:, 1].mean() - 10) / 10))


def test_video_reader(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, 20)
    assert detect_kind(path) == "video" and detect_kind(tmp_path) == "video"
    seq = open_sequence(path)
    assert isinstance(seq, VideoSequence) and len(seq) == 20 and seq.kind == "video"
    assert seq.intrinsics is None and seq.gt_poses is None and seq.fps == pytest.approx(10.0)
    np.testing.assert_allclose(seq.timestamps, np.arange(20) / 10.0)
    frames = list(seq)
    assert [frame_number(f.image) for f in frames] == list(range(20))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].image[0, 0, 0] > 200 and frames[0].image[0, -1, 0] < 40  # RGB, not BGR

    sub = VideoSequence(path, start=2, end=15, stride=3, max_frames=4)
    assert sub.raw_indices == [2, 5, 8, 11] and len(sub) == 4
    np.testing.assert_allclose(sub.timestamps, [0.2, 0.5, 0.8, 1.1])
    assert [frame_number(f.image) for f in sub] == [2, 5, 8, 11]
    # random access, including going back
    assert frame_number(sub[3].image) == 11 and frame_number(sub[0].image) == 2
    assert frame_number(sub[2].image) == 8 and frame_number(sub[-1].image) == 11
    assert len(VideoSequence(path, fps=25)) == 20 and VideoSequence(path, fps=25).timestamps[1] == 0.04


def test_video_sidecars(tmp_path):
    path = tmp_path / "walk.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for k in range(6):
        vw.write(np.full((48, 64, 3), 20 * k, np.uint8))
    vw.release()
    (tmp_path / "calib.txt").write_text("1 1 1 1")  # generic one loses to <stem>.calib.txt
    (tmp_path / "walk.calib.txt").write_text("50 50 31.5 23.5 0.1 0 0 0")
    rng = np.random.default_rng(9)
    T = random_poses(rng, 3)
    write_tum(tmp_path / "walk.groundtruth.txt", np.array([0.0, 0.21, 0.4]), T)  # 0.21: within 50 ms of 0.2
    seq = open_sequence(tmp_path)
    assert isinstance(seq, VideoSequence) and len(seq) == 6
    K = seq.intrinsics
    assert (K.fx, K.fy, K.cx, K.cy, K.dist, K.size) == (50, 50, 31.5, 23.5, (), (64, 48))
    np.testing.assert_allclose(seq.gt_poses[[0, 2, 4]], T, atol=1e-6)
    assert np.isnan(seq.gt_poses[[1, 3, 5]]).all()
    assert seq[2].pose is not None and seq[1].pose is None
    # the calib override wins over sidecars; a wrong field count is an InputError naming it
    over = tmp_path / "override.txt"
    over.write_text("40 41 30 20")
    assert open_sequence(path, calib=over).intrinsics.fy == 41
    over.write_text("40 41 30 20 1")
    assert_input_error(lambda: open_sequence(path, calib=over), str(over), "found 5")


def test_video_bad_inputs(tmp_path):
    empty = tmp_path / "empty.mp4"
    vw = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    vw.release()
    assert_input_error(lambda: open_sequence(empty), str(empty))
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    assert_input_error(lambda: VideoSequence(zero), str(zero))
    corrupt = tmp_path / "corrupt.mkv"
    corrupt.write_bytes(np.random.default_rng(10).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_input_error(lambda: open_sequence(corrupt), str(corrupt))
    assert_input_error(lambda: VideoSequence(tmp_path / "missing.mp4"), "missing.mp4")


# ---------------------------------------------------------------------- detect
def test_detect_errors_and_layouts(tmp_path):
    missing = tmp_path / "does_not_exist"
    assert_input_error(lambda: open_sequence(missing), f"{missing}: no such file or directory")
    assert_input_error(lambda: detect_kind(missing), str(missing))
    other = tmp_path / "stuff"
    other.mkdir()
    (other / "readme.md").write_text("hello")
    e = assert_input_error(lambda: open_sequence(other), str(other), "unknown input layout")
    assert "TartanAir/EuRoC/TUM/KITTI" in str(e)
    txt = tmp_path / "notes.txt"
    txt.write_text("not a video")
    assert_input_error(lambda: open_sequence(txt), str(txt), "unknown input layout")

    rng = np.random.default_rng(11)
    folder = tmp_path / "imgs"
    write_rgb(folder / "a.png", random_image(rng))
    assert detect_kind(folder) == "folder"
    assert_input_error(lambda: open_sequence(folder / "a.png"), str(folder / "a.png"), "single image")
    cal = tmp_path / "cal.txt"
    cal.write_text("10 10 15.5 11.5 0 0 0 0 0")
    seq = open_sequence(folder, calib=cal, fps=5)
    assert seq.kind == "folder" and seq.intrinsics.fx == 10 and seq.intrinsics.dist == ()
    cal.write_text("10 10 15.5 11.5 0 0")
    assert_input_error(lambda: open_sequence(folder, calib=cal), str(cal), "found 6")
