"""``slam synth`` and the dataset writers: exact layouts, round trips, bad arguments."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from slam.cli import main
from slam.data.synthetic import MOTION_KINDS, SCENE_KINDS, make_world
from slam.data.synthetic.writers import EUROC_T0_NS, euroc_T_BS, write_sequence
from slam.geometry.camera import Intrinsics
from slam.geometry.pose import ned_to_cv, tq_to_matrix
from slam.io.tum import read_tum

SIZE = dict(width=96, height=72)


def _count_video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    n, shape = 0, (0, 0)
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n, shape = n + 1, img.shape[:2]
    return n, shape


@pytest.fixture(scope="module")
def dyn_seq():
    return make_world(seed=8, scene="table", motion="orbit", frames=7, dynamic=True, **SIZE)


def test_video_layout_through_cli(tmp_path):
    out = tmp_path / "vid"
    rc = main(["synth", str(out), "--seed", "2", "--frames", "9", "--size", "96x72", "--scene", "table",
               "--motion", "orbit", "--focal", "80", "--depth", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["calib.txt", "depth", "groundtruth.txt", "synth.json",
                                                     "video.mp4"]
    n, shape = _count_video_frames(out / "video.mp4")
    assert n == 9 and shape == (72, 96)
    ref = make_world(seed=2, scene="table", motion="orbit", frames=9, focal=80.0, **SIZE)
    stamps, poses = read_tum(out / "groundtruth.txt")
    np.testing.assert_allclose(stamps, np.arange(9) / 30.0, atol=1e-6)
    np.testing.assert_allclose(poses, ref.gt_poses, atol=1e-6)
    fx, fy, cx, cy = map(float, (out / "calib.txt").read_text().split())
    K = ref.intrinsics
    np.testing.assert_allclose([fx, fy, cx, cy], [80.0, 80.0, K.cx, K.cy], rtol=1e-8)
    depths = sorted((out / "depth").iterdir())
    assert [p.name for p in depths] == [f"{k:06d}.npy" for k in range(9)]
    np.testing.assert_array_equal(np.load(depths[3]), ref[3].depth)
    # the video is close to the rendered frames (H.264 crf 18; 4:2:0 chroma costs most of the error)
    cap = cv2.VideoCapture(str(out / "video.mp4"))
    first = cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2GRAY).astype(float)
    assert np.abs(first - cv2.cvtColor(ref[0].image, cv2.COLOR_RGB2GRAY)).mean() < 4.0
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == 2 and meta["scene"] == "table" and meta["motion"] == "orbit" and meta["frames"] == 9
    assert meta["format"] == "video" and meta["focal"] == 80.0 and meta["command"][:2] == ["slam", "synth"]
    assert (meta["width"], meta["height"]) == (96, 72) and meta["intrinsics"]["fx"] == 80.0


def test_tartanair_layout(tmp_path, dyn_seq):
    seq = dyn_seq
    out = write_sequence(seq, tmp_path / "ta", "tartanair")
    n = len(seq)
    assert sorted(p.name for p in out.iterdir()) == ["calib.txt", "depth_left", "dynamic_mask", "image_left",
                                                     "pose_left.txt", "synth.json"]
    assert sorted(p.name for p in (out / "image_left").iterdir()) == [f"{k:06d}_left.png" for k in range(n)]
    assert sorted(p.name for p in (out / "depth_left").iterdir()) == [f"{k:06d}_left_depth.npy" for k in range(n)]
    assert sorted(p.name for p in (out / "dynamic_mask").iterdir()) == [f"{k:06d}_mask.png" for k in range(n)]
    img = cv2.cvtColor(cv2.imread(str(out / "image_left" / "000004_left.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img, seq[4].image)
    depth = np.load(out / "depth_left" / "000004_left_depth.npy")
    assert depth.dtype == np.float32
    np.testing.assert_array_equal(depth, seq[4].depth)
    mask = cv2.imread(str(out / "dynamic_mask" / "000004_mask.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(mask > 127, seq.dynamic_mask(4))
    rows = np.loadtxt(out / "pose_left.txt")
    assert rows.shape == (n, 7)
    np.testing.assert_allclose(ned_to_cv(tq_to_matrix(rows)), seq.gt_poses, atol=1e-8)
    K = seq.intrinsics
    np.testing.assert_allclose(np.loadtxt(out / "calib.txt"), [K.fx, K.fy, K.cx, K.cy], rtol=1e-9)


def test_tartanair_standard_camera_has_no_calib(tmp_path):
    seq = make_world(seed=1, frames=2, width=640, height=480, focal=320.0)
    seq.intrinsics = Intrinsics(320.0, 320.0, 320.0, 240.0, 640, 480)  # pretend TartanAir's camera
    out = write_sequence(seq, tmp_path / "std", "tartanair")
    assert not (out / "calib.txt").exists() and (out / "pose_left.txt").is_file()


def test_euroc_layout(tmp_path, dyn_seq):
    seq = dyn_seq
    out = write_sequence(seq, tmp_path / "eu", "euroc")
    cam = out / "mav0" / "cam0"
    lines = (cam / "data.csv").read_text().splitlines()
    assert lines[0] == "#timestamp [ns],filename" and len(lines) == len(seq) + 1
    stamps = [int(line.split(",")[0]) for line in lines[1:]]
    assert [line.split(",")[1] for line in lines[1:]] == [f"{t}.png" for t in stamps]
    np.testing.assert_allclose((np.array(stamps) - EUROC_T0_NS) / 1e9, seq.timestamps, atol=1e-9)
    assert sorted(p.name for p in (cam / "data").iterdir()) == sorted(f"{t}.png" for t in stamps)
    assert cv2.imread(str(cam / "data" / f"{stamps[0]}.png")).shape == (72, 96, 3)
    cfg = yaml.safe_load((cam / "sensor.yaml").read_text())
    K = seq.intrinsics
    assert cfg["camera_model"] == "pinhole" and cfg["distortion_model"] == "radial-tangential"
    assert cfg["distortion_coefficients"] == [0.0, 0.0, 0.0, 0.0] and cfg["resolution"] == [96, 72]
    np.testing.assert_allclose(cfg["intrinsics"], [K.fx, K.fy, K.cx, K.cy], rtol=1e-12)
    assert cfg["T_BS"]["cols"] == 4 and cfg["T_BS"]["rows"] == 4
    T_BS = np.array(cfg["T_BS"]["data"], float).reshape(4, 4)
    np.testing.assert_allclose(T_BS, euroc_T_BS(), atol=1e-15)
    assert not np.allclose(T_BS, np.eye(4))
    gt = (out / "mav0" / "state_groundtruth_estimate0" / "data.csv").read_text().splitlines()
    header = [h.strip() for h in gt[0].lstrip("#").split(",")]
    assert len(header) == 17 and header[0] == "timestamp" and header[4] == "q_RS_w []"
    data = np.array([[float(x) for x in line.split(",")] for line in gt[1:]])
    assert data.shape[1] == 17
    assert len(data) == int(np.floor(seq.timestamps[-1] * 200 + 1e-9)) + 1  # 200 Hz
    t_gt = np.array([int(line.split(",")[0]) for line in gt[1:]])
    assert np.all(np.diff(t_gt) == 5_000_000)
    # body poses: T_WB = T_WC T_BS^-1, quaternion w first; compare where camera and gt times coincide
    for k, ts in enumerate(stamps):
        hit = np.nonzero(t_gt == ts)[0]
        if not len(hit):
            continue
        row = data[hit[0]]
        T_WB = tq_to_matrix(np.r_[row[1:4], row[5:8], row[4]])
        np.testing.assert_allclose(T_WB @ T_BS, seq.gt_poses[k], atol=1e-6)
    np.testing.assert_allclose(data[:, 14:], 0.0)  # biases


def test_cli_help_lists_kinds(capsys):
    with pytest.raises(SystemExit) as e:
        main(["synth", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for kind in SCENE_KINDS + MOTION_KINDS + ("tartanair", "euroc", "video"):
        assert kind in text


@pytest.mark.parametrize("extra", [["--size", "10"], ["--size", "8x8"], ["--scene", "moon"], ["--motion", "warp"],
                                   ["--format", "kitti"], ["--frames", "0"], ["--focal", "-5"]])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, extra):
    rc = main(["synth", str(tmp_path / "o"), "--quiet", *extra])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slam synth: error:") and "\n" not in err


def test_cli_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["synth", str(tmp_path), "--frames", "2", "--size", "32x24", "--quiet"]) == 2
    assert main(["synth", str(tmp_path), "--frames", "2", "--size", "32x24", "--quiet", "--force",
                 "--format", "euroc"]) == 0
    assert (tmp_path / "mav0" / "cam0" / "data.csv").is_file()


def test_odd_size_video(tmp_path):
    seq = make_world(seed=0, frames=3, width=33, height=25)
    out = write_sequence(seq, tmp_path / "odd", "video")
    assert _count_video_frames(out / "video.mp4") == (3, (25, 33))


def test_video_without_ffmpeg_uses_opencv(tmp_path, monkeypatch):
    from slam.data.synthetic import writers

    monkeypatch.setattr(writers.shutil, "which", lambda name: None)
    seq = make_world(seed=0, frames=4, **SIZE)
    out = write_sequence(seq, tmp_path / "cv", "video")
    assert _count_video_frames(out / "video.mp4") == (4, (72, 96))
