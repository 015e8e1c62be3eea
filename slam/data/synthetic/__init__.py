"""Synthetic worlds with exact ground truth, rendered by ray casting on the CPU.

Modules (one job each):

* :mod:`~slam.data.synthetic.textures` - procedural and photographic textures with mip levels.
* :mod:`~slam.data.synthetic.shapes` - box, quad, sphere and cylinder meshes.
* :mod:`~slam.data.synthetic.scenes` - the static world kinds (room, street, table, clutter).
* :mod:`~slam.data.synthetic.motion` - camera trajectories (handheld, forward, orbit, rotation, static, shaky).
* :mod:`~slam.data.synthetic.dynamic` - rigidly moving objects.
* :mod:`~slam.data.synthetic.raycast` - Open3D ray casting.
* :mod:`~slam.data.synthetic.render` - shading, depth and labels.
* :mod:`~slam.data.synthetic.sensor` - noise, blur and exposure changes.
* :mod:`~slam.data.synthetic.flow` - exact optical flow between frames.
* :mod:`~slam.data.synthetic.world` - :func:`make_world` and :class:`SyntheticSequence`.
* :mod:`~slam.data.synthetic.writers` - TartanAir, EuRoC and video layouts on disk.

Conventions follow :mod:`slam.data.sequence`: RGB uint8 images, camera-to-world
poses in OpenCV camera axes, depth z in metres (0 where the ray hits nothing).
The world frame is z up.  Heavy dependencies (open3d) are imported when the
submodules are.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

SCENE_KINDS: tuple[str, ...] = ("room", "street", "table", "clutter")
MOTION_KINDS: tuple[str, ...] = ("handheld", "forward", "orbit", "rotation", "static", "shaky")
FORMATS: tuple[str, ...] = ("video", "tartanair", "euroc")

if TYPE_CHECKING:  # pragma: no cover
    from slam.data.synthetic.world import SyntheticSequence, WorldParams, WorldSpec


def sample_path() -> Path:
    """Folder of the bundled sample video (``video.mp4``, ``groundtruth.txt``, ``calib.txt``, ``synth.json``)."""
    return Path(__file__).resolve().parent.parent.parent / "sample"


def __getattr__(name: str):
    # lazy exports so that importing the package (e.g. for sample_path) does not load open3d
    if name in ("make_world", "build_world", "SyntheticSequence", "WorldSpec", "WorldParams"):
        from slam.data.synthetic import world

        return getattr(world, name)
    if name in ("write_sequence", "write_tartanair", "write_euroc", "write_video"):
        from slam.data.synthetic import writers

        return getattr(writers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "MOTION_KINDS",
    "SCENE_KINDS",
    "SyntheticSequence",
    "WorldParams",
    "WorldSpec",
    "build_world",
    "make_world",
    "sample_path",
    "write_euroc",
    "write_sequence",
    "write_tartanair",
    "write_video",
]
