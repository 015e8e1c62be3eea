"""KITTI odometry sequences.

Layout
------
``sequences/NN/image_0/NNNNNN.png`` (left grey camera; ``image_2`` is the left
colour camera), ``sequences/NN/calib.txt`` (lines ``P0: <12 numbers>``, 3x4
rectified projection matrices), ``sequences/NN/times.txt`` (seconds per
frame), ground truth ``poses/NN.txt``.

Conventions
-----------
* Intrinsics from the camera's projection matrix ``P``: ``fx = P[0,0]``,
  ``fy = P[1,1]``, ``cx = P[0,2]``, ``cy = P[1,2]`` (rectified, no distortion).
  An explicit calibration file overrides them.
* Ground truth lines are 12 numbers, the row-major 3x4 camera-to-world pose of
  the left grey camera (cam0), already in the OpenCV convention.  For
  ``image_2`` the poses are moved to cam2: ``T_w2 = T_w0 @ [I | -K^-1 P2[:,3]]``
  (the rectified cameras share their orientation).
* Poses are looked up as ``<seq>/../../poses/<NN>.txt`` (standard layout),
  ``<seq>/../poses/<NN>.txt``, ``<seq>/poses.txt`` or ``<seq>/<NN>.txt``, or
  passed explicitly; their count must equal the number of images.
* Timestamps: ``times.txt`` when present, else ``k / fps`` with
  :data:`KITTI_FPS`.  Grey images are replicated to RGB.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.data.calib import CameraCalib, load_calib
from slam.data.folder import ImageFileSequence, list_images
from slam.data.sequence import InputError
from slam.data.tartanair import read_pose_rows, read_times

#: Image folders tried in order, with the projection matrix key of their camera.
KITTI_CAMERAS: dict[str, str] = {"image_0": "P0", "image_2": "P2", "image_1": "P1", "image_3": "P3"}

#: KITTI's nominal frame rate, used only without times.txt.
KITTI_FPS: float = 10.0


def read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    """Parse KITTI ``calib.txt``: ``KEY: 12 numbers`` per line.

    Returns:
        key -> (3, 4) float64 matrix for every line with 12 numbers.
    Raises:
        InputError: a line without ``KEY:`` or with non-numbers (names path:line).
    """
    out: dict[str, np.ndarray] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise InputError(f"{path}:{n}: expected 'P0: <12 numbers>', found {line[:80]!r}")
        try:
            vals = [float(v) for v in rest.split()]
        except ValueError:
            raise InputError(f"{path}:{n}: not a number in {line[:80]!r}") from None
        if len(vals) == 12:
            out[key.strip()] = np.asarray(vals, dtype=np.float64).reshape(3, 4)
    return out


def read_kitti_poses(path: Path) -> np.ndarray:
    """KITTI pose file: 12 numbers per line (row-major 3x4) -> (N, 4, 4) camera-to-world."""
    rows = read_pose_rows(path, 12, "row-major 3x4 camera-to-world pose")
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    T[:, :3, :4] = rows.reshape(-1, 3, 4)
    return T


def find_kitti_poses(seq: Path) -> Path | None:
    """The ground-truth file of a sequence folder (see the module docstring)."""
    seq = seq.resolve()
    for p in (seq.parent.parent / "poses" / f"{seq.name}.txt", seq.parent / "poses" / f"{seq.name}.txt",
              seq / "poses.txt", seq / f"{seq.name}.txt"):
        if p.is_file():
            return p
    return None


def find_kitti_camera(seq: Path) -> str | None:
    """The first image folder of :data:`KITTI_CAMERAS` present in ``seq``."""
    for d in KITTI_CAMERAS:
        if (seq / d).is_dir():
            return d
    return None


class KittiSequence(ImageFileSequence):
    """A KITTI odometry sequence folder (see the module docstring).

    Args:
        path: the sequence folder (``.../sequences/NN``).
        calib: calibration file overriding ``calib.txt``.
        poses: ground-truth file overriding the lookup.
        camera: image folder name (default: ``image_0`` if present, else ``image_2``, ...).
        fps: frame rate used without times.txt.
        start, end, stride, max_frames: frame selection.
    """

    def __init__(self, path: str | Path, *, calib: str | Path | CameraCalib | None = None,
                 poses: str | Path | None = None, camera: str | None = None, fps: float | None = None,
                 start: int = 0, end: int | None = None, stride: int = 1, max_frames: int | None = None):
        path = Path(path)
        camera = camera or find_kitti_camera(path)
        if camera is None or not (path / camera).is_dir():
            raise InputError(f"{path}: not a KITTI sequence (no {camera or 'image_0/ or image_2/'} folder)")
        files = list_images(path / camera)
        if not files:
            raise InputError(f"{path / camera}: no images")
        pkey = KITTI_CAMERAS.get(camera, "P0")

        P = None
        calib_file = path / "calib.txt"
        if calib_file.is_file():
            mats = read_kitti_calib(calib_file)
            if pkey not in mats:
                raise InputError(f"{calib_file}: no '{pkey}:' line with 12 numbers for {camera}")
            P = mats[pkey]
        cal = load_calib(calib)
        if cal is None and P is not None:
            cal = CameraCalib(P[0, 0], P[1, 1], P[0, 2], P[1, 2], source=str(calib_file))

        times_file = path / "times.txt"
        if times_file.is_file():
            stamps = read_times(times_file)
            if len(stamps) != len(files):
                raise InputError(f"{times_file}: {len(stamps)} timestamps for {len(files)} images")
        else:
            rate = float(fps) if fps else KITTI_FPS
            stamps = np.arange(len(files), dtype=np.float64) / rate

        gt = None
        pose_file = Path(poses) if poses is not None else find_kitti_poses(path)
        if pose_file is not None:
            if not pose_file.is_file():
                raise InputError(f"{pose_file}: no such pose file")
            gt = read_kitti_poses(pose_file)
            if len(gt) != len(files):
                raise InputError(f"{pose_file}: {len(gt)} poses for {len(files)} images in {path / camera}")
            if pkey != "P0" and P is not None:
                # Rectified cameras differ by a translation only: x_cam = x_cam0 + K^-1 P[:, 3].
                t = np.linalg.solve(P[:, :3], P[:, 3])
                T_0c = np.eye(4)
                T_0c[:3, 3] = -t
                gt = gt @ T_0c
        super().__init__(path, kind="kitti", name=path.resolve().name, image_files=files, timestamps=stamps,
                         calib=cal, gt_poses=gt, start=start, end=end, stride=stride, max_frames=max_frames)
