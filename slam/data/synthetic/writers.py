"""Write a :class:`~slam.data.synthetic.world.SyntheticSequence` to disk in dataset layouts.

Layouts (``OUT`` is the output folder; ``NNNNNN`` the zero-padded frame index):

* ``tartanair``: ``image_left/NNNNNN_left.png``, ``depth_left/NNNNNN_left_depth.npy`` (float32 metres,
  0 = sky), ``pose_left.txt`` (``tx ty tz qx qy qz qw`` per frame, camera-to-world in TartanAir's NED
  axes: ``cv_to_ned(T_wc)``), ``calib.txt`` (``fx fy cx cy``; only when the intrinsics differ from
  TartanAir's 320 320 320 240 at 640x480) and ``dynamic_mask/NNNNNN_mask.png`` (0/255) when dynamic.
* ``euroc``: ``mav0/cam0/data.csv`` (``#timestamp [ns],filename``), ``mav0/cam0/data/<ns>.png``
  (RGB by default; real EuRoC images are grey), ``mav0/cam0/sensor.yaml`` (pinhole, zero
  radial-tangential distortion, ``T_BS`` = camera-to-body) and
  ``mav0/state_groundtruth_estimate0/data.csv`` (17 columns, body poses ``T_WB = T_WC T_BS^-1``,
  quaternion w first, sampled at ``gt_rate`` Hz from the continuous trajectory).
* ``video``: ``video.mp4`` (H.264 crf 18 via ffmpeg, yuv420p; yuv444p for odd sizes; OpenCV mp4v
  without ffmpeg), ``groundtruth.txt`` (TUM, timestamps ``k / fps``), ``calib.txt``
  (``fx fy cx cy``), optionally ``depth/NNNNNN.npy``, and ``masks/NNNNNN.png`` when dynamic.

Every layout also gets ``synth.json`` with the generation parameters.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from slam.data.synthetic import FORMATS
from slam.data.synthetic.world import SyntheticSequence
from slam.geometry.pose import cv_to_ned, invert, matrix_to_tq
from slam.io.tum import write_tum

TARTANAIR_STANDARD = (320.0, 320.0, 320.0, 240.0, 640, 480)  # fx fy cx cy W H of TartanAir's camera
EUROC_T0_NS = 1_600_000_000_000_000_000    # EuRoC-like absolute start time of frame 0 (ns)
EUROC_GT_RATE = 200.0                       # Hz of the EuRoC ground truth (as the Vicon/Leica data)
VIDEO_CRF = 18                              # H.264 quality (near-lossless)


def euroc_T_BS() -> np.ndarray:
    """The (non-identity) camera-to-body transform ``T_BS`` written to EuRoC's ``sensor.yaml``:
    maps camera (sensor) coordinates to body coordinates, like EuRoC's cam0."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [0.8, -1.5, 90.6], degrees=True).as_matrix()
    T[:3, 3] = [-0.0216, -0.0647, 0.0098]
    return T


def _frames(seq: SyntheticSequence, progress: bool, what: str) -> Iterator[int]:
    idx = range(len(seq))
    if progress:
        from tqdm import tqdm

        return iter(tqdm(idx, desc=f"synth {what}", unit="frame", file=sys.stderr, leave=False))
    return iter(idx)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    img = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise OSError(f"could not write {path}")


def _calib_line(seq: SyntheticSequence) -> str:
    K = seq.intrinsics
    return f"{K.fx:.10g} {K.fy:.10g} {K.cx:.10g} {K.cy:.10g}\n"


def write_synth_json(seq: SyntheticSequence, out: Path, fmt: str, command: list[str] | None = None) -> Path:
    """``OUT/synth.json``: generation parameters, intrinsics, format and command line."""
    from slam import __version__

    d = {"generator": "slam synth", "version": __version__, "format": fmt, **seq.description(),
         "command": command if command is not None else None}
    path = out / "synth.json"
    path.write_text(json.dumps(d, indent=2) + "\n")
    return path


def write_tartanair(seq: SyntheticSequence, out: Path, progress: bool = False) -> None:
    """TartanAir layout (see module docstring)."""
    (out / "image_left").mkdir(parents=True, exist_ok=True)
    (out / "depth_left").mkdir(parents=True, exist_ok=True)
    dyn = bool(seq.movers)
    if dyn:
        (out / "dynamic_mask").mkdir(parents=True, exist_ok=True)
    for k in _frames(seq, progress, "tartanair"):
        r = seq.render(k)
        _write_png(out / "image_left" / f"{k:06d}_left.png", r.image)
        np.save(out / "depth_left" / f"{k:06d}_left_depth.npy", r.depth.astype(np.float32))
        if dyn:
            _write_png(out / "dynamic_mask" / f"{k:06d}_mask.png", r.dynamic_mask.astype(np.uint8) * 255)
    tq = matrix_to_tq(cv_to_ned(seq.gt_poses))
    with open(out / "pose_left.txt", "w") as f:
        for row in tq:
            f.write(" ".join(f"{v:.10e}" for v in row) + "\n")
    K = seq.intrinsics
    if not np.allclose([K.fx, K.fy, K.cx, K.cy, K.width, K.height], TARTANAIR_STANDARD):
        (out / "calib.txt").write_text(_calib_line(seq))


def write_euroc(seq: SyntheticSequence, out: Path, progress: bool = False, gray: bool = False,
                gt_rate: float = EUROC_GT_RATE) -> None:
    """EuRoC MAV layout (see module docstring); ``gray`` writes single-channel images like EuRoC."""
    cam = out / "mav0" / "cam0"
    (cam / "data").mkdir(parents=True, exist_ok=True)
    stamps = [EUROC_T0_NS + int(round(t * 1e9)) for t in seq.timestamps]
    with open(cam / "data.csv", "w") as f:
        f.write("#timestamp [ns],filename\n")
        for k in _frames(seq, progress, "euroc"):
            img = seq.render(k).image
            if gray:
                img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            _write_png(cam / "data" / f"{stamps[k]}.png", img)
            f.write(f"{stamps[k]},{stamps[k]}.png\n")
    K = seq.intrinsics
    T_BS = euroc_T_BS()
    data = ", ".join(repr(float(v)) for v in T_BS.ravel())
    (cam / "sensor.yaml").write_text(
        "# General sensor definitions.\n"
        "sensor_type: camera\n"
        "comment: slam synth (synthetic pinhole camera, no distortion)\n\n"
        "# Sensor extrinsics wrt. the body-frame.\n"
        f"T_BS:\n  cols: 4\n  rows: 4\n  data: [{data}]\n\n"
        "# Camera specific definitions.\n"
        f"rate_hz: {seq.spec.fps:g}\n"
        f"resolution: [{K.width}, {K.height}]\n"
        "camera_model: pinhole\n"
        f"intrinsics: [{K.fx!r}, {K.fy!r}, {K.cx!r}, {K.cy!r}] #fu, fv, cu, cv\n"
        "distortion_model: radial-tangential\n"
        "distortion_coefficients: [0.0, 0.0, 0.0, 0.0]\n")
    # ground truth of the body at gt_rate Hz over the camera's time span
    T_end = float(seq.timestamps[-1])
    n_gt = int(np.floor(T_end * gt_rate + 1e-9)) + 1
    t_gt = np.arange(n_gt) / gt_rate
    T_BS_inv = invert(T_BS)
    T_WB = seq.poses_at(t_gt) @ T_BS_inv
    h = 1e-3  # s, central difference for the velocity
    vel = ((seq.poses_at(t_gt + h) @ T_BS_inv)[:, :3, 3] - (seq.poses_at(t_gt - h) @ T_BS_inv)[:, :3, 3]) / (2 * h)
    tq = matrix_to_tq(T_WB)
    gt_dir = out / "mav0" / "state_groundtruth_estimate0"
    gt_dir.mkdir(parents=True, exist_ok=True)
    with open(gt_dir / "data.csv", "w") as f:
        f.write("#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], "
                "q_RS_z [], v_RS_R_x [m s^-1], v_RS_R_y [m s^-1], v_RS_R_z [m s^-1], b_w_RS_S_x [rad s^-1], "
                "b_w_RS_S_y [rad s^-1], b_w_RS_S_z [rad s^-1], b_a_RS_S_x [m s^-2], b_a_RS_S_y [m s^-2], "
                "b_a_RS_S_z [m s^-2]\n")
        for t, row, v in zip(t_gt, tq, vel):
            vals = [*row[:3], row[6], *row[3:6], *v] + [0.0] * 6
            f.write(f"{EUROC_T0_NS + int(round(t * 1e9))}," + ",".join(f"{x:.9f}" for x in vals) + "\n")


def _ffmpeg_writer(path: Path, width: int, height: int, fps: float) -> subprocess.Popen | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    pix = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"  # 4:2:0 needs even sizes
    cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-r", f"{fps:g}", "-i", "-", "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(VIDEO_CRF),
           "-pix_fmt", pix, "-movflags", "+faststart", str(path)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)


def write_video(seq: SyntheticSequence, out: Path, progress: bool = False, depth: bool = False) -> None:
    """Video layout (see module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    K = seq.intrinsics
    path = out / "video.mp4"
    proc = _ffmpeg_writer(path, K.width, K.height, seq.spec.fps)
    cv_writer = None
    if proc is None:
        cv_writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), seq.spec.fps, (K.width, K.height))
    dyn = bool(seq.movers)
    if depth:
        (out / "depth").mkdir(exist_ok=True)
    if dyn:
        (out / "masks").mkdir(exist_ok=True)
    try:
        for k in _frames(seq, progress, "video"):
            r = seq.render(k)
            if proc is not None:
                proc.stdin.write(np.ascontiguousarray(r.image).tobytes())
            else:
                cv_writer.write(np.ascontiguousarray(r.image[..., ::-1]))
            if depth:
                np.save(out / "depth" / f"{k:06d}.npy", r.depth.astype(np.float32))
            if dyn:
                _write_png(out / "masks" / f"{k:06d}.png", r.dynamic_mask.astype(np.uint8) * 255)
    finally:
        if proc is not None:
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace")
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed: {err.strip()}")
        else:
            cv_writer.release()
    write_tum(out / "groundtruth.txt", seq.timestamps, seq.gt_poses)
    (out / "calib.txt").write_text(_calib_line(seq))


def write_sequence(seq: SyntheticSequence, out: str | Path, fmt: str = "video", progress: bool = False,
                   depth: bool = False, command: list[str] | None = None) -> Path:
    """Write ``seq`` to folder ``out`` in layout ``fmt`` (``video``, ``tartanair`` or ``euroc``) plus ``synth.json``.

    ``depth`` adds per-frame depth to the video layout (the TartanAir layout always has it).
    Returns the folder.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "tartanair":
        write_tartanair(seq, out, progress)
    elif fmt == "euroc":
        write_euroc(seq, out, progress)
    else:
        write_video(seq, out, progress, depth)
    write_synth_json(seq, out, fmt, command)
    return out
