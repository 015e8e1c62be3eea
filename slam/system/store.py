"""The keyframe store: the one place the system's state lives.

Preallocated tensors of a fixed capacity hold, per keyframe slot ``k < n``:
the input-frame index and timestamp, the processing-resolution image, the
world-to-camera pose ``G_k`` (SE3 ``[t, q]``), the inverse depth and its
confidence at feature resolution, and the correspondence source's per-frame
data.  The shared intrinsics (processing resolution) live here too.

Threads (frontend, backend, viewer) share one store; every read-modify-write
happens under ``store.lock`` (re-entrant).  ``version`` increases whenever
poses or depths change so that readers (the viewer) can skip unchanged state,
and ``changed`` records which slots changed since the last ``take_changes``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pypose as pp
import torch

from slam.corr.base import FrameData
from slam.data.sequence import InputError


@dataclass
class TrackRecord:
    """Correspondences of a tracked non-keyframe to the keyframe it was tracked against.

    Attributes:
        anchor: input-frame index of that keyframe.
        target: (h, w, 2) coordinates in the frame of the keyframe's pixels (feature resolution).
        weight: (h, w, 2) their confidence.
        checked: whether ``weight`` is a consistency-checked confidence
            (:attr:`slam.corr.base.EdgeUpdate.checked`).
    """

    anchor: int
    target: torch.Tensor
    weight: torch.Tensor
    checked: bool = True


@dataclass
class Snapshot:
    """A consistent copy of the first ``n`` slots (tensors are clones)."""

    n: int
    frame_index: torch.Tensor   # (n,) long
    timestamps: torch.Tensor    # (n,) float64
    poses: torch.Tensor         # (n, 7) world-to-camera
    disps: torch.Tensor         # (n, h, w)
    confidence: torch.Tensor    # (n, h, w)
    intrinsics: torch.Tensor    # (4,) processing resolution
    version: int
    motion: torch.Tensor | None = None  # (n, h, w) motion probability (slam.system.motion)
    focal_std: float = float("nan")     # focal bookkeeping of the last BA that could estimate it
    focal_held: bool | None = None


class KeyframeStore:
    """Preallocated keyframe state (see module docstring).

    Args:
        capacity: maximum number of keyframes.
        image_size: ``(W, H)`` processing resolution.
        stride: processing / feature resolution.
        intrinsics: (4,) ``[fx, fy, cx, cy]`` at processing resolution.
        focal_known: False when the focal length is to be estimated.
        device: torch device of the geometric state.
    """

    def __init__(self, capacity: int, image_size: tuple[int, int], stride: int, intrinsics: torch.Tensor,
                 focal_known: bool = True, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        W, H = image_size
        h, w = H // stride, W // stride
        self.capacity, self.image_size, self.stride, self.feature_size = capacity, (W, H), stride, (w, h)
        self.device, self.dtype = torch.device(device), dtype
        self.lock = threading.RLock()
        self.n = 0
        self.version = 0
        self.frame_index = torch.full((capacity,), -1, dtype=torch.long)
        self.timestamps = torch.zeros(capacity, dtype=torch.float64)
        self.images = torch.zeros(capacity, H, W, 3, dtype=torch.uint8)
        self.poses = pp.identity_SE3(capacity, device=self.device, dtype=dtype).tensor()
        self.disps = torch.ones(capacity, h, w, device=self.device, dtype=dtype)
        self.confidence = torch.zeros(capacity, h, w, device=self.device, dtype=dtype)
        self.motion = torch.zeros(capacity, h, w, device=self.device, dtype=dtype)  # P(pixel moves), slam.system.motion
        #: raw monocular prior (inverse depth up to scale and shift) and its confidence, when a prior is used
        self.prior_disp: torch.Tensor | None = None
        self.prior_conf: torch.Tensor | None = None
        self.frames: list[FrameData | None] = [None] * capacity
        self.intrinsics = intrinsics.to(self.device, dtype).clone()
        self.focal_known = focal_known
        #: focal bookkeeping of the last BA that could estimate it: relative marginal std, whether it was held
        self.focal_std: float = float("nan")
        self.focal_held: bool | None = None
        self.changed: set[int] = set()
        self.removed_frames: list[int] = []
        self.tracks: dict[int, TrackRecord] = {}  # input-frame index -> its record (non-keyframes)

    # ------------------------------------------------------------------ access
    def feature_intrinsics(self) -> torch.Tensor:
        """(4,) intrinsics at feature resolution (pixel-centre convention)."""
        s = 1.0 / self.stride
        fx, fy, cx, cy = self.intrinsics
        return torch.stack([fx * s, fy * s, (cx + 0.5) * s - 0.5, (cy + 0.5) * s - 0.5])

    def enable_prior(self) -> None:
        """Allocate the per-keyframe depth-prior maps (:mod:`slam.system.depth_prior`)."""
        with self.lock:
            if self.prior_disp is None:
                self.prior_disp = torch.zeros_like(self.disps)
                self.prior_conf = torch.zeros_like(self.disps)

    def set_feature_focal(self, K_feat: torch.Tensor) -> None:
        """Set the processing-resolution focal from a feature-resolution estimate."""
        with self.lock:
            self.intrinsics[0] = K_feat[0] * self.stride
            self.intrinsics[1] = K_feat[1] * self.stride
            self.version += 1

    def snapshot(self) -> Snapshot:
        with self.lock:
            n = self.n
            return Snapshot(n, self.frame_index[:n].clone(), self.timestamps[:n].clone(), self.poses[:n].clone(),
                            self.disps[:n].clone(), self.confidence[:n].clone(), self.intrinsics.clone(),
                            self.version, self.motion[:n].clone(), self.focal_std, self.focal_held)

    def restore(self, snap: Snapshot) -> None:
        """Put back the estimate of a :meth:`snapshot` of the same keyframes (slots ``0 .. snap.n - 1``:
        poses, depths, confidences, motion maps, intrinsics and focal bookkeeping), e.g. to try
        another start of the initialisation."""
        with self.lock:
            if snap.n > self.n or not torch.equal(snap.frame_index, self.frame_index[:snap.n]):
                raise ValueError("restore: the snapshot is of other keyframes")
            n = snap.n
            self.poses[:n], self.disps[:n], self.confidence[:n] = snap.poses, snap.disps, snap.confidence
            if snap.motion is not None:
                self.motion[:n] = snap.motion
            self.intrinsics[:] = snap.intrinsics
            self.focal_std, self.focal_held = snap.focal_std, snap.focal_held
            self.version += 1
            self.changed.update(range(n))

    def slot_of_frame(self, frame_index: int) -> int | None:
        with self.lock:
            hits = torch.nonzero(self.frame_index[: self.n] == frame_index)
            return int(hits[0, 0]) if hits.numel() else None

    # ------------------------------------------------------------------ update
    def append(self, frame: FrameData, timestamp: float, pose: torch.Tensor, disp: torch.Tensor | float) -> int:
        """Add a keyframe; returns its slot."""
        with self.lock:
            k = self.n
            if k >= self.capacity:
                raise InputError(f"more than {self.capacity} keyframes: raise `store.capacity` "
                                 "or the motion filter threshold (`frontend.filter_thresh`)")
            self.frame_index[k] = frame.index
            self.timestamps[k] = timestamp
            self.images[k] = torch.from_numpy(np.ascontiguousarray(frame.image))
            self.poses[k] = pose.to(self.device, self.dtype)
            self.disps[k] = disp if not torch.is_tensor(disp) else disp.to(self.device, self.dtype)
            self.confidence[k] = 0.0
            # a new keyframe starts from its predecessor's motion map (objects move little between keyframes)
            self.motion[k] = self.motion[k - 1] if k > 0 else 0.0
            self.frames[k] = frame
            self.n += 1
            self.version += 1
            self.changed.add(k)
            return k

    def write(self, slots: torch.Tensor, poses: torch.Tensor | None = None, disps: torch.Tensor | None = None,
              confidence: torch.Tensor | None = None, motion: torch.Tensor | None = None,
              prior: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Write optimised values into ``slots`` (a (m,) long tensor)."""
        with self.lock:
            if poses is not None:
                self.poses[slots] = poses.to(self.device, self.dtype)
            if disps is not None:
                self.disps[slots] = disps.to(self.device, self.dtype)
            if confidence is not None:
                self.confidence[slots] = confidence.to(self.device, self.dtype)
            if motion is not None:
                self.motion[slots] = motion.to(self.device, self.dtype)
            if prior is not None:
                self.enable_prior()
                self.prior_disp[slots] = prior[0].to(self.device, self.dtype)
                self.prior_conf[slots] = prior[1].to(self.device, self.dtype)
            self.version += 1
            self.changed.update(int(s) for s in slots)

    def remove(self, k: int) -> None:
        """Remove keyframe slot ``k``, shifting later slots down by one."""
        with self.lock:
            n = self.n
            if not 0 <= k < n:
                raise IndexError(k)
            self.removed_frames.append(int(self.frame_index[k]))
            for t in (self.frame_index, self.timestamps, self.images, self.poses, self.disps, self.confidence,
                      self.motion, self.prior_disp, self.prior_conf):
                if t is not None:
                    t[k:n - 1] = t[k + 1:n].clone()
            self.frames[k:n - 1] = self.frames[k + 1:n]
            self.frames[n - 1] = None
            self.frame_index[n - 1] = -1
            self.n -= 1
            self.version += 1
            self.changed = {s if s < k else s - 1 for s in self.changed if s != k} | set(range(k, self.n))

    def record_track(self, frame_index: int, record: TrackRecord) -> None:
        """Keep the correspondences of a tracked non-keyframe (for the trajectory filler)."""
        with self.lock:
            self.tracks[int(frame_index)] = record

    def take_changes(self) -> set[int]:
        """Slots changed since the last call (for incremental viewers)."""
        with self.lock:
            out, self.changed = self.changed, set()
            return out
