"""The backend: global bundle adjustment over all keyframes with distance-based
edges, periodically while tracking and once more at the end.

The periodic global BA runs either in the frontend's thread after every
``every`` new keyframes (``inline``, the default: the frontend and backend
share one BA lock anyway, so on a CPU this is as fast, and the order of all
BAs, hence the result, no longer depends on thread timing) or in its own
thread (:class:`Backend` started as a thread), which lets tracking overlap
with it where there is hardware to spare (a GPU).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from slam.ba.dense_ba import LMOptions
from slam.corr.base import CorrespondenceSource
from slam.system.graph import FrameGraph
from slam.system.depth_prior import PriorTerm
from slam.system.motion import MotionOptions
from slam.system.optimize import solve_graph
from slam.system.store import KeyframeStore


@dataclass
class BackendOptions:
    """Tunables (mirrored, with comments, in ``configs/run.yaml`` under ``backend``)."""

    enabled: bool = True            # run global BA while tracking
    every: int = 10                 # new keyframes between two global BAs
    iters: int = 4                  # LM iterations of a global BA while tracking
    final_iters: int = 12           # LM iterations of the final refinement
    radius: int = 3                 # temporal edges
    proximity_thresh: float = 12.0  # frame distance (feature px) of proximity edges
    proximity_nms: int = 2          # non-maximum suppression radius (slots)
    proximity_max: int = 400        # proximity edges in total (each in both directions)
    optimize_focal: bool = True     # estimate the focal length when it is unknown
    inline: bool = True             # periodic global BA in the frontend's thread, fixed order (False: own thread)
    refine_rounds: int = 1          # final refinement: re-measure the edges at the converged reprojection, BA again
    refine_iters: int = 6           # LM iterations of the BA after each re-measurement


def global_ba(store: KeyframeStore, source: CorrespondenceSource, opt: BackendOptions, lm: LMOptions,
              iters: int, motion: MotionOptions | None = None, prior: PriorTerm | None = None,
              remeasure: int = 0, remeasure_iters: int | None = None) -> None:
    """One global BA over all keyframes (slot 0 fixed).

    ``remeasure`` rounds follow it (the final refinement, ``opt.refine_rounds``):
    each replaces the edges' correspondences with the source's ``refine``
    measurement at the converged reprojection (:meth:`FrameGraph.remeasure`;
    sources without one are left as they are) and runs the BA again for
    ``remeasure_iters`` iterations (default ``iters``).
    """
    n = store.n
    if n < 3:
        return
    graph = FrameGraph(store, source)
    graph.add(*FrameGraph.temporal_pairs(0, n, opt.radius))
    pi, pj = graph.proximity_pairs(torch.arange(n), n, opt.proximity_thresh, opt.proximity_nms,
                                   opt.proximity_max, opt.radius)
    keep = pi > pj  # proximity_pairs from every slot lists each pair twice: keep one orientation set
    graph.add(torch.cat([pi[keep], pj[keep]]), torch.cat([pj[keep], pi[keep]]))
    for r in range(1 + max(0, remeasure)):
        if r > 0 and not graph.remeasure():
            break
        n_it = iters if r == 0 or remeasure_iters is None else remeasure_iters
        solve_graph(store, graph, None, fixed_below=1, options=LMOptions(**{**vars(lm), "iters": n_it}),
                    optimize_focal=opt.optimize_focal and not store.focal_known,
                    motion=motion, prior=prior)


class Backend(threading.Thread):
    """Runs :func:`global_ba` whenever the frontend has added ``every`` keyframes."""

    def __init__(self, store: KeyframeStore, source: CorrespondenceSource, frontend, opt: BackendOptions,
                 lm: LMOptions, ba_lock: threading.Lock, motion: MotionOptions | None = None,
                 prior: PriorTerm | None = None) -> None:
        super().__init__(name="slam-backend", daemon=True)
        self.store, self.source, self.frontend, self.opt, self.lm = store, source, frontend, opt, lm
        self.ba_lock = ba_lock
        self.motion = motion
        self.prior = prior
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.runs = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.wake.wait(timeout=0.2)
                self.wake.clear()
                if self.stop_event.is_set():
                    break
                self.step()
        except BaseException as e:  # surfaced by the runner
            self.error = e

    def step(self) -> bool:
        """One global BA if the frontend has added ``every`` keyframes since the last; returns
        whether it ran.  Called by :meth:`run` (own thread) or, with ``inline``, by the
        frontend's thread after each keyframe, which makes the order of all BAs deterministic."""
        if not (self.frontend.initialized and self.frontend.new_keyframes >= self.opt.every):
            return False
        with self.ba_lock:
            self.frontend.new_keyframes = 0
            global_ba(self.store, self.source, self.opt, self.lm, self.opt.iters, self.motion, self.prior)
        self.runs += 1
        return True

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
