"""Ground-truth correspondences from a synthetic world, to test the rest of the
system in isolation.

Targets are the exact optical flow of :meth:`SyntheticSequence.flow` averaged
to feature resolution; weights are the fraction of each block that is
visible in frame j (occluded and out-of-view pixels get 0), and dynamic pixels
are reported through the motion probability.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from slam.corr.base import CorrespondenceSource, EdgeUpdate, FrameData, flow_to_feature
from slam.data.sequence import InputError, Sequence


class OracleFlow(CorrespondenceSource):
    """Exact flow of a :class:`~slam.data.synthetic.world.SyntheticSequence`.

    Args:
        world: the synthetic sequence being tracked (frame indices are its own).
        image_size: ``(W, H)`` processing resolution; the world's flow is rescaled to it.
        stride: processing / feature resolution.
        cache_size: ordered frame pairs kept.
    """

    name = "oracle"
    iterative = False

    def __init__(self, world: Sequence, image_size: tuple[int, int], stride: int = 8, cache_size: int = 4096) -> None:
        if not hasattr(world, "flow"):
            raise InputError(f"{world.path}: correspondence=oracle needs a synthetic world "
                             "(a folder written by `slam synth`, with synth.json)")
        self.world = world
        self.stride = stride
        self.image_size = image_size
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def prepare(self, index: int, image: np.ndarray) -> FrameData:
        return FrameData(index=index, image=image)

    def _pair(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import cv2

        flow, valid = self.world.flow(i, j)
        dyn = self.world.dynamic_mask(i).astype(np.float32) if hasattr(self.world, "dynamic_mask") else None
        H0, W0 = flow.shape[:2]
        W, H = self.image_size
        if (W, H) != (W0, H0):
            sx, sy = W / W0, H / H0
            flow = cv2.resize(flow, (W, H), interpolation=cv2.INTER_NEAREST) * np.array([sx, sy], np.float32)
            valid = cv2.resize(valid.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
            if dyn is not None:
                dyn = cv2.resize(dyn, (W, H), interpolation=cv2.INTER_NEAREST)
        tgt, wt = flow_to_feature(flow, valid, self.stride, mode="center")
        if dyn is None:
            motion = np.zeros_like(wt)
        else:
            _, motion = flow_to_feature(flow, dyn > 0.5, self.stride)
        return tgt, wt, motion

    def update(self, frames_i: list[FrameData], frames_j: list[FrameData], coords: torch.Tensor,
               state=None) -> EdgeUpdate:
        out = []
        for a, b in zip(frames_i, frames_j):
            key = (a.index, b.index)
            if key not in self._cache:
                self._cache[key] = self._pair(a.index, b.index)
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            out.append(self._cache[key])
        target = torch.from_numpy(np.stack([o[0] for o in out]))
        # full weight only where the whole block is visible; the motion map is not used
        # to down-weight here (that is the motion-probability head's job, issue #6)
        wt = np.stack([np.where(o[1] > 0.99, 1.0, 0.0) for o in out]).astype(np.float32)
        weight = torch.from_numpy(wt)[..., None].expand(-1, -1, -1, 2).contiguous()
        motion = torch.from_numpy(np.stack([o[2] for o in out]))
        dev = coords.device if coords is not None else "cpu"
        return EdgeUpdate(target=target.to(dev), weight=weight.to(dev), motion=motion.to(dev))
