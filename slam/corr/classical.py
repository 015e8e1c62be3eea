"""Classical dense correspondences: OpenCV's DIS optical flow with a
forward-backward consistency check turned into confidence.

For an edge ``(i, j)`` the flow i->j is computed at processing resolution,
initialised from the current reprojection (so that long-baseline edges start
near the answer), and checked against the flow j->i:

    e(x) = | f_ij(x) + f_ji(x + f_ij(x)) |          (pixels)
    confidence(x) = exp(-(e / sigma)^2) if x + f_ij(x) is inside frame j, else 0

Both are averaged over ``stride x stride`` blocks to feature resolution.
Results are cached per ordered frame pair (they do not depend on the
estimate once computed), so one update per edge suffices.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from slam.corr.base import CorrespondenceSource, EdgeUpdate, FrameData, flow_to_feature

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
           "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


@dataclass
class ClassicalOptions:
    """Tunables (mirrored in ``configs/correspondence/classical.yaml``)."""

    preset: str = "medium"        #: DIS preset: ultrafast | fast | medium
    fb_sigma: float = 1.0         #: forward-backward error (image px) at which confidence is exp(-1)
    min_confidence: float = 0.05  #: weights below this are set to 0
    init_from_coords: bool = True #: initialise DIS with the reprojection of the current estimate
    cache_size: int = 4096        #: ordered frame pairs kept in the cache
    stride: int = 8               #: processing / feature resolution


class ClassicalFlow(CorrespondenceSource):
    """DIS optical flow + forward-backward confidence (see module docstring)."""

    name = "classical"
    iterative = False

    def __init__(self, options: ClassicalOptions | None = None) -> None:
        self.opt = options or ClassicalOptions()
        if self.opt.preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {self.opt.preset!r}; expected one of {sorted(PRESETS)}")
        self.stride = self.opt.stride
        self._dis = cv2.DISOpticalFlow_create(PRESETS[self.opt.preset])
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()  # the DIS object and the cache are shared by the threads
        self._last: tuple[int, np.ndarray] | None = None  # (keyframe index, its flow to the last frame)

    def mean_flow(self, a: FrameData, b: FrameData) -> float:
        """Mean forward flow a->b (feature px) for the motion filter.

        Consecutive calls with the same keyframe ``a`` chain: the flow to the
        previous frame initialises DIS, which extends its capture range far
        beyond what DIS finds from a zero start on small images.
        """
        with self._lock:
            init = self._last[1] if self._last is not None and self._last[0] == a.index else None
            flow = self._flow(a.features, b.features, init)
            self._last = (a.index, flow)
        return float(np.linalg.norm(flow, axis=-1).mean()) / self.stride

    def prepare(self, index: int, image: np.ndarray) -> FrameData:
        return FrameData(index=index, image=image, features=cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))

    def _flow(self, a: np.ndarray, b: np.ndarray, init: np.ndarray | None) -> np.ndarray:
        flow = None if init is None else np.ascontiguousarray(init, dtype=np.float32)
        return self._dis.calc(a, b, flow)

    def pair(self, a: FrameData, b: FrameData, init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Flow a->b in image pixels (H, W, 2) and its confidence (H, W)."""
        fwd = self._flow(a.features, b.features, init)
        binit = None
        if init is not None:
            binit = -cv2.remap(init, *_sample_maps(init), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        bwd = self._flow(b.features, a.features, binit)
        H, W = fwd.shape[:2]
        mx, my = _sample_maps(fwd)
        back = cv2.remap(bwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(1e4, 1e4))
        err = np.linalg.norm(fwd + back, axis=-1)
        inside = (mx >= -0.5) & (mx <= W - 0.5) & (my >= -0.5) & (my <= H - 0.5)
        conf = np.exp(-(err / self.opt.fb_sigma) ** 2) * inside
        return fwd, conf.astype(np.float32)

    def update(self, frames_i: list[FrameData], frames_j: list[FrameData], coords: torch.Tensor,
               state=None) -> EdgeUpdate:
        s = self.stride
        targets, weights = [], []
        for e, (a, b) in enumerate(zip(frames_i, frames_j)):
            key = (a.index, b.index)
            with self._lock:
                hit = self._cache.get(key)
            if hit is None:
                init = None
                if self.opt.init_from_coords and coords is not None:
                    init = _upsample_flow(coords[e].detach().cpu().numpy(), a.image.shape[:2], s)
                if self._last is not None and self._last[0] == a.index and init is None:
                    init = self._last[1]
                with self._lock:
                    fwd, conf = self.pair(a, b, init)
                tgt, wt = flow_to_feature(fwd, conf, s)
                wt = np.where(wt < self.opt.min_confidence, 0.0, wt).astype(np.float32)
                hit = (tgt, wt)
                with self._lock:
                    self._cache[key] = hit
                    if len(self._cache) > self.opt.cache_size:
                        self._cache.popitem(last=False)
            targets.append(hit[0])
            weights.append(hit[1])
        target = torch.from_numpy(np.stack(targets))
        weight = torch.from_numpy(np.stack(weights))[..., None].expand(-1, -1, -1, 2).contiguous()
        dev = coords.device if coords is not None else "cpu"
        return EdgeUpdate(target=target.to(dev), weight=weight.to(dev))

    def forget(self, index: int) -> None:
        """Drop cached pairs involving an input frame (e.g. a removed keyframe)."""
        for key in [k for k in self._cache if index in k]:
            del self._cache[key]


def _sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute sampling maps ``x + flow`` for cv2.remap."""
    H, W = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return gx + flow[..., 0], gy + flow[..., 1]


def _upsample_flow(coords: np.ndarray, size: tuple[int, int], stride: int) -> np.ndarray:
    """Feature-resolution target coords (h, w, 2) -> image-resolution flow (H, W, 2)."""
    h, w = coords.shape[:2]
    v, u = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    flow_f = (coords - np.stack([u, v], -1)) * stride
    H, W = size
    return cv2.resize(flow_f.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
