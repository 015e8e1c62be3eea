"""EuRoC MAV (ASL format) sequences; TUM-VI, which uses the same layout, reads too.

Layout
------
``<root>/mav0/cam0/data.csv`` (``#timestamp [ns],filename``),
``mav0/cam0/data/<ns>.png``, ``mav0/cam0/sensor.yaml`` (``intrinsics: [fu, fv,
cu, cv]``, ``distortion_model``, ``distortion_coefficients``, ``resolution:
[w, h]``, ``T_BS: {rows, cols, data}`` row-major), ground truth
``mav0/state_groundtruth_estimate0/data.csv`` (``timestamp [ns], p_RS_R x y z,
q_RS w x y z, ...``).  ``<root>`` may also be the ``mav0`` folder itself.

Conventions
-----------
* The ground truth is the BODY (IMU) pose ``T_WB``, its quaternion is **w
  first**.  The camera pose is ``T_WC = T_WB @ T_BS`` with ``T_BS`` the
  camera-to-body transform of ``sensor.yaml`` (identity if the file is
  missing).  EuRoC's camera frame is already OpenCV's (x right, y down, z
  forward).
* Ground truth is interpolated at image times: position linearly, rotation by
  slerp, between the two bracketing samples if they are at most
  :data:`EUROC_GT_MAX_GAP` apart (frames outside get NaN rows, ``Frame.pose``
  None).
* Timestamps: the image nanosecond stamps converted to seconds (absolute).
* Images are undistorted (radial-tangential, or ``equidistant`` for TUM-VI)
  keeping K; intrinsics are reported without distortion.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from slam.data.calib import CameraCalib, load_calib
from slam.data.folder import ImageFileSequence, list_images
from slam.data.sequence import InputError

#: Largest spacing (seconds) of two ground-truth samples interpolated between.
EUROC_GT_MAX_GAP: float = 0.05

#: Ground-truth file relative to ``mav0``.
EUROC_GT_PATH: str = "state_groundtruth_estimate0/data.csv"


def find_mav0(path: Path) -> Path | None:
    """The ``mav0`` folder of an EuRoC sequence given as its root or as ``mav0``."""
    if path.name == "mav0" and path.is_dir():
        return path
    if (path / "mav0").is_dir():
        return path / "mav0"
    return None


def read_csv_rows(path: Path, min_cols: int, what: str) -> list[list[str]]:
    """Comma-separated rows of at least ``min_cols`` fields, ``#`` lines skipped."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < min_cols:
            raise InputError(f"{path}:{n}: expected {what}, found {line[:80]!r}")
        rows.append(parts)
    return rows


def read_sensor_yaml(path: Path) -> tuple[CameraCalib | None, np.ndarray]:
    """Parse a camera ``sensor.yaml``.

    Returns:
        ``(calibration or None when it has no intrinsics, T_BS (4, 4))``.
    Raises:
        InputError: YAML syntax errors or malformed fields (names the path).
    """
    import yaml

    text = "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("%YAML"))
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping of camera parameters")
    try:
        T_BS = np.eye(4)
        if "T_BS" in doc:
            tb = doc["T_BS"]
            data = np.asarray(tb["data"] if isinstance(tb, dict) else tb, dtype=np.float64)
            rows = int(tb.get("rows", 4)) if isinstance(tb, dict) else 4
            cols = int(tb.get("cols", 4)) if isinstance(tb, dict) else 4
            if (rows, cols) != (4, 4) or data.size != 16:
                raise ValueError("T_BS must be 4x4")
            T_BS = data.reshape(4, 4)
        calib = None
        if "intrinsics" in doc:
            fu, fv, cu, cv = (float(v) for v in doc["intrinsics"])
            dist = tuple(float(v) for v in doc.get("distortion_coefficients") or ())
            res = doc.get("resolution")
            w, h = (int(res[0]), int(res[1])) if res else (None, None)
            model = str(doc.get("distortion_model", "radial-tangential"))
            calib = CameraCalib(fu, fv, cu, cv, dist=dist, model=model, width=w, height=h, source=str(path))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: malformed camera parameters ({e})") from None
    return calib, T_BS


def read_euroc_groundtruth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``state_groundtruth_estimate0/data.csv``.

    Returns:
        ``(timestamps_ns (M,) int64, T_WB (M, 4, 4))`` sorted by time.
    """
    rows = read_csv_rows(path, 8, "timestamp, p x y z, q w x y z, ...")
    try:
        t = np.array([int(r[0]) for r in rows], dtype=np.int64)
        v = np.array([[float(x) for x in r[1:8]] for r in rows], dtype=np.float64).reshape(-1, 7)
    except ValueError:
        raise InputError(f"{path}: not a number in the ground truth") from None
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    if len(rows):
        q_wxyz = v[:, 3:7]
        T[:, :3, :3] = Rotation.from_quat(q_wxyz[:, [1, 2, 3, 0]]).as_matrix()
        T[:, :3, 3] = v[:, :3]
    order = np.argsort(t, kind="stable")
    return t[order], T[order]


def interpolate_poses(t_query: np.ndarray, t_ref: np.ndarray, T_ref: np.ndarray, max_gap: float) -> np.ndarray:
    """Interpolate poses at query times (positions linearly, rotations by slerp).

    Args:
        t_query: (N,) times (same unit as ``t_ref``; nanoseconds for EuRoC).
        t_ref: (M,) sorted sample times.
        T_ref: (M, 4, 4) poses at ``t_ref``.
        max_gap: largest ``t_ref`` spacing bridged, in the unit of the times.
    Returns:
        (N, 4, 4) float64; NaN rows outside ``[t_ref[0], t_ref[-1]]`` or across larger gaps.
    """
    t_query = np.asarray(t_query)
    out = np.full((len(t_query), 4, 4), np.nan)
    if len(t_ref) == 0:
        return out
    hi = np.searchsorted(t_ref, t_query, side="left")
    exact = (hi < len(t_ref)) & (t_ref[np.minimum(hi, len(t_ref) - 1)] == t_query)
    out[exact] = T_ref[hi[exact]]
    inside = ~exact & (hi > 0) & (hi < len(t_ref))
    i1 = hi[inside]
    i0 = i1 - 1
    gap = (t_ref[i1] - t_ref[i0]).astype(np.float64)
    ok = gap <= max_gap
    i0, i1, gap = i0[ok], i1[ok], gap[ok]
    q = np.nonzero(inside)[0][ok]
    if len(q):
        w = (t_query[q] - t_ref[i0]).astype(np.float64) / gap
        R0 = Rotation.from_matrix(T_ref[i0, :3, :3])
        R1 = Rotation.from_matrix(T_ref[i1, :3, :3])
        R = R0 * Rotation.from_rotvec((R0.inv() * R1).as_rotvec() * w[:, None])
        T = np.tile(np.eye(4), (len(q), 1, 1))
        T[:, :3, :3] = R.as_matrix()
        T[:, :3, 3] = (1 - w)[:, None] * T_ref[i0, :3, 3] + w[:, None] * T_ref[i1, :3, 3]
        out[q] = T
    return out


class EurocSequence(ImageFileSequence):
    """An EuRoC / ASL-format sequence (see the module docstring).

    Args:
        path: the sequence folder (containing ``mav0``) or ``mav0`` itself.
        calib: calibration overriding ``sensor.yaml``'s intrinsics (T_BS is still used).
        camera: ``"cam0"`` (left, default) or ``"cam1"``.
        start, end, stride, max_frames: frame selection.
    """

    def __init__(self, path: str | Path, *, calib: str | Path | CameraCalib | None = None,
                 camera: str = "cam0", start: int = 0, end: int | None = None, stride: int = 1,
                 max_frames: int | None = None):
        path = Path(path)
        mav0 = find_mav0(path)
        if mav0 is None:
            raise InputError(f"{path}: not an EuRoC sequence (no mav0/)")
        cam = mav0 / camera
        data_dir = cam / "data"
        if not data_dir.is_dir():
            raise InputError(f"{path}: not an EuRoC sequence (no {camera}/data/ in {mav0})")

        csv = cam / "data.csv"
        if csv.is_file():
            rows = read_csv_rows(csv, 2, "'timestamp [ns],filename'")
            try:
                t_ns = np.array([int(r[0]) for r in rows], dtype=np.int64)
            except ValueError:
                raise InputError(f"{csv}: not an integer nanosecond timestamp") from None
            files = [data_dir / r[1] for r in rows]
        else:
            files = list_images(data_dir)
            try:
                t_ns = np.array([int(f.stem) for f in files], dtype=np.int64)
            except ValueError:
                raise InputError(f"{data_dir}: image names must be nanosecond timestamps without data.csv") from None
        if not files:
            raise InputError(f"{cam}: no images")
        order = np.argsort(t_ns, kind="stable")
        t_ns = t_ns[order]
        files = [files[i] for i in order]

        sensor = cam / "sensor.yaml"
        cal, T_BS = read_sensor_yaml(sensor) if sensor.is_file() else (None, np.eye(4))
        if calib is not None:
            cal = load_calib(calib)

        gt = None
        gt_file = mav0 / EUROC_GT_PATH
        if gt_file.is_file():
            g_t, T_WB = read_euroc_groundtruth(gt_file)
            T_WB_img = interpolate_poses(t_ns, g_t, T_WB, EUROC_GT_MAX_GAP * 1e9)
            gt = T_WB_img @ T_BS
        name = mav0.resolve().parent.name
        super().__init__(path, kind="euroc", name=name, image_files=files, timestamps=t_ns / 1e9,
                         calib=cal, gt_poses=gt, start=start, end=end, stride=stride, max_frames=max_frames)
