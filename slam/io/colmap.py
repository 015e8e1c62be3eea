"""A run's keyframes and fused points as a COLMAP text model.

Layout written by :func:`write_colmap` under ``DIR``::

    DIR/cameras.txt    one PINHOLE camera (CAMERA_ID 1)
    DIR/images.txt     one image per keyframe, named frame_NNNNNN.png (input-frame index)
    DIR/points3D.txt   the fused points, each observed by the keyframe it came from
    DIR/images/        the keyframe images (PNG) the model refers to

Choices and conventions
-----------------------
* The camera is declared at the **processing resolution** (``recon.image_size``,
  ``recon.intrinsics``) and the keyframe images are written at that resolution,
  so the model is self-consistent (images, intrinsics and 2D observations agree)
  without resampling.  Tools that need the input resolution can rescale the
  camera with :meth:`slam.geometry.camera.Intrinsics.scaled`.
* COLMAP puts the centre of the top-left pixel at ``(0.5, 0.5)``; this package
  puts it at ``(0, 0)`` (:mod:`slam.geometry.camera`).  The principal point and
  every 2D observation are therefore written with ``+0.5``.
* ``images.txt`` holds COLMAP's **world-to-camera** pose ``QW QX QY QZ TX TY TZ``
  (the inverse of the camera-to-world poses of :class:`~slam.system.result.Reconstruction`).
* Each 3D point has a track of length one: ``(IMAGE_ID, POINT2D_IDX)`` of the
  keyframe pixel it was lifted from; the matching ``POINTS2D`` entry of that
  image lists ``X Y POINT3D_ID``.  ``ERROR`` is 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.geometry.pose import invert, matrix_to_tq
from slam.io.pointcloud import FusedCloud
from slam.system.result import Reconstruction

#: Offset from this package's pixel coordinates to COLMAP's.
COLMAP_PIXEL_OFFSET: float = 0.5


def keyframe_image_name(frame_index: int) -> str:
    """File name of a keyframe image: ``frame_000123.png`` for input frame 123."""
    return f"frame_{int(frame_index):06d}.png"


def _write_images(folder: Path, recon: Reconstruction, names: list[str]) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(recon.kf_images, names, strict=True):
        img = np.asarray(img)
        bgr = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        if not cv2.imwrite(str(folder / name), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):  # fast, lossless
            raise OSError(f"cannot write {folder / name}")


def write_colmap(recon: Reconstruction, out_dir: str | Path, cloud: FusedCloud | None = None, *,
                 write_images: bool = True) -> Path:
    """Write ``recon``'s keyframes (and ``cloud``) as a COLMAP text model in ``out_dir``.

    Args:
        recon: the run's result.
        out_dir: output folder (created); existing model files are overwritten.
        cloud: fused points (:func:`slam.io.pointcloud.fuse_cloud`); None writes no points.
        write_images: also write the keyframe images to ``out_dir/images``.
    Returns:
        ``out_dir``; it loads with ``pycolmap.Reconstruction(out_dir)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    W, H = (int(s) for s in recon.image_size)
    fx, fy, cx, cy = (float(v) for v in recon.intrinsics)
    o = COLMAP_PIXEL_OFFSET
    with open(out / "cameras.txt", "w") as f:
        f.write("# Camera list with one line of data per camera:\n"
                "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
                "# Number of cameras: 1\n")
        f.write(f"1 PINHOLE {W} {H} {fx:.10g} {fy:.10g} {cx + o:.10g} {cy + o:.10g}\n")

    n_kf = len(recon.kf_indices)
    names = [keyframe_image_name(i) for i in recon.kf_indices]
    tq = matrix_to_tq(invert(np.asarray(recon.kf_poses, dtype=np.float64))) if n_kf else np.zeros((0, 7))
    if cloud is None:
        cloud = FusedCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int32),
                           np.zeros((0, 2), np.float32), np.zeros(0, np.int16))
    order = np.argsort(cloud.keyframe, kind="stable")
    kf_sorted = cloud.keyframe[order]
    starts = np.searchsorted(kf_sorted, np.arange(n_kf + 1))
    point_ids = np.empty(len(cloud), dtype=np.int64)
    point_ids[order] = np.arange(len(cloud)) + 1  # ids follow the keyframe-sorted order
    point2d_idx = np.empty(len(cloud), dtype=np.int64)
    point2d_idx[order] = np.arange(len(cloud)) - starts[kf_sorted]

    with open(out / "images.txt", "w") as f:
        f.write("# Image list with two lines of data per image:\n"
                "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
                "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
                f"# Number of images: {n_kf}\n")
        for k in range(n_kf):
            t, q = tq[k, :3], tq[k, 3:]
            f.write(f"{k + 1} {q[3]:.12g} {q[0]:.12g} {q[1]:.12g} {q[2]:.12g} "
                    f"{t[0]:.12g} {t[1]:.12g} {t[2]:.12g} 1 {names[k]}\n")
            sel = order[starts[k]:starts[k + 1]]
            if sel.size:
                uv = (cloud.uv[sel].astype(np.float64) + o).tolist()
                f.write(" ".join(map("%.3f %.3f %d".__mod__,
                                     ((x, y, i) for (x, y), i in zip(uv, point_ids[sel].tolist(), strict=True)))))
            f.write("\n")

    with open(out / "points3D.txt", "w") as f:
        f.write("# 3D point list with one line of data per point:\n"
                "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
                f"# Number of points: {len(cloud)}\n")
        if len(cloud):
            rows = order  # write in id order
            cols = [point_ids[rows], *cloud.xyz[rows].astype(np.float64).T, *cloud.rgb[rows].astype(np.int64).T,
                    cloud.keyframe[rows] + 1, point2d_idx[rows]]
            f.writelines(map("%d %.7g %.7g %.7g %d %d %d 0 %d %d\n".__mod__,
                             zip(*(c.tolist() for c in cols), strict=True)))

    if write_images:
        _write_images(out / "images", recon, names)
    return out
