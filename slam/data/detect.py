"""Open any supported input by looking at its path.

Detection rules (first match wins), see :func:`detect_kind`:

1. a file with a video extension (:data:`~slam.data.video.VIDEO_EXTENSIONS`)
   -> ``"video"``; a file with an image extension -> error (give its folder);
   any other file that OpenCV opens and decodes a frame from -> ``"video"``;
2. a directory that is, or contains, ``mav0/`` with a ``cam0/`` -> ``"euroc"``;
3. a directory with ``image_left/`` (``pose_left.txt`` optional) -> ``"tartanair"``;
4. a directory with ``rgb.txt`` -> ``"tum"``;
5. a directory with ``image_0/`` or ``image_2/`` (``calib.txt`` optional) -> ``"kitti"``;
6. a directory with no images and exactly one video file (plus sidecar
   calibration / ground truth) -> ``"video"`` (that file);
7. a directory with images -> ``"folder"``;
8. otherwise :class:`InputError` (unknown layout).
"""
from __future__ import annotations

from pathlib import Path

from slam.data.calib import CameraCalib, load_calib
from slam.data.euroc import EurocSequence, find_mav0
from slam.data.folder import IMAGE_EXTENSIONS, FolderSequence, list_images
from slam.data.kitti import KittiSequence, find_kitti_camera
from slam.data.sequence import InputError, Sequence
from slam.data.tartanair import TartanAirSequence
from slam.data.tum import TumRgbdSequence
from slam.data.video import VIDEO_EXTENSIONS, VideoSequence, open_capture

#: Input kinds :func:`detect_kind` returns.
KINDS: tuple[str, ...] = ("video", "euroc", "tartanair", "tum", "kitti", "folder")

UNKNOWN_LAYOUT = ("unknown input layout (expected a video file, an image folder, "
                  "or a TartanAir/EuRoC/TUM/KITTI sequence)")


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))


def _opens_as_video(path: Path) -> bool:
    try:
        cap = open_capture(path)
    except InputError:
        return False
    try:
        ok, _ = cap.read()
    finally:
        cap.release()
    return bool(ok)


def _resolve(path: Path) -> tuple[str, Path]:
    """``(kind, the path the reader should open)``; see the module docstring."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_file():
        ext = path.suffix.lower()
        if ext in VIDEO_EXTENSIONS:
            return "video", path
        if ext in IMAGE_EXTENSIONS:
            raise InputError(f"{path}: a single image; give the folder of images instead")
        if _opens_as_video(path):
            return "video", path
        raise InputError(f"{path}: {UNKNOWN_LAYOUT}")
    if not path.is_dir():
        raise InputError(f"{path}: {UNKNOWN_LAYOUT}")
    mav0 = find_mav0(path)
    if mav0 is not None and (mav0 / "cam0").is_dir():
        return "euroc", path
    if (path / "image_left").is_dir():
        return "tartanair", path
    if (path / "rgb.txt").is_file():
        return "tum", path
    if find_kitti_camera(path) is not None:
        return "kitti", path
    try:
        images = list_images(path)
        videos = _videos_in(path)
    except OSError as e:
        raise InputError(f"{path}: cannot list directory ({e.strerror or e.__class__.__name__})") from None
    if not images and len(videos) == 1:
        return "video", videos[0]
    if images:
        return "folder", path
    if len(videos) > 1:
        raise InputError(f"{path}: contains {len(videos)} videos ({', '.join(v.name for v in videos[:3])}"
                         f"{', ...' if len(videos) > 3 else ''}); give one of them")
    raise InputError(f"{path}: {UNKNOWN_LAYOUT}")


def detect_kind(path: str | Path) -> str:
    """The input kind of ``path``: one of :data:`KINDS`.

    Raises:
        InputError: missing path or unknown layout.
    """
    return _resolve(Path(path))[0]


def open_sequence(path: str | Path, *, calib: str | Path | CameraCalib | None = None, start: int = 0,
                  end: int | None = None, stride: int = 1, max_frames: int | None = None,
                  fps: float | None = None) -> Sequence:
    """Open a video, image folder or dataset sequence as a :class:`Sequence`.

    Args:
        path: video file, image folder, or sequence folder (see the module docstring).
        calib: calibration file ``fx fy cx cy [k1 k2 p1 p2 [k3]]`` overriding
            whatever intrinsics the reader finds (distortion is undistorted).
        start, end, stride, max_frames: frame selection, applied by the reader.
        fps: frame rate for inputs without timestamps (video: overrides the
            container's; folder, TartanAir, KITTI without times: ``k / fps``);
            ignored by EuRoC and TUM, which carry timestamps.
    Raises:
        InputError: any problem with the input; the message names the path.
    """
    path = Path(path)
    kind, target = _resolve(path)
    cal = load_calib(calib)
    sel = dict(start=start, end=end, stride=stride, max_frames=max_frames)
    if kind == "video":
        seq = VideoSequence(target, calib=cal, fps=fps, **sel)
        if path.is_dir():  # a folder holding one video (+ calib / ground truth): named after the folder
            seq.name = path.resolve().name
        return seq
    if kind == "euroc":
        return EurocSequence(target, calib=cal, **sel)
    if kind == "tartanair":
        return TartanAirSequence(target, calib=cal, fps=fps, **sel)
    if kind == "tum":
        return TumRgbdSequence(target, calib=cal, **sel)
    if kind == "kitti":
        return KittiSequence(target, calib=cal, fps=fps, **sel)
    return FolderSequence(target, calib=cal, fps=fps, **sel)
