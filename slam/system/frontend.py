"""The frontend: motion filter, initialisation, frame graph growth, local BA and
removal of redundant keyframes.  It runs in its own thread (see
:mod:`slam.system.runner`), consuming frames in order.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pypose as pp
import torch

from slam.ba.dense_ba import BAResult, LMOptions
from slam.corr.base import CorrespondenceSource, EdgeUpdate, FrameData
from slam.geometry.twoview import rotation_parallax
from slam.system.graph import FrameGraph, frame_distance
from slam.system.depth_prior import PriorTerm
from slam.system.motion import MotionOptions
from slam.system.optimize import edges_cost, solve_graph
from slam.corr.base import compose_targets
from slam.system.store import KeyframeStore, TrackRecord


@dataclass
class FrontendOptions:
    """Tunables (mirrored, with comments, in ``configs/run.yaml`` under ``frontend``)."""

    filter_thresh: float = 1.5      # mean flow (feature px) from the last keyframe that makes a new keyframe
    filter_parallax: float = 0.35   # ... unless the flow left after the best-fitting rotation is below this (0: off)
    filter_max_flow: float = 6.0    # ... or the mean flow reaches this (feature px; keeps the overlap of a rotating camera)
    init_frames: int = 8            # keyframes collected before the first BA
    init_iters: int = 30            # LM iterations of the initialisation
    init_seed: int = 3              # keyframes adjusted jointly from identity at the start of the initialisation
    radius: int = 3                 # temporal edges to keyframes at most this many slots away
    window: int = 10                # local BA over the newest `window` keyframes
    local_iters: int = 2            # LM iterations per new keyframe
    proximity_thresh: float = 10.0  # frame distance (feature px) below which proximity edges are added
    proximity_nms: int = 1          # non-maximum suppression radius (slots) of proximity edges
    proximity_max: int = 4          # proximity edges per new keyframe (each in both directions)
    keyframe_thresh: float = 1.25   # remove the second-newest keyframe when closer than this to its predecessor
    optimize_focal: bool = True     # estimate the focal in the initialisation when it is unknown
    init_two_view: bool = True      # start the seed from an essential-matrix two-view reconstruction
    init_min_parallax: float = 0.5  # median triangulation angle (deg) needed to trust the two-view start
    init_min_inliers: float = 0.5   # share of RANSAC inliers needed to trust the two-view start
    init_ransac_px: float = 0.3     # RANSAC threshold (feature px) of the essential matrix
    init_robust: bool = False       # the initialisation's BAs use the robust loss of ``lm`` (else least squares)
    init_graduated: tuple[float, ...] = (10.0, 3.0, 1.0)  # then the robust loss at these multiples of lm.robust_px
    init_graduated_iters: int = 20  # LM iterations of each graduated stage
    init_select: str = "robust"     # robust: grow the start whose seed BA leaves the lower cost under lm's robust
                                    # loss (no motion maps, no prior term) | seed: the lower cost of the seed BA itself
                                    # | final: grow both starts (identity, two-view), keep the lower final robust cost;
                                    # iterative sources and a single start: seed
    init_prior_parallax: float = 0.35  # with a depth prior: flow of the first two keyframes left after the best
                                       # rotation (feature px) below which each initial keyframe is tracked alone
    record_tracks: bool = True      # keep each non-keyframe's correspondences to its keyframe for the filler

    def __post_init__(self) -> None:
        self.init_graduated = tuple(float(m) for m in self.init_graduated)
        if any(not m > 0 for m in self.init_graduated):
            raise ValueError(f"frontend.init_graduated must hold positive multiples, got {list(self.init_graduated)}")
        if self.init_select not in ("robust", "seed", "final"):
            raise ValueError(f"frontend.init_select must be robust, seed or final, got {self.init_select!r}")


class Frontend:
    """Tracks frames into the store (see module docstring).

    Args:
        store, source: the keyframe store and correspondence source.
        options: :class:`FrontendOptions`; ``lm``: solver options of local BA.
        ba_lock: serialises bundle adjustment with the backend.
        motion: motion-map options (:mod:`slam.system.motion`; None: off).
        prior: monocular depth prior (:mod:`slam.system.depth_prior`; None: off):
            initial keyframe depths and a BA term.
    """

    def __init__(self, store: KeyframeStore, source: CorrespondenceSource, options: FrontendOptions,
                 lm: LMOptions, ba_lock: threading.Lock, motion: MotionOptions | None = None,
                 prior: PriorTerm | None = None) -> None:
        self.store, self.source, self.opt, self.lm = store, source, options, lm
        self.graph = FrameGraph(store, source)
        self.ba_lock = ba_lock
        self.motion = motion
        self.prior = prior
        self.initialized = False
        self.two_view_used = False  # whether the initialisation started from a two-view reconstruction
        self.init_costs: list[float] = []  # final BA cost of the initialisation grown from each start tried
        self.init_cost = float("nan")      # ... and of the one kept
        self.start_costs: list[float] = []  # robust cost after the seed's BA of each start (identity, two-view)
        self.frames_seen = 0
        self.new_keyframes = 0  # since the backend last ran (the backend resets it)

    # --------------------------------------------------------------- tracking
    def track(self, index: int, timestamp: float, image: np.ndarray, fd: FrameData | None = None) -> bool:
        """Process one frame (processing resolution RGB; ``fd``: already prepared by the source's
        :meth:`~slam.corr.base.CorrespondenceSource.ahead`); returns True if it became a keyframe."""
        self.frames_seen += 1
        fd = fd if fd is not None else self.source.prepare(index, image)
        s = self.store
        if s.n == 0:
            self._add_keyframe(fd, timestamp, pp.identity_SE3(1, dtype=s.dtype).tensor()[0], 1.0)
            return True
        last = s.frames[s.n - 1]
        flow = self.source.mean_flow(last, fd)
        upd = None
        if flow >= self.opt.filter_thresh and 0 < self.opt.filter_parallax and flow < self.opt.filter_max_flow:
            # a rotating camera moves the image without adding parallax: judge the flow a rotation leaves
            upd = self.source.frame_edge(last, fd, accurate=True)
            if self._rotation_parallax(upd) >= self.opt.filter_parallax:
                upd = None  # a keyframe: the frame graph asks for its edges itself
        if flow < self.opt.filter_thresh or upd is not None:
            if self.opt.record_tracks:
                upd = upd if upd is not None else self.source.frame_edge(last, fd)
                s.record_track(index, TrackRecord(last.index, upd.target[0].cpu(), upd.weight[0].cpu(),
                                                    upd.checked))
            return False
        with s.lock:
            n = s.n
            pose = s.poses[n - 1].clone()
            disp = s.disps[max(0, n - 4):n].mean(0)
        self._add_keyframe(fd, timestamp, pose, disp)
        self.new_keyframes += 1
        if not self.initialized:
            if s.n >= self.opt.init_frames:
                self.initialize()
        else:
            self.update_window()
        return True

    def _add_keyframe(self, fd, timestamp: float, pose: torch.Tensor, disp: torch.Tensor | float) -> None:
        """Append a keyframe starting at ``pose`` and inverse depth ``disp``, or, with a
        depth prior, at the prior scaled to ``disp``'s median (its raw map is kept)."""
        s = self.store
        if self.prior is None:
            s.append(fd, timestamp, pose, disp)
            return
        raw, conf = self.prior.features(fd.image, fd.index)
        k = s.append(fd, timestamp, pose, self.prior.initial_disp(raw, conf, disp))
        s.write(torch.tensor([k]), prior=(raw[None], conf[None]))

    def initialize(self) -> None:
        """First BA over the initial keyframes, grown one keyframe at a time.

        The first ``init_seed`` keyframes are adjusted jointly from identity
        poses and constant depth (their motion is small; their consecutive
        pairs are measured first, so that a longer pair's flow starts from
        theirs chained, see :meth:`slam.corr.classical.ClassicalFlow.update`); every further
        initial keyframe is first tracked (pose-only BA against the depths of
        its predecessors) and then the whole set is adjusted again.  Starting
        all of them at once from identity falls into local minima when the
        initial keyframes span a large motion.  With a depth prior and no
        parallax between the first two keyframes (``init_prior_parallax``),
        there is no joint seed: every keyframe after the first is tracked.

        The seed has two candidate starts, identity and a two-view
        reconstruction (:meth:`_two_view_seed`), each adjusted by the seed's
        least-squares BA (``init_robust`` off).  With ``init_select="robust"``
        (one-shot sources) the start whose solution has the lower cost under
        ``lm``'s robust loss (without motion maps or the depth prior's term;
        with ``lm.robust=none`` plain least squares) is grown (least squares is
        pulled by a shaky camera's gross flow errors, the robust cost counts
        how well the rest is explained); with
        ``"final"`` the rest of the initialisation (:meth:`_grow`) runs from
        each, and the one ending with the lower robust cost is kept; with
        ``"seed"`` (and for iterative sources, whose correspondences change
        along the way, so that the costs would not compare) the start with the
        lower least-squares cost is grown.
        """
        s, o = self.store, self.opt
        focal = o.optimize_focal and not s.focal_known
        plain = {} if o.init_robust else {"robust": "none"}
        lm = LMOptions(**{**vars(self.lm), "iters": o.init_iters, **plain})
        lm_track = LMOptions(**{**vars(self.lm), **plain})
        with self.ba_lock:
            n0 = min(o.init_seed, s.n)
            if self.prior is not None and n0 > 1 and self._pair_parallax(0, 1) < o.init_prior_parallax:
                # no parallax (a rotating or static camera): the prior's depths are all there is, so every
                # keyframe is tracked against its predecessors' before each joint BA; a joint start from
                # identity would trade the rotation for a spurious translation and flatten the depths
                n0 = 1
            # consecutive pairs first: a longer pair's flow can then start from theirs, chained
            # (the identity start says nothing of the motion; slam.corr.classical.ClassicalFlow.update)
            self.graph.add(*FrameGraph.temporal_pairs(0, n0, 1))
            self.graph.add(*FrameGraph.temporal_pairs(0, n0, o.radius))
            start = s.snapshot()
            res = solve_graph(s, self.graph, None, fixed_below=1, options=lm, optimize_focal=focal,
                                 motion=self.motion, prior=self.prior)
            # candidate starts: (least-squares cost of the seed, state after the seed's BA, two-view?)
            starts = [] if res is None else [(float(res.costs[-1]), s.snapshot(), False)]
            if o.init_two_view and res is not None:
                # second candidate: the two-view start (planar scenes make the essential matrix
                # ambiguous, rotations make it unreliable, so neither start alone is safe)
                s.restore(start)
                if self._two_view_seed(n0):
                    res2 = solve_graph(s, self.graph, None, fixed_below=1, options=lm, optimize_focal=focal,
                                       motion=self.motion, prior=self.prior)
                    starts.append((float(res2.costs[-1]), s.snapshot(), True))
            one_shot = len(starts) > 1 and not self.source.iterative
            if one_shot and o.init_select == "robust":
                # without the motion maps: each start's maps come from its own residuals, so they
                # would discount more of the worse fit
                costs = []
                for _, state, _ in starts:
                    s.restore(state)
                    costs.append(edges_cost(s, self.graph.edges, options=self.lm))
                self.start_costs = costs
                starts = [(c, state, tv) for c, (_, state, tv) in zip(costs, starts)]
            starts.sort(key=lambda c: c[0])
            if one_shot and o.init_select == "final":
                # grow the initialisation from each start and keep the one that ends with the lower
                # robust cost: the seed's least-squares cost (three keyframes, gross flow errors
                # included) often prefers the start that ends in the wrong basin.  Both see the same
                # correspondences (a one-shot source measures each pair once), so their costs compare.
                seed_edges = self.graph.edges
                ends = []
                for _, state, two_view in starts:
                    self.graph.edges = seed_edges
                    s.restore(state)
                    cost = self._grow(n0, lm, lm_track, focal)
                    ends.append((cost, s.snapshot(), self.graph.edges, two_view))
                best = min(ends, key=lambda c: c[0])
                if best is not ends[-1]:  # the last start grown is what the store holds
                    s.restore(best[1])
                self.graph.edges, self.two_view_used = best[2], best[3]
                self.init_costs, self.init_cost = [c[0] for c in ends], best[0]
            else:
                if starts:
                    s.restore(starts[0][1])
                    self.two_view_used = starts[0][2]
                self.init_cost = self._grow(n0, lm, lm_track, focal)
                self.init_costs = [self.init_cost]
            self._normalize_scale()
        self.initialized = True

    def _grow(self, n0: int, lm: LMOptions, lm_track: LMOptions, focal: bool) -> float:
        """The initialisation after its seed: every further initial keyframe is tracked, joined
        (its temporal edges added) and the whole set adjusted (``lm``), then :meth:`_graduate`.
        Returns the final BA cost (inf when there was no BA).

        The seed's scale is first set to a mean inverse depth of 1: each start fixes it its own way
        (the identity start at unit depth, the two-view start at unit baseline, often 10-20x apart),
        the later initial keyframes start at unit inverse depth, and the tracking and BA that follow
        are not scale-invariant (damping, depth clamps), so the same reconstruction at another scale
        could end elsewhere."""
        s, o = self.store, self.opt
        self._normalize_scale(n0)
        res = None
        for t in range(n0, s.n):
            self._track_pose(t, lm_track)
            ii, jj = FrameGraph.temporal_pairs(max(0, t - o.radius), t + 1, o.radius)
            sel = (ii == t) | (jj == t)
            self.graph.add(ii[sel], jj[sel])
            res = solve_graph(s, self.graph, None, fixed_below=1, options=lm, optimize_focal=focal,
                              motion=self.motion, prior=self.prior)
        res = self._graduate(focal) or res
        return float("inf") if res is None else float(res.costs[-1])

    def _graduate(self, focal: bool) -> BAResult | None:
        """Graduated robust loss over the initial keyframes: from the least-squares
        solution, BA with ``lm``'s robust loss at scales ``init_graduated`` x
        ``lm.robust_px`` in turn (large to small).

        Least squares from the rough start finds the right basin but lets a few
        confident gross flow errors pull it (a shaky camera's first keyframes
        end tens of percent off); the robust loss at its working scale from the
        rough start keeps wrong minima (orbits).  Widening the robust kernel
        first and narrowing it step by step (graduated non-convexity) goes
        from the one to the other.  Off when ``lm.robust`` is ``none`` or
        ``init_graduated`` is empty.  Returns the last stage's result (None when off).
        """
        o = self.opt
        res = None
        if self.lm.robust == "none":
            return res
        for m in o.init_graduated:
            lm = LMOptions(**{**vars(self.lm), "iters": o.init_graduated_iters, "robust_px": self.lm.robust_px * m})
            res = solve_graph(self.store, self.graph, None, fixed_below=1, options=lm, optimize_focal=focal,
                              motion=self.motion, prior=self.prior)
        return res

    def _rotation_parallax(self, upd: EdgeUpdate) -> float:
        """Flow (feature px) of a one-edge :class:`EdgeUpdate` left after the best-fitting pure
        rotation (:func:`slam.geometry.twoview.rotation_parallax`)."""
        K = self.store.feature_intrinsics().double().cpu().numpy()
        return float(rotation_parallax(upd.target[0].cpu().numpy(), upd.weight[0, ..., 0].cpu().numpy(), K))

    def _pair_parallax(self, a: int, b: int) -> float:
        """:meth:`_rotation_parallax` of slots ``(a, b)``'s correspondences."""
        return self._rotation_parallax(self.graph.correspond(torch.tensor([a]), torch.tensor([b])))

    def _two_view_seed(self, n0: int) -> bool:
        """Start slots ``0 .. n0-1`` from a two-view reconstruction of (0, n0-1).

        Frame 0's inverse depth is triangulated from the essential matrix of its
        correspondences to slot ``b = n0 - 1`` (untriangulated pixels get the
        median; with a depth prior, the seed slots get the prior aligned to the
        triangulation instead, :meth:`_prior_seed`), b gets the recovered pose
        (unit baseline) and the slots in between interpolate it on the Lie algebra.  Returns False (leaving the
        identity start) when the parallax or the inlier share is too small to
        trust, e.g. for a rotating camera.
        """
        from slam.geometry.twoview import two_view

        s, o = self.store, self.opt
        b = n0 - 1
        if b < 1:
            return False
        upd = self.graph.correspond(torch.tensor([0]), torch.tensor([b]))
        K = s.feature_intrinsics().double().cpu().numpy()
        tv = two_view(upd.target[0].cpu().numpy(), upd.weight[0, ..., 0].cpu().numpy(), K,
                      ransac_px=o.init_ransac_px)
        if tv is None or tv.parallax_deg < o.init_min_parallax or tv.inlier_ratio < o.init_min_inliers:
            return False
        disp = tv.disp.copy()
        disp[~tv.valid] = np.median(tv.disp[tv.valid])
        if self.prior is not None and s.prior_disp is not None:
            seed = self._prior_seed(n0, torch.from_numpy(disp), torch.from_numpy(tv.valid))
        else:
            seed = torch.from_numpy(disp).expand(n0, -1, -1)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = tv.R, tv.t
        xi = pp.mat2SE3(torch.from_numpy(T), check=False).Log()
        with s.lock:
            for k in range(1, n0):
                s.poses[k] = (xi * (k / b)).Exp().tensor().to(s.poses)
            s.disps[:n0] = seed.to(s.disps)
            s.version += 1
            s.changed.update(range(n0))
        return True

    def _prior_seed(self, n0: int, tri: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(n0, h, w) seed inverse depths from the depth prior, in the two-view reconstruction's scale.

        Slot 0's raw prior is aligned in scale and shift to the triangulated
        inverse depths ``tri`` (h, w, finite: the median where not triangulated)
        on the ``valid`` (h, w) pixels (too few: scaled to its median); the later
        seed slots' priors are scaled to its median.  The triangulation covers
        only the textured pixels and is noisy at a small baseline: filling the
        rest with its median would hand BA a flat start that it then keeps
        (the prior's alignment follows the depths), whereas the prior knows
        the shape everywhere.
        """
        s = self.store
        with s.lock:
            raw, conf = s.prior_disp[:n0].cpu(), s.prior_conf[:n0].cpu()
        geo = valid.to(raw.dtype)
        first = self.prior.aligned(raw[:1], conf[:1], tri.to(raw.dtype)[None], geo[None])[0]
        return torch.stack([first] + [self.prior.initial_disp(raw[k], conf[k], first) for k in range(1, n0)])

    def _track_pose(self, t: int, lm: LMOptions | None = None) -> None:
        """Pose-only BA of slot t against the depths of up to ``radius`` predecessors
        (solver options ``lm``, default the frontend's).

        The edge from the previous keyframe comes first (its correspondences
        start from the motion filter's flow, which does not depend on the
        estimate); the older keyframes' edges are added once that pose is
        known, so that their correspondences start from a good reprojection.
        """
        s, o = self.store, self.opt
        if t == 0:
            return
        for src in (torch.tensor([t - 1]), torch.arange(max(0, t - o.radius), t - 1)):
            edges = self.graph.edges
            have = set(zip(edges.ii.tolist(), edges.jj.tolist()))
            ii = torch.tensor([int(a) for a in src if (int(a), t) not in have], dtype=torch.long)
            if ii.numel() == 0:
                continue
            self.graph.add(ii, torch.full_like(ii, t))
            e = self.graph.edges
            solve_graph(s, self.graph, e.jj == t, fixed_below=t, options=lm or self.lm,
                           motion=self.motion, optimize_disps=False)  # pose-only: no depth prior

    def _normalize_scale(self, n: int | None = None) -> None:
        """Fix the monocular scale so that the mean inverse depth of slots ``0 .. n-1`` (all: None) is 1."""
        s = self.store
        with s.lock:
            n = s.n if n is None else n
            scale = float(s.disps[:n].mean())
            if scale <= 0:
                return
            s.disps[:n] /= scale
            s.poses[:n, :3] *= scale  # depths grew by `scale`: so do the translations
            s.version += 1
            s.changed.update(range(n))

    def update_window(self) -> None:
        """Edges for the newest keyframe, local BA over the window, redundancy check."""
        s, o = self.store, self.opt
        t = s.n - 1
        with self.ba_lock:
            self._track_pose(t)
            ii, jj = FrameGraph.temporal_pairs(max(0, t - o.radius), t + 1, o.radius)
            sel = (ii == t) | (jj == t)
            self.graph.add(ii[sel], jj[sel])
            t0 = max(1, t - o.window)
            if t0 > o.radius + 1:
                pi, pj = self.graph.proximity_pairs(torch.tensor([t]), t0, o.proximity_thresh,
                                                    o.proximity_nms, o.proximity_max, o.radius)
                self.graph.add(pi, pj)
            e = self.graph.edges
            in_window = (e.ii >= t0 - 1) | (e.jj >= t0 - 1)
            solve_graph(s, self.graph, in_window, fixed_below=t0, options=self.lm,
                           motion=self.motion, prior=self.prior)
            self._remove_redundant()

    def _remove_redundant(self) -> None:
        s, o = self.store, self.opt
        if s.n < 4:
            return
        k = s.n - 2
        with s.lock:
            d = frame_distance(s.poses[: s.n], s.disps[: s.n], s.feature_intrinsics(),
                               torch.tensor([k]), torch.tensor([k - 1]))
        if float(d[0]) < o.keyframe_thresh:
            if o.record_tracks:
                self._retire_keyframe(k)
            s.remove(k)
            self.graph.remove_slot(k)
            self.new_keyframes = max(0, self.new_keyframes - 1)

    def _retire_keyframe(self, k: int) -> None:
        """Before slot k is removed: its frame becomes a tracked non-keyframe of
        slot k-1 (through the graph edge k-1 -> k), and the frames tracked
        against it are re-anchored to k-1 by chaining their correspondences."""
        s, e = self.store, self.graph.edges
        hit = torch.nonzero((e.ii == k - 1) & (e.jj == k))
        if hit.numel() == 0:
            return
        m = int(hit[0, 0])
        t_ab, w_ab = e.target[m].cpu(), e.weight[m].cpu()
        fa, fk = int(s.frame_index[k - 1]), int(s.frame_index[k])
        with s.lock:
            for f, rec in list(s.tracks.items()):
                if rec.anchor == fk:
                    t, w = compose_targets(t_ab, w_ab, rec.target, rec.weight)
                    s.tracks[f] = TrackRecord(fa, t, w, rec.checked)
            s.tracks[fk] = TrackRecord(fa, t_ab.clone(), w_ab.clone())
