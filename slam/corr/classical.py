"""Classical dense correspondences: OpenCV's DIS optical flow with a
forward-backward consistency check turned into confidence.

For an edge ``(i, j)`` the flow i->j is computed at processing resolution,
initialised from the current reprojection (so that long-baseline edges start
near the answer), and checked against the flow j->i:

    e(x) = | f_ij(x) + f_ji(x + f_ij(x)) |          (pixels)
    confidence(x) = exp(-(e / sigma)^2) if x + f_ij(x) is inside frame j, else 0

Both are averaged over ``stride x stride`` blocks to feature resolution.
Results are cached per ordered frame pair (they do not depend on the
estimate once computed), so one update per edge suffices.  The raw flows
are kept a little longer (a small LRU) so that the reverse edge ``(j, i)``,
which the frame graph always adds next, reuses both DIS fields instead of
computing them again, and so that the motion filter's flow from the last
keyframe to a frame is reused when that frame's edges are built.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

import cv2
import numpy as np
import torch

from slam.corr.base import CorrespondenceSource, EdgeUpdate, FrameData, flow_to_feature, identity_coords
from slam.corr.dis import PRESETS, DISFlow

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass
class ClassicalOptions:
    """Tunables (mirrored in ``configs/correspondence/classical.yaml``)."""

    preset: str = "medium"        #: DIS preset: ultrafast | fast | medium
    fb_sigma: float = 1.0         #: forward-backward error (image px) at which confidence is exp(-1)
    min_confidence: float = 0.05  #: weights below this are set to 0
    init_from_coords: bool = True #: initialise DIS with the reprojection of the current estimate (or, where
                                  #: it gives no motion, with kept flows chained through a frame in between)
    cache_size: int = 4096        #: ordered frame pairs kept in the cache (feature resolution)
    epipolar_px: float = 1.0      #: RANSAC fundamental-matrix threshold (feature px); outliers get weight 0 (0: off)
    filter_min_gradient: float = 4.0  #: grey-level gradient (Sobel) of the pixels the motion filter averages
    flow_cache: int = 64          #: raw image-resolution flow fields kept for reuse by reverse edges
    stride: int = 8               #: processing / feature resolution
    refine_window: int = 9        #: Lucas-Kanade window (image px) of :meth:`ClassicalFlow.refine`
    refine_levels: int = 2        #: pyramid levels above the processing resolution searched by the refinement
    refine_fb_sigma: float = 0.5  #: refinement forward-backward error (image px) at which the weight is exp(-1)
    refine_iters: int = 10        #: Lucas-Kanade iterations per pyramid level (at most)
    refine_eps: float = 0.03      #: ... or until the update is below this (image px)
    records: str = "filter"        #: a tracked frame's correspondences: dis (checked DIS pair) | filter (motion filter's flow)
    workers: int = 2              #: threads measuring independent frame pairs at once (DIS, Lucas-Kanade); 1: the caller's


class ClassicalFlow(CorrespondenceSource):
    """DIS optical flow + forward-backward confidence (see module docstring)."""

    name = "classical"
    iterative = False
    refines = True

    def __init__(self, options: ClassicalOptions | None = None) -> None:
        self.opt = options or ClassicalOptions()
        if self.opt.preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {self.opt.preset!r}; expected one of {sorted(PRESETS)}")
        if self.opt.records not in ("dis", "filter"):
            raise ValueError(f"unknown records {self.opt.records!r}; expected dis or filter")
        if int(self.opt.workers) < 1:
            raise ValueError(f"workers must be at least 1, got {self.opt.workers}")
        self.stride = self.opt.stride
        self._dis = DISFlow(self.opt.preset)
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()  # the DIS object and the cache are shared by the threads
        # motion filter: (keyframe index, composed flow keyframe -> last frame, last frame's grey image, its index)
        self._track: tuple[int, np.ndarray, np.ndarray, int] | None = None
        self._textured: tuple[int, np.ndarray] | None = None  # (keyframe index, its textured-pixel mask)
        self._inits: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # composed flows, DIS inits
        self._flows: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # raw flows a -> b
        self._pool: ThreadPoolExecutor | None = None  # the workers (created on first use)
        # the motion filter's consecutive flows started ahead by the reader thread (:meth:`ahead`):
        # (previous frame index, frame index) -> future flow, and the last frame seen there
        self._ahead: dict[tuple[int, int], Future] = {}
        self._ahead_last: FrameData | None = None
        self._ahead_lock = threading.Lock()
        self._worker_dis: list[DISFlow] = []  # one DIS object per worker thread
        self._local = threading.local()

    def mean_flow(self, a: FrameData, b: FrameData) -> float:
        """Mean forward flow a->b (feature px) for the motion filter.

        Consecutive calls with the same keyframe ``a`` chain: the flow from
        the previous frame to ``b`` (a small motion, which DIS gets right) is
        composed with the flow a -> previous frame.  DIS from a zero start
        fails beyond ~20 px on 320x240 images; the composed flow stays within
        about a pixel and initialises the refined DIS flow a -> b whenever
        that pair's correspondences are asked for (a new keyframe's edge, or
        the frame's record for the trajectory filler).
        """
        with self._lock:
            tr = self._track
            if tr is not None and tr[0] == a.index:
                step = self._consecutive(tr[3], tr[2], b)
                flow = compose_flows(tr[1], step)
            else:
                flow = self._consecutive(a.index, a.features, b)
            self._track = (a.index, flow, b.features, b.index)
            self._inits[(a.index, b.index)] = flow
            while len(self._inits) > self.opt.flow_cache:
                self._inits.popitem(last=False)
            if self._textured is None or self._textured[0] != a.index:
                self._textured = (a.index, textured_mask(a.features, self.opt.filter_min_gradient))
            mask = self._textured[1]
        mag = np.linalg.norm(flow, axis=-1)
        # untextured pixels (sky, blank walls) get ~zero flow from DIS whatever the motion
        return float(mag[mask].mean() if mask.mean() > 0.05 else mag.mean()) / self.stride

    def prepare(self, index: int, image: np.ndarray) -> FrameData:
        return FrameData(index=index, image=image, features=cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))

    def ahead(self, index: int, image: np.ndarray) -> FrameData:
        """Prepare a frame of the tracking stream and, with ``workers`` >= 2, start the DIS flow from
        the frame before it on the workers: the motion filter (:meth:`mean_flow`) measures every frame
        from the frame before (or from the keyframe, when that is the frame before), so that flow is
        ready, computed while the frontend adjusts, when the frame's turn comes."""
        fd = self.prepare(index, image)
        if self.opt.workers >= 2:
            with self._ahead_lock:
                prev, self._ahead_last = self._ahead_last, fd
                if prev is not None:
                    self._ahead[(prev.index, index)] = self._workers().submit(
                        self._worker_flow, prev.features, fd.features, None)
        return fd

    def _consecutive(self, a_index: int, a: np.ndarray, b: FrameData) -> np.ndarray:
        """DIS flow from zero, grey image ``a`` (input frame ``a_index``) -> frame b: the one started
        by :meth:`ahead` when there is one (the same inputs, so the same flow), else computed now."""
        with self._ahead_lock:
            fut = self._ahead.pop((a_index, b.index), None)
            for key in [k for k in self._ahead if k[1] <= b.index]:  # frames gone by (never asked for)
                del self._ahead[key]
        return fut.result() if fut is not None else self._flow(a, b.features, None)

    @property
    def dis_calls(self) -> int:
        """DIS evaluations so far (for benchmarks)."""
        return self._dis.calls + sum(d.calls for d in self._worker_dis)

    def _flow(self, a: np.ndarray, b: np.ndarray, init: np.ndarray | None) -> np.ndarray:
        return self._dis.calc(a, b, init)

    def _map(self, fn: Callable[[_T], _R], items: list[_T]) -> list[_R]:
        """``[fn(x) for x in items]``, on the workers when there are several items and workers.
        ``fn`` must not take :attr:`_lock` (the caller may hold it); :meth:`_worker_flow` gives
        each worker thread its own DIS object (a DIS result depends only on its inputs, so
        which worker computes it does not matter)."""
        if self.opt.workers < 2 or len(items) < 2:
            return [fn(x) for x in items]
        return list(self._workers().map(fn, items))

    def _workers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(int(self.opt.workers), thread_name_prefix="classical-flow")
        return self._pool

    def _worker_flow(self, a: np.ndarray, b: np.ndarray, init: np.ndarray | None) -> np.ndarray:
        """DIS flow a -> b on the calling worker thread's own DIS object."""
        dis = getattr(self._local, "dis", None)
        if dis is None:
            dis = self._local.dis = DISFlow(self.opt.preset)
            self._worker_dis.append(dis)
        return dis.calc(a, b, init)

    def close(self) -> None:
        """Stop the worker threads (a later call starts them again)."""
        with self._ahead_lock:
            self._ahead.clear()
            self._ahead_last = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _chained(self, a: int, b: int) -> np.ndarray | None:
        """Flow a -> b composed through a frame m whose raw flows a -> m and m -> b are kept,
        or None: a DIS start over a long pair that does not depend on the estimate.  Of several
        such m, the one whose longer leg is the shortest (DIS is surest over small motions)."""
        best = None
        for (x, m), f_am in list(self._flows.items()):
            f_mb = self._flows.get((m, b))
            if x != a or m == b or f_mb is None:
                continue
            leg = max(float(np.abs(f_am).mean()), float(np.abs(f_mb).mean()))
            if best is None or leg < best[0]:
                best = (leg, f_am, f_mb)
        return None if best is None else compose_flows(best[1], best[2])

    def _keep_flow(self, key: tuple[int, int], flow: np.ndarray) -> None:
        self._flows[key] = flow
        self._flows.move_to_end(key)
        while len(self._flows) > self.opt.flow_cache:
            self._flows.popitem(last=False)

    def pair(self, a: FrameData, b: FrameData, init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Flow a->b in image pixels (H, W, 2) and its confidence (H, W).

        Raw flows a->b and b->a already computed (by the reverse edge or the
        motion filter) are reused; new ones are kept for the reverse edge.
        Call with :attr:`_lock` held.
        """
        plan = self._plan_pair(a, b, init)
        self._run_jobs([plan])
        return self._pair_result(plan)

    def _plan_pair(self, a: FrameData, b: FrameData, init: np.ndarray | None) -> tuple[object, object]:
        """The DIS work that :meth:`pair` (a, b) needs, as the flows a->b and b->a: kept arrays, or
        :class:`_FlowJob` placeholders, kept at once (so a later pair of the same batch reuses them, and
        the kept flows' order and evictions are those of measuring the pairs one after the other)."""
        fwd = self._flows.get((a.index, b.index))
        if fwd is None:
            fwd = _FlowJob(a.features, b.features, self._inits.get((a.index, b.index), init))
            self._keep_flow((a.index, b.index), fwd)
        bwd = self._flows.get((b.index, a.index))
        if bwd is None:  # started from the forward flow, reversed
            bwd = _FlowJob(b.features, a.features, None, reverse_of=fwd)
            self._keep_flow((b.index, a.index), bwd)
        return fwd, bwd

    def _run_jobs(self, plans: list[tuple[object, object]]) -> None:
        """Compute the :class:`_FlowJob` placeholders of ``plans`` (a reversed job right after the
        job it reverses, in the same task; independent tasks on the workers) and put the results
        in their places among the kept flows."""
        tasks: list[list[_FlowJob]] = []
        task_of: dict[int, list[_FlowJob]] = {}  # id(job) -> its task
        for plan in plans:
            for j in plan:
                if not isinstance(j, _FlowJob) or j.result is not None or id(j) in task_of:
                    continue
                # a reversed flow runs after the flow it reverses, in its task
                task = task_of.get(id(j.reverse_of))
                if task is None:
                    task = []
                    tasks.append(task)
                task.append(j)
                task_of[id(j)] = task
        if not tasks:
            return
        flow = self._flow if self.opt.workers < 2 or len(tasks) < 2 else self._worker_flow
        self._map(lambda task: [j.run(flow) for j in task], tasks)
        for key, val in list(self._flows.items()):
            if isinstance(val, _FlowJob):
                self._flows[key] = val.result  # in place: the order of the kept flows is unchanged

    def _pair_result(self, plan: tuple[object, object]) -> tuple[np.ndarray, np.ndarray]:
        """The forward flow of a :meth:`_plan_pair` whose jobs ran, and its forward-backward confidence."""
        fwd, bwd = (j.result if isinstance(j, _FlowJob) else j for j in plan)
        H, W = fwd.shape[:2]
        mx, my = _sample_maps(fwd)
        back = cv2.remap(bwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(1e4, 1e4))
        d = fwd + back
        err2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]  # squared forward-backward error
        inside = _inside(mx, my, W, H)
        conf = np.exp(err2 * (-1.0 / self.opt.fb_sigma ** 2)) * inside
        return fwd, conf.astype(np.float32)

    def update(self, frames_i: list[FrameData], frames_j: list[FrameData], coords: torch.Tensor,
               state=None) -> EdgeUpdate:
        """Correspondences of the edges ``(frames_i[e], frames_j[e])`` (see the module docstring).

        Edges not measured before are measured in order, with the DIS work of independent pairs
        on the workers (``workers``): the result is that of measuring them one by one.  An edge
        whose estimate gives no motion starts from kept flows chained through a frame in between
        (:meth:`_chained`): it waits for the edges before it."""
        s = self.stride
        keys = [(a.index, b.index) for a, b in zip(frames_i, frames_j)]
        with self._lock:
            hits: list = [self._cache.get(k) for k in keys]
        starts: dict[int, tuple[np.ndarray | None, bool]] = {}  # edge -> (DIS start, no motion)
        for e, (a, b) in enumerate(zip(frames_i, frames_j)):
            if hits[e] is not None:
                continue
            init, no_motion = None, False
            if self.opt.init_from_coords and coords is not None:
                c = coords[e].detach().cpu()
                # e.g. the initial identity poses: the reprojection is the pixel grid itself
                no_motion = float((c - identity_coords(1, *c.shape[:2], c.dtype)[0]).abs().max()) <= 1e-4
                if not no_motion:
                    init = _upsample_flow(c.numpy(), a.image.shape[:2], s)
            starts[e] = (init, no_motion)
        with self._lock:
            batch: list[tuple[int, tuple[object, object]]] = []  # edges planned, not yet finished
            measured: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

            def finish() -> None:
                self._run_jobs([plan for _, plan in batch])
                for e, plan in batch:
                    measured[keys[e]] = self._store_edge(keys[e], *self._pair_result(plan))
                batch.clear()

            for e, (init, no_motion) in starts.items():
                a, b = frames_i[e], frames_j[e]
                if keys[e] in measured or any(keys[k] == keys[e] for k, _ in batch):  # a pair repeated in this call
                    continue
                if no_motion:  # the estimate says nothing of the motion: chain the flows kept so far
                    finish()
                    init = self._chained(a.index, b.index)
                batch.append((e, self._plan_pair(a, b, init)))
                if no_motion:
                    finish()
            finish()
            hits = [measured[k] if h is None else h for k, h in zip(keys, hits)]
        target = torch.from_numpy(np.stack([h[0] for h in hits]))
        weight = torch.from_numpy(np.stack([h[1] for h in hits]))[..., None].expand(-1, -1, -1, 2).contiguous()
        dev = coords.device if coords is not None else "cpu"
        return EdgeUpdate(target=target.to(dev), weight=weight.to(dev))

    def _store_edge(self, key: tuple[int, int], fwd: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature-resolution target and weight of a measured pair, into the cache (lock held) and returned."""
        tgt, wt = flow_to_feature(fwd, conf, self.stride)
        wt = np.where(wt < self.opt.min_confidence, 0.0, wt).astype(np.float32)
        if self.opt.epipolar_px > 0:
            wt = wt * epipolar_inliers(tgt, wt, self.opt.epipolar_px, self.opt.min_confidence)
        self._cache[key] = (tgt, wt)
        if len(self._cache) > self.opt.cache_size:
            self._cache.popitem(last=False)
        return tgt, wt

    def frame_edge(self, keyframe: FrameData, frame: FrameData, accurate: bool = False) -> EdgeUpdate:
        """Correspondences keyframe -> tracked frame (one edge), right after :meth:`mean_flow`.

        ``records=dis`` or ``accurate``: the forward-backward-checked DIS pair
        (two more DIS evaluations, initialised from the motion filter's flow).
        ``records=filter``: the motion filter's composed flow itself, weight 1
        on the keyframe's textured pixels that stay inside the frame (the share
        of such pixels per feature pixel; no forward-backward check): no extra
        DIS work, for use with the trajectory filler's re-measurement
        (``filler.remeasure``), which replaces these correspondences by
        Lucas-Kanade tracks started from the pose they give.
        """
        if self.opt.records == "filter" and not accurate:
            with self._lock:
                flow = self._inits.get((keyframe.index, frame.index))
                tex = self._textured[1] if self._textured and self._textured[0] == keyframe.index else None
            if flow is not None and tex is not None:
                H, W = flow.shape[:2]
                mx, my = _sample_maps(flow)
                valid = tex & _inside(mx, my, W, H)
                tgt, share = flow_to_feature(flow, valid, self.stride)
                wt = np.where(share < self.opt.min_confidence, 0.0, share).astype(np.float32)
                weight = torch.from_numpy(wt)[None, ..., None].expand(-1, -1, -1, 2).contiguous()
                return EdgeUpdate(target=torch.from_numpy(tgt)[None], weight=weight, checked=False)
        return super().frame_edge(keyframe, frame, accurate)

    def refine(self, frames_i: list[FrameData], frames_j: list[FrameData], coords: torch.Tensor) -> EdgeUpdate:
        """Re-measure the edges' correspondences near the current reprojection (final refinement).

        DIS flow computed once per pair keeps its gross errors (aliasing along
        epipolar lines that the forward-backward check cannot see).  Once BA has
        converged, the reprojection ``coords`` is within a pixel or two of the
        truth almost everywhere; pyramidal Lucas-Kanade started there tracks
        each feature pixel's centre (image coordinate ``s u + (s - 1) / 2``)
        to the *nearest* intensity match, a measurement that no longer depends
        on DIS's coarse-to-fine search.  The weight is the forward-backward
        consistency of the two LK tracks (``refine_fb_sigma``), 0 where either
        track fails or leaves the image, times the epipolar RANSAC check.

        Args:
            frames_i, frames_j: the E edges' endpoint frames (grey ``features``).
            coords: (E, h, w, 2) current reprojected coordinates (feature px).
        Returns:
            targets and weights (E, h, w, 2), on ``coords``' device.
        """
        s = self.stride
        E, h, w = coords.shape[:3]
        v, u = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        c = (s - 1) / 2.0
        p0 = (np.stack([u, v], -1).reshape(-1, 1, 2) * s + c).astype(np.float32)
        init = coords.detach().cpu().numpy().reshape(E, -1, 1, 2) * s + c
        win = (self.opt.refine_window, self.opt.refine_window)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.opt.refine_iters, self.opt.refine_eps)
        flags = cv2.OPTFLOW_USE_INITIAL_FLOW

        def track(e: int) -> tuple[np.ndarray, np.ndarray]:
            a, b = frames_i[e], frames_j[e]
            H, W = a.features.shape[:2]
            p1 = np.array(init[e], dtype=np.float32)  # a copy: OpenCV writes into the initial points
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(a.features, b.features, p0, p1, winSize=win,
                                                  maxLevel=self.opt.refine_levels, criteria=crit, flags=flags)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(b.features, a.features, p1, p0.copy(), winSize=win,
                                                    maxLevel=self.opt.refine_levels, criteria=crit, flags=flags)
            fb = np.linalg.norm(back - p0, axis=-1).reshape(h, w)
            q = p1.reshape(h, w, 2)
            ok = (st1.reshape(h, w) > 0) & (st2.reshape(h, w) > 0) & _inside(q[..., 0], q[..., 1], W, H)
            ok &= np.isfinite(fb)
            wt = np.where(ok, np.exp(-(np.nan_to_num(fb, nan=1e3) / self.opt.refine_fb_sigma) ** 2), 0.0)
            wt = np.where(wt < self.opt.min_confidence, 0.0, wt).astype(np.float32)
            tgt = ((q - c) / s).astype(np.float32)
            tgt = np.where(ok[..., None], tgt, np.stack([u, v], -1))
            if self.opt.epipolar_px > 0:
                wt = wt * epipolar_inliers(tgt, wt, self.opt.epipolar_px, self.opt.min_confidence)
            return tgt, wt

        # each edge on its own: on the workers, in any order, with the same result
        targets, weights = zip(*self._map(track, list(range(E)))) if E else ((), ())
        target = torch.from_numpy(np.stack(targets)).to(coords.device)
        weight = torch.from_numpy(np.stack(weights))[..., None].expand(-1, -1, -1, 2).contiguous().to(coords.device)
        return EdgeUpdate(target=target, weight=weight)

    def forget(self, index: int) -> None:
        """Drop cached pairs involving an input frame (e.g. a removed keyframe)."""
        with self._lock:
            for cache in (self._cache, self._flows, self._inits):
                for key in [k for k in cache if index in k]:
                    del cache[key]


class _FlowJob:
    """A DIS flow to compute: a -> b from ``init`` (None: from zero), or, with ``reverse_of``, from
    that flow reversed (the backward flow of a forward-backward check)."""

    def __init__(self, a: np.ndarray, b: np.ndarray, init: np.ndarray | None, reverse_of: object = None) -> None:
        self.a, self.b, self.init, self.reverse_of = a, b, init, reverse_of
        self.result: np.ndarray | None = None

    def run(self, flow: Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]) -> None:
        init = self.init
        if self.reverse_of is not None:
            fwd = self.reverse_of.result if isinstance(self.reverse_of, _FlowJob) else self.reverse_of
            init = -cv2.remap(fwd, *_sample_maps(fwd), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self.result = flow(self.a, self.b, init)


def epipolar_inliers(target: np.ndarray, weight: np.ndarray, thresh: float, min_weight: float) -> np.ndarray:
    """(h, w) float mask of the correspondences consistent with one fundamental matrix.

    A RANSAC fit over the confident feature-resolution correspondences
    (target: (h, w, 2), weight: (h, w)); flow that is consistent forward and
    backward but wrong (aliasing on repetitive texture) mostly violates the
    epipolar constraint.  Returns all ones when the fit is impossible
    (too few points) so that it never removes everything.
    """
    h, w = target.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    sel = weight > min_weight
    ones = np.ones((h, w), np.float32)
    if int(sel.sum()) < 16:
        return ones
    p0 = np.stack([u[sel], v[sel]], -1)
    p1 = target[sel].astype(np.float32)
    cv2.setRNGSeed(0)
    F, mask = cv2.findFundamentalMat(p0, p1, cv2.FM_RANSAC, thresh, 0.999)
    if F is None or F.shape != (3, 3) or mask is None:
        return ones
    out = ones.copy()
    out[sel] = mask.ravel().astype(np.float32)
    return out


def textured_mask(grey: np.ndarray, min_gradient: float) -> np.ndarray:
    """(H, W) bool: pixels whose smoothed Sobel gradient magnitude reaches ``min_gradient``."""
    g = cv2.GaussianBlur(grey, (5, 5), 1.0).astype(np.float32)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
    return mag >= min_gradient


def compose_flows(f_ab: np.ndarray, f_bc: np.ndarray) -> np.ndarray:
    """Flow a->c (H, W, 2) from a->b and b->c: ``f_ab(x) + f_bc(x + f_ab(x))`` (bilinear, edges replicated)."""
    return f_ab + cv2.remap(f_bc, *_sample_maps(f_ab), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _inside(x: np.ndarray, y: np.ndarray, W: int, H: int) -> np.ndarray:
    """Whether image coordinates (pixel centres at integers) fall inside a W x H image."""
    return (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)


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
