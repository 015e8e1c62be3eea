"""TartanAir sequences (also the layout the project's synthetic writer produces).

Layout
------
``<seq>/image_left/NNNNNN_left.png``; ``<seq>/pose_left.txt`` (one line per
frame number, ``tx ty tz qx qy qz qw``, camera-to-world in NED axes);
optional ``<seq>/depth_left/NNNNNN_left_depth.npy`` (float32 metres, z-depth;
may exist for some frames only: ``Frame.depth`` is None for the others);
optional ``calib.txt`` (see :mod:`slam.data.calib`); optional
``times.txt`` / ``timestamps.txt`` (one timestamp in seconds per frame number,
a leading column of a multi-column line is taken).

Conventions
-----------
* Poses are converted to the OpenCV camera convention with
  :func:`slam.geometry.pose.ned_to_cv` after :func:`tq_to_matrix`.
* The pose of an image is the row of ``pose_left.txt`` given by its frame
  number ``NNNNNN`` (so a folder holding a subset of the images stays
  consistent); names without a number are matched by position.
* Intrinsics: explicit calibration, else ``calib.txt``, else the TartanAir
  standard :data:`TARTANAIR_CALIB` when the images are 640x480, else unknown.
* Timestamps: the times file when present, else ``frame_number / fps`` with
  ``fps`` = :data:`TARTANAIR_FPS` (the dataset's nominal 10 Hz; an assumption,
  TartanAir ships no timestamps).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from slam.data.calib import CameraCalib, find_sidecar, load_calib
from slam.data.folder import ImageFileSequence, list_images
from slam.data.sequence import InputError
from slam.geometry.pose import ned_to_cv, tq_to_matrix

#: TartanAir's pinhole camera: fx fy cx cy for 640x480 images, no distortion.
TARTANAIR_CALIB = CameraCalib(320.0, 320.0, 320.0, 240.0, width=640, height=480, source="TartanAir defaults")

#: Nominal frame rate used for timestamps when no times file exists.
TARTANAIR_FPS: float = 10.0

#: Names of an optional per-frame timestamps file (seconds).
TARTANAIR_TIMES_NAMES: list[str] = ["times.txt", "timestamps.txt"]


def read_pose_rows(path: Path, ncols: int, what: str) -> np.ndarray:
    """Read a whitespace/comma separated table of ``ncols`` numbers per line.

    Blank lines and ``#`` comments are skipped.

    Returns:
        (N, ncols) float64.
    Raises:
        InputError: a line with another field count or a non-number (names path:line).
    """
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != ncols:
            raise InputError(f"{path}:{n}: expected {ncols} numbers ({what}), found {len(parts)}")
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise InputError(f"{path}:{n}: not a number in {line[:80]!r}") from None
    a = np.asarray(rows, dtype=np.float64).reshape(-1, ncols)
    if not np.isfinite(a).all():
        bad = int(np.nonzero(~np.isfinite(a).all(1))[0][0])
        raise InputError(f"{path}: non-finite value in row {bad + 1}")
    return a


def read_times(path: Path) -> np.ndarray:
    """One timestamp (seconds) per line, first column; ``#`` comments allowed."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            out.append(float(line.replace(",", " ").split()[0]))
        except ValueError:
            raise InputError(f"{path}:{n}: not a timestamp: {line[:80]!r}") from None
    return np.asarray(out, dtype=np.float64)


def read_npy_depth(path: Path) -> np.ndarray:
    """A ``.npy`` depth map as (H, W) float32 metres."""
    try:
        d = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read depth map ({e.__class__.__name__})") from None
    d = np.squeeze(d)
    if d.ndim != 2:
        raise InputError(f"{path}: depth map must be 2-D, found shape {d.shape}")
    return d.astype(np.float32, copy=False)


def frame_number(name: str) -> int | None:
    """Leading frame number of a TartanAir file name (``000123_left.png`` -> 123)."""
    m = re.match(r"(\d+)", name)
    return int(m.group(1)) if m else None


class TartanAirSequence(ImageFileSequence):
    """A TartanAir sequence folder (see the module docstring).

    Args:
        path: folder containing ``image_left/``.
        calib: calibration overriding ``calib.txt`` and the defaults.
        fps: frame rate for timestamps without a times file (default 10).
        with_depth: read ``depth_left`` maps where present.
        start, end, stride, max_frames: frame selection.
    """

    def __init__(self, path: str | Path, *, calib: str | Path | CameraCalib | None = None,
                 fps: float | None = None, with_depth: bool = True, start: int = 0, end: int | None = None,
                 stride: int = 1, max_frames: int | None = None):
        path = Path(path)
        img_dir = path / "image_left"
        if not img_dir.is_dir():
            raise InputError(f"{path}: not a TartanAir sequence (no image_left/)")
        files = list_images(img_dir)
        if not files:
            raise InputError(f"{img_dir}: no images")
        numbers = [frame_number(f.name) for f in files]
        if any(n is None for n in numbers) or len(set(numbers)) != len(numbers):
            numbers = list(range(len(files)))
        num = np.asarray(numbers, dtype=np.int64)

        gt = None
        pose_file = path / "pose_left.txt"
        if pose_file.is_file():
            tq = read_pose_rows(pose_file, 7, "tx ty tz qx qy qz qw")
            if num.max() >= len(tq):
                raise InputError(f"{pose_file}: {len(tq)} poses but frame number {int(num.max())} "
                                 f"({files[int(num.argmax())].name}) needs {int(num.max()) + 1}")
            gt = ned_to_cv(tq_to_matrix(tq[num]))

        times_file = find_sidecar(path, TARTANAIR_TIMES_NAMES)
        if times_file is not None:
            t = read_times(times_file)
            if num.max() >= len(t):
                raise InputError(f"{times_file}: {len(t)} timestamps but frame number {int(num.max())} needs "
                                 f"{int(num.max()) + 1}")
            stamps = t[num]
        else:
            rate = float(fps) if fps else TARTANAIR_FPS
            if rate <= 0:
                raise InputError(f"{path}: fps must be positive, got {fps}")
            stamps = num / rate

        depth_files = None
        depth_dir = path / "depth_left"
        if with_depth and depth_dir.is_dir():
            depth_files = []
            for f in files:
                d = depth_dir / f"{f.stem}_depth.npy"
                depth_files.append(d if d.is_file() else None)

        if calib is None:
            calib = find_sidecar(path, ["calib.txt"])
        cal = load_calib(calib)
        super().__init__(path, kind="tartanair", name=path.resolve().name, image_files=files, timestamps=stamps,
                         calib=cal, fallback_calib=TARTANAIR_CALIB, gt_poses=gt, depth_files=depth_files,
                         depth_reader=read_npy_depth,
                         start=start, end=end, stride=stride, max_frames=max_frames)
