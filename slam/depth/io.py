"""Writing and reading per-frame depth maps, and fusing them into a coloured point cloud.

Files written by :class:`DepthWriter` under its folder, for frame ``k``:

``depth_{k:06d}.npy``
    (H, W) float32 depth (z along the optical axis) in the units of the poses;
    0 where unknown.
``depth_{k:06d}.png``
    single-channel 16-bit PNG holding ``round(depth * scale)`` (0 = unknown,
    depths beyond ``65535 / scale`` are clipped to 65535), with ``scale`` in the
    sidecar ``depth_png.json`` (``{"scale", "max_depth", "invalid": 0, ...}``)
    so that :func:`read_depth` gives the depth back to ``0.5 / scale``.  With
    ``png_scale=None`` the scale is chosen from the first frame written so that
    ``headroom`` times its 99th-percentile depth fits (the "millimetres" of the
    run's arbitrary monocular unit), rounded down to 2 significant digits.

The folder can be read back with :func:`read_depth_folder`, or used as a
``folder`` depth prior (:class:`slam.depth.prior.FolderPrior`, which finds the
sidecar itself).

:func:`fuse_depth_cloud` lifts the depth maps of a video to a world point
cloud, following the conventions of :mod:`slam.io.pointcloud` (float32 world
xyz, uint8 RGB sampled bilinearly with the pixel-centre convention,
camera-to-world poses, a random subset above ``max_points`` with a fixed seed).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from slam.data.sequence import InputError
from slam.depth.prior import PNG_SIDECAR, file_number
from slam.geometry.pose import invert
from slam.io.outputs import atomic_path, write_json
from slam.io.pointcloud import bilinear_sample

#: Largest value of a 16-bit PNG.
PNG_MAX: int = 65535


def auto_png_scale(depth: np.ndarray, headroom: float = 4.0) -> float:
    """PNG scale such that ``headroom`` x the 99th-percentile depth of ``depth`` fits in 16 bits.

    Rounded down to two significant digits (``1000`` for metres up to ~16 m
    with the default headroom); 1000 when ``depth`` has no valid value.
    """
    d = np.asarray(depth, dtype=np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size == 0:
        return 1000.0
    s = PNG_MAX / (headroom * float(np.percentile(d, 99)))
    e = math.floor(math.log10(s)) - 1
    return float(math.floor(s / 10.0 ** e) * 10.0 ** e)


class DepthWriter:
    """Writes per-frame depth maps as ``.npy`` and/or 16-bit ``.png`` (see the module docstring).

    Args:
        out_dir: folder (created).
        formats: any of ``"npy"``, ``"png"``.
        png_scale: PNG value per unit of depth; None: chosen from the first frame.
        headroom: with ``png_scale=None``, multiple of the first frame's 99th-percentile
            depth that must fit.
        prefix: file name prefix.
    """

    def __init__(self, out_dir: str | Path, formats: Sequence[str] = ("npy", "png"), png_scale: float | None = None,
                 headroom: float = 4.0, prefix: str = "depth") -> None:
        bad = sorted(set(formats) - {"npy", "png"})
        if bad or not formats:
            raise InputError(f"depth output formats must be npy and/or png, got {list(formats)}")
        if png_scale is not None and not png_scale > 0:
            raise InputError(f"depth png_scale must be > 0, got {png_scale}")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.formats = tuple(formats)
        self.png_scale = None if png_scale is None else float(png_scale)
        self.headroom = float(headroom)
        self.prefix = prefix
        self.written: list[int] = []
        self.clipped = 0

    def path(self, index: int, ext: str) -> Path:
        """File of frame ``index`` with extension ``ext`` (``npy`` or ``png``)."""
        return self.out / f"{self.prefix}_{int(index):06d}.{ext}"

    def write(self, index: int, depth: np.ndarray) -> list[Path]:
        """Write frame ``index``'s (H, W) depth (non-finite or <= 0: unknown); returns the files."""
        d = np.asarray(depth, dtype=np.float32)
        if d.ndim != 2:
            raise ValueError(f"depth must be (H, W), got shape {d.shape}")
        d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
        paths = []
        if "npy" in self.formats:
            p = self.path(index, "npy")
            with atomic_path(p) as tmp:
                np.save(tmp, d)
            paths.append(p)
        if "png" in self.formats:
            if self.png_scale is None:
                self.png_scale = auto_png_scale(d, self.headroom)
            if not self.written:
                self._sidecar()
            v = np.rint(d.astype(np.float64) * self.png_scale)
            self.clipped += int((v > PNG_MAX).sum())
            v = np.clip(v, 0, PNG_MAX).astype(np.uint16)
            v[(d > 0) & (v == 0)] = 1  # tiny but valid depths stay valid
            p = self.path(index, "png")
            with atomic_path(p) as tmp:
                if not cv2.imwrite(str(tmp), v):
                    raise OSError(f"cannot write {p}")
            paths.append(p)
        self.written.append(int(index))
        return paths

    def _sidecar(self) -> None:
        write_json(self.out / PNG_SIDECAR, {
            "scale": self.png_scale, "max_depth": PNG_MAX / self.png_scale, "invalid": 0,
            "format": "16-bit PNG, value = round(depth * scale), depth in the units of the poses",
            "clipped_pixels": self.clipped})

    def close(self) -> None:
        """Rewrite the sidecar with the final count of clipped pixels."""
        if "png" in self.formats and self.written:
            self._sidecar()


def write_depth_maps(out_dir: str | Path, depth: np.ndarray, indices: Sequence[int] | None = None,
                     formats: Sequence[str] = ("npy", "png"), png_scale: float | None = None) -> DepthWriter:
    """Write (N, H, W) depth maps (frames ``indices``, default ``0..N-1``) with a :class:`DepthWriter`."""
    w = DepthWriter(out_dir, formats, png_scale)
    idx = range(len(depth)) if indices is None else indices
    for k, d in zip(idx, depth):
        w.write(k, d)
    w.close()
    return w


def read_depth(path: str | Path, png_scale: float | None = None) -> np.ndarray:
    """(H, W) float32 depth of a file written by :class:`DepthWriter` (0 = unknown).

    Args:
        path: ``.npy`` or 16-bit ``.png``.
        png_scale: PNG scale; None: from the sidecar next to the file.
    Raises:
        InputError: unreadable file or missing sidecar.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"{path}: cannot read depth map ({e.__class__.__name__})") from None
    if png_scale is None:
        side = path.parent / PNG_SIDECAR
        try:
            png_scale = float(json.loads(side.read_text())["scale"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{side}: missing or unreadable PNG depth sidecar") from None
    v = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if v is None or v.dtype != np.uint16 or v.ndim != 2:
        raise InputError(f"{path}: not a single-channel 16-bit PNG depth map")
    return (v.astype(np.float32) / np.float32(png_scale)).astype(np.float32)


def read_depth_folder(folder: str | Path, ext: str = "npy") -> tuple[np.ndarray, np.ndarray]:
    """``(indices (N,) int64, depth (N, H, W) float32)`` of the ``*.{ext}`` maps of a :class:`DepthWriter` folder."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob(f"*.{ext}") if not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no .{ext} depth maps")
    idx = np.array([file_number(f.name) if file_number(f.name) is not None else k for k, f in enumerate(files)],
                   dtype=np.int64)
    return idx, np.stack([read_depth(f) for f in files])


# ------------------------------------------------------------------------ fusion
def fuse_depth_cloud(depth: np.ndarray | Sequence[np.ndarray], images: np.ndarray | Sequence[np.ndarray] | None,
                     poses: np.ndarray, intrinsics: Sequence[float], *,
                     confidence: np.ndarray | Sequence[np.ndarray] | None = None, min_confidence: float = 0.5,
                     pixel_stride: int = 2, frame_stride: int = 1, neighbours: int = 2, min_views: int = 1,
                     rel_depth_tol: float = 0.05, max_depth: float | None = None, max_points: int | None = 2_000_000,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Coloured world point cloud from per-frame depth maps of a video.

    Every ``pixel_stride``-th pixel (both axes) of every ``frame_stride``-th
    frame with a valid depth (finite, > 0, ``<= max_depth``, ``confidence >=
    min_confidence``) is lifted with its intrinsics and camera-to-world pose.
    With ``min_views > 0`` a point is kept only when at least ``min(min_views,
    available neighbours)`` of the frames ``k - neighbours .. k + neighbours``
    see it in front of them, inside the image, with their (nearest-pixel) depth
    within ``rel_depth_tol`` (relative) of the point's depth there.

    Args:
        depth: (N, H, W) depth in the poses' units (0 / non-finite: unknown).
        images: (N, H', W', 3) uint8 RGB (any resolution; colours are sampled at the
            corresponding pixel-centre coordinates), or None for grey.
        poses: (N, 4, 4) camera-to-world, OpenCV camera axes.
        intrinsics: ``[fx, fy, cx, cy]`` at the depth resolution (W x H).
        confidence: optional (N, H, W) in [0, 1].
        min_confidence, pixel_stride, frame_stride, neighbours, min_views,
        rel_depth_tol, max_depth: see above.
        max_points: keep at most this many points (uniform random subset with ``seed``); None: all.
        seed: seed of that subset.
    Returns:
        ``(points (M, 3) float32 world, colors (M, 3) uint8)``.
    """
    poses = np.asarray(poses, dtype=np.float64)
    n = len(poses)
    if len(depth) != n:
        raise ValueError(f"{len(depth)} depth maps but {n} poses")
    K = np.asarray(intrinsics, dtype=np.float64)
    H, W = np.asarray(depth[0]).shape
    s = max(1, int(pixel_stride))
    vv, uu = np.mgrid[0:H:s, 0:W:s].astype(np.float64)
    rays = np.stack([(uu - K[2]) / K[0], (vv - K[3]) / K[1], np.ones_like(uu)], -1).reshape(-1, 3)
    uu, vv = uu.reshape(-1), vv.reshape(-1)
    inv = invert(poses)

    def valid_map(k: int) -> np.ndarray:
        d = np.asarray(depth[k], dtype=np.float64)
        ok = np.isfinite(d) & (d > 0)
        if max_depth is not None:
            ok &= d <= max_depth
        if confidence is not None:
            ok &= np.asarray(confidence[k]) >= min_confidence
        return np.where(ok, d, 0.0)

    pts, cols = [], []
    for k in range(0, n, max(1, int(frame_stride))):
        dk = valid_map(k)
        z = dk[vv.astype(np.int64), uu.astype(np.int64)]
        sel = z > 0
        if not sel.any():
            continue
        P = rays[sel] * z[sel, None]
        u_k, v_k = uu[sel], vv[sel]
        if min_views > 0:
            nbrs = [m for m in range(max(0, k - neighbours), min(n, k + neighbours + 1)) if m != k]
            need = min(min_views, len(nbrs))
            views = np.zeros(P.shape[0], dtype=np.int32)
            for m in nbrs:
                T = inv[m] @ poses[k]
                Q = P @ T[:3, :3].T + T[:3, 3]
                zq = Q[:, 2]
                zs = np.where(zq > 1e-9, zq, 1.0)
                um, vm = np.rint(K[0] * Q[:, 0] / zs + K[2]), np.rint(K[1] * Q[:, 1] / zs + K[3])
                inside = (zq > 1e-9) & (um >= 0) & (um <= W - 1) & (vm >= 0) & (vm <= H - 1)
                dm = np.zeros_like(zq)
                dmap = valid_map(m)
                dm[inside] = dmap[vm[inside].astype(np.int64), um[inside].astype(np.int64)]
                views += inside & (dm > 0) & (np.abs(zq - dm) <= rel_depth_tol * np.maximum(dm, 1e-12))
            keep = views >= need
            P, u_k, v_k = P[keep], u_k[keep], v_k[keep]
        if P.shape[0] == 0:
            continue
        pts.append(P @ poses[k, :3, :3].T + poses[k, :3, 3])
        if images is not None:
            img = np.asarray(images[k])
            x = (u_k + 0.5) * img.shape[1] / W - 0.5
            y = (v_k + 0.5) * img.shape[0] / H - 0.5
            cols.append(np.clip(np.rint(bilinear_sample(img[..., :3], x, y)), 0, 255).astype(np.uint8))
        else:
            cols.append(np.full((P.shape[0], 3), 128, np.uint8))
    if not pts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    xyz = np.concatenate(pts).astype(np.float32)
    rgb = np.concatenate(cols)
    if max_points is not None and len(xyz) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(xyz), size=int(max_points), replace=False))
        xyz, rgb = xyz[keep], rgb[keep]
    return xyz, rgb
