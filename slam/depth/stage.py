"""Consistent video depth as the last stage of ``slam run``.

After tracking, with the run's poses and intrinsics held, every input frame
gets a dense depth map (:func:`slam.depth.video_depth.iter_video_depth`),
started from the keyframe depths carried to it
(:class:`slam.depth.keyframes.KeyframeDepth`) and, when one is configured,
pulled towards the aligned monocular prior (``depth.prior``).  Each map is
written as soon as it is ready, under ``DIR/depth/``:

* ``depth_NNNNNN.npy`` (float32) and/or ``depth_NNNNNN.png`` (16-bit, scale in
  ``depth_png.json``), depth in the run's (monocular) units, 0 = unknown;
* ``confidence_NNNNNN.png`` (8-bit, 255 = 1) when ``output.confidence``;

where ``NNNNNN`` is the frame's row in ``trajectory.txt``.  The written maps
are then fused into ``points.ply`` (:func:`slam.depth.io.fuse_depth_cloud`),
reading them back one by one, so memory does not grow with the video's length.
"""
from __future__ import annotations

import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from slam.data.sequence import Sequence
from slam.depth.io import DepthWriter, fuse_depth_cloud, read_depth
from slam.depth.keyframes import KeyframeDepth
from slam.depth.options import to_plain
from slam.depth.prior import make_prior
from slam.depth.video_depth import iter_video_depth
from slam.io.outputs import atomic_path
from slam.system.result import Reconstruction


class _Lazy:
    """A read-only list whose k-th item is ``load(k)``, keeping the last few loaded
    (fusion reads each frame's neighbours too) so that files are read about once."""

    def __init__(self, n: int, load: Callable[[int], np.ndarray], keep: int = 8) -> None:
        self.n, self.load, self.keep = n, load, keep
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> np.ndarray:
        if not 0 <= k < self.n:
            raise IndexError(k)
        if k not in self._cache:
            self._cache[k] = self.load(k)
            if len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return self._cache[k]


def run_video_depth(seq: Sequence, recon: Reconstruction, depth_cfg: Any, out_dir: str | Path, *,
                    progress: bool = True) -> dict[str, Any]:
    """Estimate, write and fuse the depth of every frame of ``seq`` (see the module docstring).

    Args:
        seq: the sequence that was tracked (read again, frame by frame).
        recon: the run (camera-to-world poses of every frame, input intrinsics, keyframes).
        depth_cfg: the ``depth`` node of ``configs/run.yaml`` (``prior`` and ``video``).
        out_dir: the run's output folder.
        progress: show a progress bar.
    Returns:
        ``{"depth_dir": Path, "frames": int, "points": (xyz (P, 3) float32, rgb (P, 3) uint8),
        "stats": dict}``.
    """
    cfg = to_plain(depth_cfg)
    vcfg = dict(cfg.get("video") or {})
    out_cfg = dict(vcfg.get("output") or {})
    cloud_cfg = dict(vcfg.get("cloud") or {})
    n = len(recon.timestamps)
    prior = make_prior(cfg.get("prior"), n_frames=n)
    init = KeyframeDepth(recon.kf_indices, recon.kf_disps, recon.feature_intrinsics, recon.poses,
                         recon.kf_confidence)
    ddir = Path(out_dir) / "depth"
    ddir.mkdir(parents=True, exist_ok=True)
    formats = tuple(out_cfg.get("formats", ("npy", "png")))
    writer = DepthWriter(ddir, formats, out_cfg.get("png_scale"))
    with_conf = bool(out_cfg.get("confidence", True))
    align = (cfg.get("prior") or {}).get("align")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="video depth", unit="frame", dynamic_ncols=True, file=sys.stderr)
    stats: dict[str, Any] = {}
    t0 = time.perf_counter()
    frames = (f.image for f in seq)
    try:
        for k, d, c in iter_video_depth(frames, recon.poses, recon.input_intrinsics, prior=prior,
                                        initial_depth=init, options=vcfg, align=align, stats=stats):
            writer.write(k, d)
            if with_conf:
                p = ddir / f"confidence_{k:06d}.png"
                with atomic_path(p) as tmp:
                    cv2.imwrite(str(tmp), np.rint(np.clip(c, 0, 1) * 255).astype(np.uint8))
            if bar is not None:
                bar.update(1)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
        if prior is not None:
            prior.close()
    stats["wall_s"] = time.perf_counter() - t0
    done = sorted(writer.written)
    ext = "npy" if "npy" in formats else "png"
    depth = _Lazy(len(done), lambda r: read_depth(writer.path(done[r], ext)))
    conf = None
    if with_conf:
        conf = _Lazy(len(done), lambda r: cv2.imread(str(ddir / f"confidence_{done[r]:06d}.png"),
                                                   cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0)
    images = _Lazy(len(done), lambda r: seq[done[r]].image)
    xyz, rgb = fuse_depth_cloud(depth, images, recon.poses[done], recon.input_intrinsics, confidence=conf,
                                **cloud_cfg)
    return {"depth_dir": ddir, "frames": len(done), "points": (xyz, rgb), "stats": stats}
