"""Video files (anything OpenCV's FFmpeg backend decodes: .mp4 .avi .mov .mkv .webm ...).

Sidecar files, looked up in the video's folder
----------------------------------------------
* Calibration: ``<stem>.calib.txt``, else ``calib.txt`` (format of
  :mod:`slam.data.calib`; distortion is undistorted away).  Without one the
  intrinsics are unknown (None).
* Ground truth: ``<stem>.groundtruth.txt``, else ``groundtruth.txt`` (TUM
  format, camera-to-world in the OpenCV convention, timestamps in seconds from
  the first frame).  Each frame takes the pose with the nearest timestamp
  within half a frame period; frames without one get a NaN row in
  ``gt_poses`` (``Frame.pose`` None); ``gt_poses`` is None when no frame matches.

Frames and timing
-----------------
* Raw frame ``k`` (0-based, in decoding order) has timestamp ``k / fps``, fps
  from the container (or the ``fps`` argument, or :data:`DEFAULT_VIDEO_FPS`
  when the container reports none).
* The frame count is taken by decoding the whole stream once at construction
  (``grab()`` only, no colour conversion): ``CAP_PROP_FRAME_COUNT`` is an
  estimate for many containers (mkv, webm, raw H.264) and cannot be trusted.
* Decoding is sequential: one decoder stays open and is advanced with
  ``grab()`` over skipped frames, so iterating (with any stride) decodes the
  file once.  Asking for an earlier frame reopens the file and decodes forward
  to it (exact, but costs a pass over the preceding frames).  Not thread-safe;
  concurrent iterators over one sequence make it re-decode.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.data.calib import CameraCalib, Undistorter, find_sidecar, load_calib
from slam.data.sequence import Frame, InputError, Sequence, select_indices
from slam.data.tum import associate_nearest, gather_poses
from slam.io.tum import read_tum

#: File extensions recognised as video without trying to open the file.
VIDEO_EXTENSIONS: frozenset[str] = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts",
    ".m2ts", ".3gp", ".ogv", ".mjpeg", ".mjpg", ".h264", ".264", ".hevc", ".h265"})

#: Frame rate assumed when the container reports none (or an absurd one).
DEFAULT_VIDEO_FPS: float = 30.0

#: Container frame rates outside (0, MAX_PLAUSIBLE_FPS] are treated as missing.
MAX_PLAUSIBLE_FPS: float = 1000.0


def calib_sidecar(video: Path) -> Path | None:
    """``<stem>.calib.txt`` or ``calib.txt`` beside ``video``."""
    return find_sidecar(video.parent, [f"{video.stem}.calib.txt", "calib.txt"])


def groundtruth_sidecar(video: Path) -> Path | None:
    """``<stem>.groundtruth.txt`` or ``groundtruth.txt`` beside ``video``."""
    return find_sidecar(video.parent, [f"{video.stem}.groundtruth.txt", "groundtruth.txt"])


def open_capture(path: Path):
    """Open ``path`` with OpenCV's FFmpeg backend (any backend if the build lacks FFmpeg).

    Raises:
        InputError: the file cannot be opened as a video.
    """
    import cv2

    backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    cap = cv2.VideoCapture(str(path), backend)
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: cannot open video (empty, corrupt or unsupported format)")
    return cap


def probe_video(path: Path) -> tuple[int, int, int, float]:
    """Decode a video once to learn ``(frame_count, width, height, container_fps)``.

    The first frame is fully decoded (its size is the video's size); the rest
    are only grabbed.  ``container_fps`` is 0 when the container reports none.

    Raises:
        InputError: unopenable or undecodable file, or no frames.
    """
    import cv2

    cap = open_capture(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, first = cap.read()
        if not ok or first is None:
            raise InputError(f"{path}: video has no decodable frames (0 frames, corrupt or unsupported)")
        n = 1
        while cap.grab():
            n += 1
    finally:
        cap.release()
    h, w = first.shape[:2]
    return n, w, h, fps if np.isfinite(fps) and 0 < fps <= MAX_PLAUSIBLE_FPS else 0.0


class VideoSequence(Sequence):
    """A video file (see the module docstring).

    Args:
        path: the video file.
        calib: calibration overriding the sidecar ``calib.txt``.
        groundtruth: TUM-format trajectory overriding the sidecar.
        fps: frame rate overriding the container's.
        start, end, stride, max_frames: frame selection (raw frame indices).
    Raises:
        InputError: missing, unopenable or empty video; bad sidecar files.
    """

    def __init__(self, path: str | Path, *, calib: str | Path | CameraCalib | None = None,
                 groundtruth: str | Path | None = None, fps: float | None = None, start: int = 0,
                 end: int | None = None, stride: int = 1, max_frames: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file or directory" if not path.exists() else f"{path}: not a file")
        n, width, height, container_fps = probe_video(path)
        if fps is not None and fps <= 0:
            raise InputError(f"{path}: fps must be positive, got {fps}")
        self.fps = float(fps) if fps else (container_fps or DEFAULT_VIDEO_FPS)
        self.frame_count = n
        self._raw = select_indices(n, start, end, stride, max_frames)
        if not self._raw:
            raise InputError(f"{path}: no frames selected (start={start}, end={end}, stride={stride}, {n} frames)")
        self._size = (width, height)

        cal = load_calib(calib if calib is not None else calib_sidecar(path))
        intr = cal.intrinsics(width, height) if cal is not None else None
        self._undistort = Undistorter(cal, width, height) if cal is not None and cal.has_distortion else None

        stamps = np.asarray(self._raw, dtype=np.float64) / self.fps
        gt = None
        gt_file = Path(groundtruth) if groundtruth is not None else groundtruth_sidecar(path)
        if gt_file is not None:
            gt_t, gt_T = read_tum(gt_file)
            gt = gather_poses(gt_T, associate_nearest(stamps, gt_t, 0.5 / self.fps + 1e-9))

        self._cap = None
        self._next = 0  # raw index of the frame the open decoder returns next
        super().__init__(path=path, name=path.stem, kind="video",
                         intrinsics=intr.undistorted() if intr is not None else None,
                         timestamps=stamps, gt_poses=gt)

    def __len__(self) -> int:
        return len(self._raw)

    @property
    def raw_indices(self) -> list[int]:
        """Indices in the video of the selected frames."""
        return list(self._raw)

    def close(self) -> None:
        """Release the decoder (it is reopened on demand)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._next = 0

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def _decode(self, raw: int) -> np.ndarray:
        """BGR image of raw frame ``raw``, advancing (or reopening) the decoder."""
        if self._cap is None or raw < self._next:
            self.close()
            self._cap = open_capture(self.path)
        while self._next < raw:
            if not self._cap.grab():
                self.close()
                raise InputError(f"{self.path}: decoding failed at frame {self._next} of {self.frame_count}")
            self._next += 1
        ok, img = self._cap.read()
        if not ok or img is None:
            self.close()
            raise InputError(f"{self.path}: decoding failed at frame {raw} of {self.frame_count}")
        self._next += 1
        return img

    def _load(self, k: int) -> Frame:
        import cv2

        raw = self._raw[k]
        bgr = self._decode(raw)
        h, w = bgr.shape[:2]
        if (w, h) != self._size:
            raise InputError(f"{self.path}: frame {raw} is {w}x{h} but the video is {self._size[0]}x{self._size[1]}")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else np.repeat(bgr[:, :, None], 3, 2)
        if self._undistort is not None:
            image = self._undistort.image(image)
        return Frame(index=k, timestamp=float(self.timestamps[k]), image=image, intrinsics=self.intrinsics,
                     pose=self.gt_pose(k), source=f"{self.path}#{raw}")
