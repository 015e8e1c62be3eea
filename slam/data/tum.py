"""TUM RGB-D dataset sequences, and timestamp association shared by the readers.

(Trajectory *files* in TUM format are read and written by :mod:`slam.io.tum`.)

Layout
------
``<seq>/rgb.txt`` (``timestamp filename`` lines, ``#`` comments),
``<seq>/rgb/*.png``; optional ``groundtruth.txt`` (``timestamp tx ty tz qx qy
qz qw``), optional ``depth.txt`` + ``depth/*.png`` (16-bit, metres x 5000).

Conventions
-----------
* Ground truth is the pose of the colour camera's optical centre in the
  motion-capture world, with the camera axes of the OpenCV convention (x
  right, y down, z forward; TUM's own tools back-project depth that way), so
  it is used as is: camera-to-world ``T_wc``.
* Association (like TUM's ``associate.py``): every rgb frame gets the ground
  truth pose with the nearest timestamp if it is within
  :data:`TUM_MAX_DT` (20 ms); depth maps are matched one-to-one, greedily by
  smallest time difference, within the same tolerance.  Frames without a match
  have NaN ground-truth rows (``Frame.pose`` None) or no depth.
* Intrinsics: an explicit calibration, else ``calib.txt`` in the folder, else
  the TUM defaults by the sequence name (``freiburg1`` / ``fr1`` ...) when
  the images are 640x480, else unknown (None).  freiburg1/2 images are undistorted (see
  :mod:`slam.data.calib`); freiburg3 images are already undistorted.
* Timestamps are TUM's (Unix time, seconds).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from slam.data.calib import CameraCalib, find_sidecar, load_calib
from slam.data.folder import ImageFileSequence
from slam.data.sequence import InputError
from slam.io.tum import read_tum

#: Largest time difference (seconds) for associating rgb / depth / ground truth.
TUM_MAX_DT: float = 0.02

#: Metres per unit of TUM's 16-bit depth PNGs (value / 5000 = metres).
TUM_DEPTH_SCALE: float = 1.0 / 5000.0

#: Published calibrations of the TUM RGB-D Kinects: fx fy cx cy (k1 k2 p1 p2 k3), for 640x480.
TUM_DEFAULT_CALIB: dict[int, tuple[float, ...]] = {
    1: (517.3, 516.5, 318.6, 255.3, 0.2624, -0.9531, -0.0054, 0.0026, 1.1633),
    2: (520.9, 521.0, 325.1, 249.7, 0.2312, -0.7849, -0.0033, -0.0001, 0.9172),
    3: (535.4, 539.2, 320.1, 247.6),
}


# ------------------------------------------------------------------ association
def _prepare_association(query: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(query as float64, out (N,) filled with -1, order sorting ref, ref sorted)``."""
    query = np.asarray(query, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    order = np.argsort(ref, kind="stable")
    return query, np.full(query.shape, -1, dtype=np.int64), order, ref[order]


def associate_nearest(query: np.ndarray, ref: np.ndarray, max_dt: float) -> np.ndarray:
    """For every ``query`` time the index of the nearest ``ref`` time within ``max_dt``.

    Args:
        query: (N,) seconds.
        ref: (M,) seconds, any order.
        max_dt: tolerance in seconds (inclusive).
    Returns:
        (N,) int64 indices into ``ref``; -1 where nothing is within ``max_dt``.
    """
    query, out, order, r = _prepare_association(query, ref)
    if r.size == 0 or query.size == 0:
        return out
    pos = np.clip(np.searchsorted(r, query), 1, len(r) - 1) if len(r) > 1 else np.zeros(query.shape, int)
    left = np.maximum(pos - 1, 0)
    pick = np.where(np.abs(r[pos] - query) < np.abs(r[left] - query), pos, left)
    ok = np.abs(r[pick] - query) <= max_dt
    out[ok] = order[pick[ok]]
    return out


def associate_unique(query: np.ndarray, ref: np.ndarray, max_dt: float) -> np.ndarray:
    """One-to-one association as TUM's ``associate.py``: candidate pairs within
    ``max_dt`` are accepted greedily by increasing time difference, each
    ``query`` and ``ref`` entry at most once.

    Returns:
        (N,) int64 indices into ``ref``; -1 for unmatched ``query`` entries.
    """
    query, out, order, r = _prepare_association(query, ref)
    if r.size == 0 or query.size == 0:
        return out
    lo = np.searchsorted(r, query - max_dt, side="left")
    hi = np.searchsorted(r, query + max_dt, side="right")
    pairs = [(abs(r[j] - t), i, int(order[j])) for i, (t, a, b) in enumerate(zip(query, lo, hi))
             for j in range(a, b)]
    pairs.sort()
    used: set[int] = set()
    for _, i, j in pairs:
        if out[i] < 0 and j not in used:
            out[i] = j
            used.add(j)
    return out


def gather_poses(poses: np.ndarray, match: np.ndarray) -> np.ndarray | None:
    """Per-frame poses from an association: ``poses[match]`` with NaN rows where
    ``match < 0``; None when no frame matched.

    Args:
        poses: (M, 4, 4).
        match: (N,) indices into ``poses`` or -1.
    Returns:
        (N, 4, 4) float64 or None.
    """
    match = np.asarray(match)
    if not (match >= 0).any():
        return None
    out = np.full((len(match), 4, 4), np.nan)
    out[match >= 0] = np.asarray(poses, dtype=np.float64)[match[match >= 0]]
    return out


# --------------------------------------------------------------------- parsing
def read_file_list(path: Path) -> tuple[np.ndarray, list[str]]:
    """Read a TUM ``rgb.txt`` / ``depth.txt``: ``timestamp filename`` per line.

    Returns:
        ``(timestamps (N,), filenames)`` in file order.
    Raises:
        InputError: a line without a number and a file name (names path and line).
    """
    stamps, names = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            if len(parts) < 2:
                raise ValueError
            stamps.append(float(parts[0]))
        except ValueError:
            raise InputError(f"{path}:{n}: expected 'timestamp filename', found {line[:80]!r}") from None
        names.append(parts[1])
    return np.asarray(stamps, dtype=np.float64), names


def tum_default_calib(name: str) -> CameraCalib | None:
    """TUM's published calibration for a sequence named like ``rgbd_dataset_freiburg1_xyz``."""
    m = re.search(r"(?:freiburg|fr)([123])(?!\d)", name.lower())
    if not m:
        return None
    v = TUM_DEFAULT_CALIB[int(m.group(1))]
    return CameraCalib(*v[:4], dist=tuple(v[4:]), width=640, height=480, source=f"TUM freiburg{m.group(1)} defaults")


def read_tum_depth(path: Path) -> np.ndarray:
    """A TUM 16-bit depth PNG as (H, W) float32 metres (0 where unknown)."""
    import cv2

    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None or d.ndim != 2:
        raise InputError(f"{path}: cannot read depth image (expected a 16-bit single-channel PNG)")
    return d.astype(np.float32) * np.float32(TUM_DEPTH_SCALE)


# ---------------------------------------------------------------------- reader
class TumRgbdSequence(ImageFileSequence):
    """A TUM RGB-D sequence folder (see the module docstring).

    Args:
        path: the sequence folder (containing ``rgb.txt``).
        calib: calibration overriding every other source.
        with_depth: read depth maps when ``depth.txt`` exists.
        start, end, stride, max_frames: frame selection.
    """

    def __init__(self, path: str | Path, *, calib: str | Path | CameraCalib | None = None,
                 with_depth: bool = True, start: int = 0, end: int | None = None, stride: int = 1,
                 max_frames: int | None = None):
        path = Path(path)
        rgb_txt = path / "rgb.txt"
        if not rgb_txt.is_file():
            raise InputError(f"{path}: not a TUM RGB-D sequence (no rgb.txt)")
        stamps, names = read_file_list(rgb_txt)
        if not names:
            raise InputError(f"{rgb_txt}: no frames listed")
        files = [path / n for n in names]

        gt = None
        gt_file = path / "groundtruth.txt"
        if gt_file.is_file():
            gt_t, gt_T = read_tum(gt_file)
            gt = gather_poses(gt_T, associate_nearest(stamps, gt_t, TUM_MAX_DT))

        depth_files: list[Path | None] | None = None
        depth_txt = path / "depth.txt"
        if with_depth and depth_txt.is_file():
            d_t, d_names = read_file_list(depth_txt)
            match = associate_unique(stamps, d_t, TUM_MAX_DT)
            depth_files = [path / d_names[j] if j >= 0 else None for j in match]

        if calib is None:
            calib = find_sidecar(path, ["calib.txt"])
        super().__init__(path, kind="tum", name=path.resolve().name, image_files=files, timestamps=stamps,
                         calib=load_calib(calib), fallback_calib=tum_default_calib(path.resolve().name),
                         gt_poses=gt, depth_files=depth_files, depth_reader=read_tum_depth,
                         start=start, end=end, stride=stride, max_frames=max_frames)
