"""Learned correspondences: the recurrent update operator of :mod:`slam.net`.

Per frame, :meth:`LearnedFlow.prepare` encodes the image once (correlation
features, GRU hidden-state initialisation and context input at 1/8
resolution) and keeps the maps in :class:`FrameData.features`.  Per edge,
:meth:`LearnedFlow.update` looks the correlation pyramid up at the current
reprojected coordinates, runs one ConvGRU step from the edge's hidden state
and returns the revised targets, the confidence weights, the motion
probability and the new hidden state; the frontend and backend alternate it
with bundle adjustment (``iterative = True``).

Without geometry (the motion filter, a non-keyframe's record for the
trajectory filler) the operator runs as plain optical flow: the next
iteration looks up at the last targets.

Grad mode is off (``torch.no_grad``) in every call; the threads share
one model, which is read-only here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slam.corr.base import CorrespondenceSource, EdgeUpdate, FrameData, identity_coords
from slam.data.sequence import InputError


@dataclass
class LearnedOptions:
    """Tunables (mirrored, with comments, in ``configs/correspondence/learned.yaml``)."""

    weights: str = "weights/corrnet_small.pt"  #: checkpoint; relative paths resolve against the repo / package
    device: str = "cpu"           #: torch device of the network
    threads: int = 0              #: torch intra-op threads while tracking, set by the runner (slam.system.runner.run_threads; 0: the caller's)
    filter_iters: int = 2         #: flow-mode iterations of the motion filter
    track_iters: int = 4          #: further flow-mode iterations of a non-keyframe's record (filler)
    rounds: int = 3               #: update -> BA rounds per BA call of the frontend and backend
    on_demand: bool = False       #: on-demand correlation instead of all-pairs volumes
    max_elements: int = 50_000_000  #: on-demand chunk size (float elements)
    chunk_edges: int = 32         #: edges updated together (bounds the all-pairs volumes held at once; 0: all)
    stride: int = 8               #: processing / feature resolution (fixed by the network)


def resolve_weights(path: str) -> Path:
    """A checkpoint path: as given, else relative to the repository / installed package root."""
    p = Path(path).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    root = Path(__file__).resolve().parents[2]
    return root / p if (root / p).is_file() else p


class LearnedFlow(CorrespondenceSource):
    """The learned update operator behind the correspondence interface (see module docstring)."""

    name = "learned"
    iterative = True

    def __init__(self, options: LearnedOptions | None = None) -> None:
        from slam.net.checkpoint import load_checkpoint

        self.opt = o = options or LearnedOptions()
        self.stride = o.stride
        self.rounds = o.rounds
        path = resolve_weights(o.weights)
        if not path.is_file():
            raise InputError(f"correspondence=learned: weights {o.weights} not found "
                             "(train them with `slam train`, or pass correspondence.weights=FILE)")
        self.device = torch.device(o.device)
        self.model, self.provenance = load_checkpoint(path, map_location=self.device)
        self.weights_path = path
        self._lock = threading.Lock()
        self._track: tuple[int, int, torch.Tensor, torch.Tensor, Any] | None = None  # (a, b, target, state, corr)

    # ------------------------------------------------------------ per frame
    def prepare(self, index: int, image: np.ndarray) -> FrameData:
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            fmap, net, inp = self.model.encode(x)
        return FrameData(index=index, image=image, features={"fmap": fmap[0], "net": net[0], "inp": inp[0]})

    # ------------------------------------------------------------- per edge
    def _corr(self, frames_i: list[FrameData], frames_j: list[FrameData]):
        E = len(frames_i)
        fmaps = torch.stack([f.features["fmap"] for f in frames_i] + [f.features["fmap"] for f in frames_j])
        ii, jj = torch.arange(E, device=self.device), torch.arange(E, 2 * E, device=self.device)
        kw = {"max_elements": self.opt.max_elements} if self.opt.on_demand else {}
        return self.model.correlation(fmaps, ii, jj, on_demand=self.opt.on_demand, **kw)

    def update(self, frames_i: list[FrameData], frames_j: list[FrameData], coords: torch.Tensor,
               state: Any = None) -> EdgeUpdate:
        """One update step for E edges from ``coords`` (E, h, w, 2); ``state`` (E, hidden, h, w) or None.

        The edges are updated ``chunk_edges`` at a time, so that the all-pairs
        volumes held at once (about 7.7 MB an edge at 320x240) stay bounded
        however many edges a global BA has."""
        E, c = len(frames_i), self.opt.chunk_edges
        if c <= 0 or E <= c:
            return self._update(frames_i, frames_j, coords, state)
        parts = [self._update(frames_i[k:k + c], frames_j[k:k + c], coords[k:k + c],
                              None if state is None else state[k:k + c]) for k in range(0, E, c)]
        return EdgeUpdate(target=torch.cat([p.target for p in parts]), weight=torch.cat([p.weight for p in parts]),
                          motion=torch.cat([p.motion for p in parts]), state=torch.cat([p.state for p in parts]))

    def _update(self, frames_i: list[FrameData], frames_j: list[FrameData], coords: torch.Tensor,
                state: Any = None) -> EdgeUpdate:
        """:meth:`update` for one chunk of edges."""
        with torch.no_grad():
            corr = self._corr(frames_i, frames_j)
            coords = coords.to(self.device, torch.float32)
            net = state if state is not None else torch.stack([f.features["net"] for f in frames_i])
            inp = torch.stack([f.features["inp"] for f in frames_i])
            out = self.model.step(net.to(self.device), inp, corr, coords)
            return EdgeUpdate(target=out.target, weight=out.weight,
                              motion=torch.sigmoid(out.motion_logit), state=out.net)

    def flow(self, a: FrameData, b: FrameData, iters: int, init: torch.Tensor | None = None,
             state: torch.Tensor | None = None, corr=None) -> tuple[EdgeUpdate, Any]:
        """Flow-mode iterations a -> b (no geometry): each step looks up at the last target.

        ``init``/``state``/``corr`` continue an earlier call on the same pair.
        Returns the update and the pair's correlation block (for reuse)."""
        h, w = a.image.shape[0] // self.stride, a.image.shape[1] // self.stride
        coords = identity_coords(1, h, w).to(self.device) if init is None else init
        with torch.no_grad():
            corr = corr if corr is not None else self._corr([a], [b])
            net = a.features["net"][None] if state is None else state
            inp = a.features["inp"][None]
            out = None
            for _ in range(max(1, iters)):
                out = self.model.step(net, inp, corr, coords)
                net, coords = out.net, out.target
            upd = EdgeUpdate(target=out.target, weight=out.weight, motion=torch.sigmoid(out.motion_logit),
                             state=out.net)
        return upd, corr

    def mean_flow(self, a: FrameData, b: FrameData) -> float:
        """Mean flow a -> b (feature px) after ``filter_iters`` flow-mode steps; the
        last frame's targets start the next call with the same keyframe."""
        with self._lock:
            tr = self._track
            init = tr[2] if tr is not None and tr[0] == a.index else None
            upd, corr = self.flow(a, b, self.opt.filter_iters, init)
            self._track = (a.index, b.index, upd.target, upd.state, corr)
        h, w = upd.target.shape[1:3]
        grid = identity_coords(1, h, w).to(upd.target.device)
        return float((upd.target - grid).norm(dim=-1).mean())

    def frame_edge(self, keyframe: FrameData, frame: FrameData, accurate: bool = False) -> EdgeUpdate:
        """The record of a non-keyframe: the motion filter's iterations on this pair,
        continued (same targets, hidden state and correlation volume) for ``track_iters``
        more steps."""
        with self._lock:
            tr = self._track
        if tr is not None and tr[:2] == (keyframe.index, frame.index):
            return self.flow(keyframe, frame, self.opt.track_iters, tr[2], tr[3], tr[4])[0]
        return self.flow(keyframe, frame, self.opt.track_iters)[0]
