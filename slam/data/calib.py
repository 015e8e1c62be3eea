"""Camera calibration files and undistortion.

Calibration file format (``calib.txt``)
---------------------------------------
One line of 4, 8 or 9 numbers, separated by whitespace and/or commas::

    fx fy cx cy [k1 k2 p1 p2 [k3]]

in pixels of the images the file sits next to, with the pixel-centre
convention of :mod:`slam.geometry.camera`.  Distortion coefficients follow
OpenCV's radial-tangential ("plumb bob") model.  ``#`` starts a comment; blank
and comment lines are ignored.  (Numbers split over several lines are accepted
too: all numbers of the file are read in order.)  KITTI's ``calib.txt``
(``P0: ...``) is a different format, parsed by :mod:`slam.data.kitti`.

Undistortion
------------
When a calibration has nonzero distortion, readers undistort every image with
:class:`Undistorter`, which is ``cv2.undistort`` with the **same** camera matrix
(``newCameraMatrix = K``): the yielded image has the same size and the same
``fx fy cx cy`` as the calibration, without distortion.  Pixels that map
outside the source image are black (0).  Depth maps are remapped with nearest
neighbour so that no depth is invented across edges.  The ``equidistant``
(fisheye) model of EuRoC-style ``sensor.yaml`` files uses ``cv2.fisheye`` with
the same convention.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slam.data.sequence import InputError
from slam.geometry.camera import Intrinsics

#: Numbers of fields accepted in a calibration file: fx fy cx cy [k1 k2 p1 p2 [k3]].
CALIB_FIELD_COUNTS: tuple[int, ...] = (4, 8, 9)

#: Distortion models understood by :class:`Undistorter` (aliases map to the first two).
DISTORTION_MODELS: dict[str, str] = {
    "radtan": "radtan",
    "radial-tangential": "radtan",
    "plumb_bob": "radtan",
    "pinhole": "radtan",
    "equidistant": "equidistant",
    "fisheye": "equidistant",
    "kannala-brandt": "equidistant",
}


@dataclass(frozen=True)
class CameraCalib:
    """Pinhole calibration not yet tied to an image size.

    Attributes:
        fx, fy, cx, cy: pinhole parameters in pixels.
        dist: distortion coefficients; ``(k1, k2, p1, p2[, k3])`` for the
            ``radtan`` model, ``(k1, k2, k3, k4)`` for ``equidistant``; empty
            when there is none.
        model: ``"radtan"`` or ``"equidistant"``.
        width, height: image size the calibration is for, when the file states
            it (EuRoC ``resolution``); checked against the images.
        source: the file it was read from (for messages).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, ...] = ()
    model: str = "radtan"
    width: int | None = None
    height: int | None = None
    source: str = ""

    @property
    def has_distortion(self) -> bool:
        """True when any distortion coefficient is nonzero."""
        return any(float(d) != 0.0 for d in self.dist)

    def matrix(self) -> np.ndarray:
        """3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def intrinsics(self, width: int, height: int) -> Intrinsics:
        """Intrinsics for images of ``width x height`` (with the distortion, if any).

        Raises:
            InputError: the calibration states a different image size.
        """
        if self.width is not None and self.height is not None and (self.width, self.height) != (width, height):
            raise InputError(f"{self.source or 'calibration'}: calibration is for {self.width}x{self.height} "
                             f"images but the images are {width}x{height}")
        dist = tuple(float(d) for d in self.dist) if self.has_distortion else ()
        return Intrinsics(float(self.fx), float(self.fy), float(self.cx), float(self.cy), int(width), int(height), dist)


def parse_calib_text(text: str, source: str = "calibration") -> CameraCalib:
    """Parse the text of a ``calib.txt`` (see the module docstring).

    Raises:
        InputError: not 4, 8 or 9 fields, a field that is not a number, or a
            non-positive / non-finite focal length; the message names ``source``.
    """
    fields: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            fields.extend(f for f in re.split(r"[\s,]+", line) if f)
    values: list[float] = []
    for f in fields:
        try:
            values.append(float(f))
        except ValueError:
            raise InputError(f"{source}: expected numbers 'fx fy cx cy [k1 k2 p1 p2 [k3]]', "
                             f"found {f!r} in {' '.join(fields)[:80]!r}") from None
    if len(values) not in CALIB_FIELD_COUNTS:
        raise InputError(f"{source}: expected 4, 8 or 9 numbers 'fx fy cx cy [k1 k2 p1 p2 [k3]]', "
                         f"found {len(values)}")
    if not all(np.isfinite(values)):
        raise InputError(f"{source}: non-finite value in calibration {values}")
    fx, fy, cx, cy = values[:4]
    if fx <= 0 or fy <= 0:
        raise InputError(f"{source}: focal lengths must be positive, found fx={fx} fy={fy}")
    return CameraCalib(fx, fy, cx, cy, dist=tuple(values[4:]), model="radtan", source=source)


def read_calib(path: str | Path) -> CameraCalib:
    """Read a ``calib.txt`` file (see the module docstring).

    Raises:
        InputError: missing or unreadable file, or bad contents (message names the path).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: calibration file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read calibration file ({e.__class__.__name__})") from None
    return parse_calib_text(text, str(path))


def load_calib(calib: str | Path | CameraCalib | None) -> CameraCalib | None:
    """Accept a calibration given as a path, an already parsed one, or None."""
    if calib is None or isinstance(calib, CameraCalib):
        return calib
    return read_calib(calib)


def find_sidecar(folder: Path, names: list[str]) -> Path | None:
    """The first of ``names`` that is a file in ``folder``, or None."""
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None


class Undistorter:
    """Undistort images of one camera, keeping the camera matrix K.

    Equivalent to ``cv2.undistort(img, K, dist, newCameraMatrix=K)`` with the
    remap tables computed once.  See the module docstring for the convention.

    Args:
        calib: the calibration (with distortion).
        width, height: image size in pixels.
    """

    def __init__(self, calib: CameraCalib, width: int, height: int):
        import cv2

        model = DISTORTION_MODELS.get(calib.model.lower())
        if model is None:
            raise InputError(f"{calib.source or 'calibration'}: unsupported distortion model {calib.model!r} "
                             f"(supported: {', '.join(sorted(DISTORTION_MODELS))})")
        K = calib.matrix()
        D = np.asarray(calib.dist, dtype=np.float64)
        size = (int(width), int(height))
        if model == "equidistant":
            if D.size != 4:
                raise InputError(f"{calib.source or 'calibration'}: the equidistant model needs 4 coefficients, "
                                 f"found {D.size}")
            self._map1, self._map2 = cv2.fisheye.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_32FC1)
        else:
            self._map1, self._map2 = cv2.initUndistortRectifyMap(K, D, None, K, size, cv2.CV_32FC1)
        self.size = size

    def image(self, image: np.ndarray) -> np.ndarray:
        """Undistort an (H, W[, C]) image with bilinear interpolation (black outside)."""
        import cv2

        return cv2.remap(image, self._map1, self._map2, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """Undistort an (H, W) depth map with nearest neighbour (0 outside)."""
        import cv2

        return cv2.remap(depth, self._map1, self._map2, cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
