"""Image folders, and the shared machinery of every one-file-per-frame reader.

Folder layout
-------------
A directory of ``.png .jpg .jpeg .bmp .tif .tiff`` (any case) images, one per
frame, in natural (numeric-aware) order of their names: ``img2.png`` comes
before ``img10.png``.  Hidden files (``.*``) and other files are ignored.  An
optional ``calib.txt`` (see :mod:`slam.data.calib`) in the folder, or one passed
explicitly, gives the intrinsics; otherwise they are unknown (None).

Timestamps
----------
If every file name (without extension) is a number and the numbers look like
clock times (a decimal point, or an integer of at least 10 digits), the names
are the timestamps, sorted by value; integers are converted to seconds by
magnitude (>= 1e17 nanoseconds as in EuRoC, >= 1e14 microseconds, >= 1e11
milliseconds, otherwise seconds).  Otherwise (plain frame numbers such as
``000123``, or any other names) frame ``k`` is at ``k / fps`` with ``fps``
defaulting to :data:`DEFAULT_FPS`.

Images
------
Images are returned as uint8 RGB ``(H, W, 3)``: grayscale is replicated to three
channels, alpha is dropped, 16-bit images are scaled to 8 bits.  The first
yielded image defines the sequence's size; an image of another size raises
:class:`InputError` when it is loaded (checks are lazy: images are read in
``_load`` only).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from slam.data.calib import CameraCalib, Undistorter, find_sidecar, load_calib
from slam.data.sequence import Frame, InputError, Sequence, select_indices

#: Image file extensions read by the folder reader (compared lower-case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

#: Frame rate assumed for timestamps ``k / fps`` when file names carry none.
DEFAULT_FPS: float = 30.0

#: Names looked up for a calibration file inside an image folder.
FOLDER_CALIB_NAMES: list[str] = ["calib.txt"]

DepthReader = Callable[[Path], np.ndarray]


# ---------------------------------------------------------------- file helpers
def natural_key(name: str) -> list:
    """Sort key that orders digit runs numerically (``a2 < a10``)."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` (not recursive, no hidden files), naturally sorted."""
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def to_rgb8(image: np.ndarray, source: str | Path) -> np.ndarray:
    """Convert an image as returned by ``cv2.imread(..., IMREAD_UNCHANGED)`` to uint8 RGB.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA; uint8, uint16 or float.
        source: file name for messages.
    Returns:
        (H, W, 3) uint8 RGB, C-contiguous.
    """
    import cv2

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        a = image.astype(np.float32)
        finite = a[np.isfinite(a)]
        if finite.size and finite.max() <= 1.0:
            a = a * 255.0
        image = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise InputError(f"{source}: unsupported image layout {image.shape}")


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Raises:
        InputError: missing, corrupt or unsupported file (message names it).
    """
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise InputError(f"{path}: cannot read image ({e.strerror or e.__class__.__name__})") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None or img.size == 0:
        raise InputError(f"{path}: cannot decode image (corrupt or unsupported format)")
    return to_rgb8(img, path)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file (decodes it)."""
    h, w = read_rgb(path).shape[:2]
    return w, h


def timestamps_from_names(names: list[str]) -> np.ndarray | None:
    """Clock timestamps (seconds) encoded in file stems, or None (see the module docstring)."""
    if not names:
        return None
    out = []
    for s in names:
        if re.fullmatch(r"\d+\.\d*|\d*\.\d+", s):
            out.append(float(s))
        elif re.fullmatch(r"\d{10,}", s):
            v = int(s)
            scale = 1e9 if v >= 10**17 else 1e6 if v >= 10**14 else 1e3 if v >= 10**11 else 1.0
            out.append(v / scale)
        else:
            return None
    return np.asarray(out, dtype=np.float64)


# ------------------------------------------------------- one file per frame base
class ImageFileSequence(Sequence):
    """A sequence stored as one image file per frame (the base of all image readers).

    Subclasses gather the per-frame lists and call this constructor, which
    applies ``start/end/stride/max_frames``, reads the first selected image to
    learn the size, and sets up undistortion.  Images (and depth) are read
    lazily in :meth:`_load`.

    Args:
        path: the input as given by the user (for messages).
        kind: reader name (``"folder"``, ``"tartanair"``, ...).
        name: human-readable sequence name.
        image_files: all frames' image files, in order.
        timestamps: (N_all,) seconds.
        calib: calibration of the images as stored (may have distortion), or None.
        fallback_calib: used when ``calib`` is None, only if it states the
            size of the images (dataset defaults); otherwise the camera is unknown.
        gt_poses: optional (N_all, 4, 4) camera-to-world, OpenCV convention;
            rows of NaN for frames without ground truth.
        depth_files: optional per-frame depth file (None where absent).
        depth_reader: reads a depth file into (H, W) float32 metres.
        start, end, stride, max_frames: frame selection (see ``select_indices``).
    """

    def __init__(self, path: Path, *, kind: str, name: str, image_files: list[Path],
                 timestamps: np.ndarray, calib: CameraCalib | None = None,
                 fallback_calib: CameraCalib | None = None, gt_poses: np.ndarray | None = None,
                 depth_files: list[Path | None] | None = None,
                 depth_reader: DepthReader | None = None,
                 start: int = 0, end: int | None = None, stride: int = 1, max_frames: int | None = None):
        if not image_files:
            raise InputError(f"{path}: no images found")
        idx = select_indices(len(image_files), start, end, stride, max_frames)
        if not idx:
            raise InputError(f"{path}: no frames selected (start={start}, end={end}, stride={stride}, "
                             f"{len(image_files)} frames)")
        self._files = [image_files[i] for i in idx]
        self._depth_files = [depth_files[i] for i in idx] if depth_files is not None else None
        self._depth_reader = depth_reader
        width, height = image_size(self._files[0])
        self._size = (width, height)
        if calib is None and fallback_calib is not None and (fallback_calib.width, fallback_calib.height) == self._size:
            calib = fallback_calib
        intr = calib.intrinsics(width, height) if calib is not None else None
        self._undistort = Undistorter(calib, width, height) if calib is not None and calib.has_distortion else None
        gt = None
        if gt_poses is not None:
            gt = np.asarray(gt_poses, dtype=np.float64)[idx]
            if not np.isfinite(gt).all(axis=(1, 2)).any():
                gt = None
        super().__init__(path=Path(path), name=name, kind=kind,
                         intrinsics=intr.undistorted() if intr is not None else None,
                         timestamps=np.asarray(timestamps, dtype=np.float64)[idx], gt_poses=gt)

    def __len__(self) -> int:
        return len(self._files)

    @property
    def files(self) -> list[Path]:
        """Image files of the selected frames."""
        return list(self._files)

    def _read_depth(self, k: int) -> np.ndarray | None:
        if self._depth_files is None or self._depth_reader is None or self._depth_files[k] is None:
            return None
        f = self._depth_files[k]
        depth = self._depth_reader(f)
        if depth.shape[:2] != (self._size[1], self._size[0]):
            raise InputError(f"{f}: depth map is {depth.shape[1]}x{depth.shape[0]} but the images are "
                             f"{self._size[0]}x{self._size[1]}")
        if self._undistort is not None:
            depth = self._undistort.depth(depth)
        return depth

    def _load(self, k: int) -> Frame:
        f = self._files[k]
        image = read_rgb(f)
        h, w = image.shape[:2]
        if (w, h) != self._size:
            raise InputError(f"{f}: image is {w}x{h} but the sequence's first image "
                             f"({self._files[0].name}) is {self._size[0]}x{self._size[1]}")
        if self._undistort is not None:
            image = self._undistort.image(image)
        return Frame(index=k, timestamp=float(self.timestamps[k]), image=image, intrinsics=self.intrinsics,
                     pose=self.gt_pose(k), depth=self._read_depth(k), source=str(f))


# ------------------------------------------------------------------ the reader
class FolderSequence(ImageFileSequence):
    """A plain folder of images (see the module docstring).

    Args:
        path: the folder.
        calib: calibration file (or parsed calibration) overriding ``calib.txt``.
        fps: frame rate for ``k / fps`` timestamps (default :data:`DEFAULT_FPS`).
        start, end, stride, max_frames: frame selection.
    Raises:
        InputError: missing folder, no images, bad calibration, unreadable first image.
    """

    def __init__(self, path: str | Path, *, calib: str | Path | CameraCalib | None = None,
                 fps: float | None = None, start: int = 0, end: int | None = None, stride: int = 1,
                 max_frames: int | None = None):
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: not a directory")
        files = list_images(path)
        if not files:
            raise InputError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the folder")
        stamps = timestamps_from_names([f.stem for f in files])
        if stamps is not None:
            order = np.argsort(stamps, kind="stable")
            files = [files[i] for i in order]
            stamps = stamps[order]
        else:
            rate = float(fps) if fps else DEFAULT_FPS
            if rate <= 0:
                raise InputError(f"{path}: fps must be positive, got {fps}")
            stamps = np.arange(len(files), dtype=np.float64) / rate
        if calib is None:
            sidecar = find_sidecar(path, FOLDER_CALIB_NAMES)
            calib = sidecar
        super().__init__(path, kind="folder", name=path.resolve().name, image_files=files, timestamps=stamps,
                         calib=load_calib(calib), start=start, end=end, stride=stride, max_frames=max_frames)
