"""Depth: monocular priors, their alignment and BA weight, consistent video depth, writers, metrics.

* :mod:`~slam.depth.prior` - :class:`DepthPrior` (folder of maps, ONNX model, the project's own network), :func:`make_prior`.
* :mod:`~slam.depth.align` - :func:`align_scale_shift`, :func:`prior_weight_from_hessian`.
* :mod:`~slam.depth.video_depth` - :func:`estimate_video_depth` (flow-consistent dense depth, poses fixed).
* :mod:`~slam.depth.keyframes` - :class:`KeyframeDepth`, initial depth from a run's keyframes.
* :mod:`~slam.depth.io` - per-frame ``.npy`` / 16-bit PNG writers and readers, :func:`fuse_depth_cloud`.
* :mod:`~slam.depth.metrics` - :func:`depth_metrics` (abs-rel, delta < 1.25 after median scaling).

Conventions: images (H, W, 3) uint8 RGB; camera-to-world poses, OpenCV axes;
intrinsics ``[fx, fy, cx, cy]`` with pixel centres at integer coordinates;
depth is z in the units of the poses, inverse depth its reciprocal.
"""
from __future__ import annotations

from slam.depth.align import (
    AlignOptions,
    PriorWeightOptions,
    align_scale_shift,
    prior_weight_from_hessian,
)
from slam.depth.io import (
    DepthWriter,
    fuse_depth_cloud,
    read_depth,
    read_depth_folder,
    write_depth_maps,
)
from slam.depth.keyframes import KeyframeDepth
from slam.depth.metrics import depth_metrics
from slam.depth.prior import (
    DepthPrior,
    FolderPrior,
    NetworkPrior,
    OnnxPrior,
    make_prior,
)
from slam.depth.video_depth import (
    VideoDepth,
    VideoDepthOptions,
    estimate_video_depth,
    iter_video_depth,
)

__all__ = [
    "AlignOptions",
    "DepthPrior",
    "DepthWriter",
    "FolderPrior",
    "KeyframeDepth",
    "NetworkPrior",
    "OnnxPrior",
    "PriorWeightOptions",
    "VideoDepth",
    "VideoDepthOptions",
    "align_scale_shift",
    "depth_metrics",
    "estimate_video_depth",
    "fuse_depth_cloud",
    "iter_video_depth",
    "make_prior",
    "prior_weight_from_hessian",
    "read_depth",
    "read_depth_folder",
    "write_depth_maps",
]
