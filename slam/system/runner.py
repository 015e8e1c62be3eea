"""Run the whole system on a sequence: reader -> frontend thread (+ backend
thread) -> final refinement -> trajectory filler -> :class:`Reconstruction`.

The calling thread reads frames, resizes them to the processing resolution
(one function, :func:`slam.geometry.camera.resize_frame`) and feeds a bounded
queue; the frontend thread tracks them; the backend thread runs global BA
every few keyframes.  Ctrl-C (KeyboardInterrupt in the calling thread) stops
reading, lets the threads finish cleanly and returns what was computed
(``interrupted=True``).
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig

from slam.ba.dense_ba import LMOptions
from slam.config import lm_options
from slam.corr import make_source
from slam.data.sequence import InputError, Sequence
from slam.geometry.camera import Intrinsics, processing_size, resize_frame
from slam.memory import peak_rss_mb, reset_peak_rss
from slam.system.backend import Backend, BackendOptions, global_ba
from slam.system.depth_prior import PriorTerm
from slam.system.filler import (
    FillerOptions,
    fill_trajectory,
    recorded_frames,
    second_pass_frames,
)
from slam.system.frontend import Frontend, FrontendOptions
from slam.system.motion import MotionOptions
from slam.system.motion import frame_motion as motion_of_frames
from slam.system.result import Reconstruction
from slam.system.store import KeyframeStore

_STOP = object()


def resolve_intrinsics(seq: Sequence, cfg: DictConfig, width: int, height: int) -> tuple[Intrinsics, bool]:
    """Input-resolution intrinsics and whether they are known.

    Order: ``input.focal`` flag, then the sequence's own (calib file or dataset),
    else unknown with ``f = focal_guess * max(W, H)`` and the principal point at
    the image centre (:meth:`Intrinsics.default_for`).
    """
    ic = cfg.input
    if ic.get("focal"):
        f = float(ic.focal)
        base = seq.intrinsics or Intrinsics.default_for(width, height)
        return Intrinsics(f, f, base.cx, base.cy, width, height), True
    if seq.intrinsics is not None and not ic.get("unknown_focal", False):
        K = seq.intrinsics
        if (K.width, K.height) != (width, height):
            K = K.scaled(width, height)
        return K.undistorted(), True
    return Intrinsics.default_for(width, height, float(ic.get("focal_guess", 1.0))), False


def run_threads(cfg: DictConfig) -> int:
    """Torch intra-op threads of a run: the correspondence config's own ``threads`` where it has
    one (``learned``), else the run's ``threads``; 0: the caller's count, unchanged."""
    n = cfg.correspondence.get("threads", None)
    if n is None:
        n = cfg.get("threads", 0)
    try:
        return int(n or 0)
    except (TypeError, ValueError):
        raise InputError(f"bad configuration: threads must be an integer, got {n!r}") from None


def run_sequence(seq: Sequence, cfg: DictConfig, *, progress: bool = True,
                 on_keyframe: Callable[[KeyframeStore], None] | None = None) -> Reconstruction:
    """Track ``seq`` with the configuration ``cfg`` (``configs/run.yaml``).

    The frontend and backend threads run torch with :func:`run_threads` intra-op threads; the
    final refinement and the filler, which run alone in the calling thread, with the caller's.

    Args:
        seq: any reader's sequence.
        cfg: the composed run configuration.
        progress: show progress bars (stderr).
        on_keyframe: called (in the frontend thread) after each new keyframe,
            e.g. to feed a viewer; must not block.
    Raises:
        InputError: empty input, frames of changing size, ...
    """
    t_start = time.perf_counter()
    reset_peak_rss()  # summary.json reports this run's peak, not an earlier run's in the same process
    n_total = len(seq)
    if n_total == 0:
        raise InputError(f"{seq.path}: no frames")
    first = seq[0]
    H0, W0 = first.image.shape[:2]
    K_in, focal_known = resolve_intrinsics(seq, cfg, W0, H0)
    W, H = processing_size(W0, H0, int(cfg.image.pixels))
    K_proc = K_in.scaled(W, H)
    stride = int(cfg.correspondence.get("stride", 8))
    device = torch.device(cfg.get("device", "cpu"))
    try:  # option classes validate their values: a bad override is a user mistake, not a crash
        source = make_source(cfg.correspondence, seq, (W, H))
        lm = lm_options(cfg.lm)
        fopt = FrontendOptions(**dict(cfg.frontend))
        bopt = BackendOptions(**dict(cfg.backend))
        mopt = MotionOptions(**dict(cfg.motion))
        filler = FillerOptions(**dict(cfg.filler), motion_weighting=mopt.weighting and mopt.mode != "off")
    except (ValueError, TypeError) as e:
        raise InputError(f"bad configuration: {e}") from None
    store = KeyframeStore(int(cfg.store.capacity), (W, H), stride,
                          torch.tensor([K_proc.fx, K_proc.fy, K_proc.cx, K_proc.cy]), focal_known, device)
    prior = PriorTerm.from_config(cfg.depth.prior, stride, n_total) if "depth" in cfg else None
    ba_lock = threading.Lock()
    n_threads = run_threads(cfg)
    frontend = Frontend(store, source, fopt, LMOptions(**{**vars(lm), "iters": fopt.local_iters}), ba_lock, mopt, prior)
    backend = Backend(store, source, frontend, bopt, lm, ba_lock, mopt, prior)

    def prepare(frame) -> np.ndarray:
        img = frame.image
        if img.shape[:2] != (H0, W0):
            raise InputError(f"{frame.source or seq.path}: frame {frame.index} is {img.shape[1]}x{img.shape[0]}, "
                             f"expected {W0}x{H0} (images of changing size)")
        return resize_frame(img, K_in, W, H)[0]

    frames_q: queue.Queue = queue.Queue(maxsize=int(cfg.queue_size))
    # processing-resolution frames kept for the filler's second pass, so that it need not decode the input again
    kept: dict[int, np.ndarray] = {}
    try:
        keep_bytes = int(float(cfg.get("frame_cache_mb") or 0) * 2 ** 20)
    except (TypeError, ValueError):
        raise InputError(f"bad configuration: frame_cache_mb must be a number, "
                         f"got {cfg.get('frame_cache_mb')!r}") from None
    kept_all = True  # False once a frame did not fit: the pass then decodes the input again, kept or not
    timestamps: list[float] = []
    frame_ids: list[int] = []
    errors: list[BaseException] = []
    kf_frames = {}

    def frontend_loop() -> None:
        try:
            while True:
                item = frames_q.get()
                if item is _STOP:
                    return
                idx, ts, img, fd = item
                if frontend.track(idx, ts, img, fd):
                    if on_keyframe is not None:
                        on_keyframe(store)
                    if bopt.enabled and bopt.inline:
                        backend.step()
                    else:
                        backend.wake.set()
        except BaseException as e:
            errors.append(e)

    interrupted = False
    bar = _bar(n_total, "tracking", progress)
    # torch's intra-op thread count is process-wide; a thread takes up the count current when it starts
    caller_threads = torch.get_num_threads()
    if n_threads > 0:
        torch.set_num_threads(n_threads)
    worker = threading.Thread(target=frontend_loop, name="slam-frontend", daemon=True)
    worker.start()
    if bopt.enabled and not bopt.inline:
        backend.start()
    try:
        for frame in seq:
            img = prepare(frame)
            fd = source.ahead(frame.index, img)  # the source's per-frame work that can run ahead of tracking
            while True:
                if errors:
                    raise errors[0]
                try:
                    frames_q.put((frame.index, frame.timestamp, img, fd), timeout=0.1)
                    break
                except queue.Full:
                    continue
            timestamps.append(frame.timestamp)
            frame_ids.append(frame.index)
            if kept_all and (len(kept) + 1) * img.nbytes <= keep_bytes:
                kept[frame.index] = img
            elif kept_all:  # the pass will not fit: do not hold memory it cannot use
                kept_all = False
                kept.clear()
            bar.update(1)
            bar.set_postfix(kf=store.n, refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _put_stop(frames_q, worker)
        worker.join()
        backend.stop()
        if backend.is_alive():
            backend.join()
        torch.set_num_threads(caller_threads)  # the final refinement and the filler: the caller's count
        bar.close()
    if errors:
        raise errors[0]
    if backend.error is not None:
        raise backend.error
    t_track = time.perf_counter() - t_start

    # finalisation: initialise short sequences, final global refinement, filler
    if not frontend.initialized and store.n >= 2:
        frontend.initialize()
    message = None
    if store.n < 2:
        message = "the camera did not move enough to create a second keyframe: identity trajectory, one keyframe"
    elif not interrupted:
        global_ba(store, source, bopt, lm, bopt.final_iters, mopt, prior, remeasure=bopt.refine_rounds,
                  remeasure_iters=bopt.refine_iters)
    snap = store.snapshot()
    for k in range(snap.n):
        kf_frames[int(snap.frame_index[k])] = store.frames[k]
    ts_arr = np.asarray(timestamps, dtype=np.float64)
    ids_arr = np.asarray(frame_ids, dtype=np.int64)
    fbar = None
    with store.lock:
        tracks = dict(store.tracks)
    kf_set = set(kf_frames)
    # the filler's second pass: frames without a usable record, and every non-keyframe when re-measuring
    again = second_pass_frames(ids_arr, kf_set, tracks, filler, source) if snap.n >= 2 and not interrupted else set()
    restream = None
    if again and again <= kept.keys():  # every frame of the pass is in memory: no second decode
        restream = ((i, kept[i]) for i in ids_arr.tolist() if i in again)
    elif again:
        restream = ((f.index, prepare(f)) for f in seq if f.index in again)
    if filler.refine and snap.n >= 2:
        fbar = _bar(len(recorded_frames(ids_arr, kf_set, tracks)) + len(again), "filling", progress)
    try:
        poses, tracked, stopped = fill_trajectory(snap, store.feature_intrinsics(), ts_arr, ids_arr, kf_frames,
                                                  restream, source, filler, lm,
                                                  on_progress=(fbar.update if fbar else None), tracks=tracks)
        interrupted = interrupted or stopped
    except KeyboardInterrupt:
        interrupted = True
        poses, tracked, _ = fill_trajectory(snap, store.feature_intrinsics(), ts_arr, ids_arr, kf_frames, None,
                                            source, filler, lm, tracks=tracks)
    finally:
        if fbar is not None:
            fbar.close()
    kept.clear()
    source.close()
    if prior is not None:
        prior.close()
    frame_motion = motion_of_frames(snap, store.feature_intrinsics(), poses, ids_arr, tracks, mopt)
    wall = time.perf_counter() - t_start
    import pypose as pp

    kf_T = pp.SE3(snap.poses.double()).Inv().matrix().numpy()
    Kp = snap.intrinsics.double().cpu().numpy()
    sx, sy = W0 / W, H0 / H
    K_input = np.array([Kp[0] * sx, Kp[1] * sy, (Kp[2] + 0.5) * sx - 0.5, (Kp[3] + 0.5) * sy - 0.5])
    stats = {"fps": len(ids_arr) / max(wall, 1e-9), "wall_s": wall, "tracking_s": t_track,
             "peak_rss_mb": peak_rss_mb(), "backend_runs": backend.runs, "device": str(device)}
    if frontend.initialized:
        # which start the initialisation kept (frontend.init_select), the final BA cost of each start grown
        # and (init_select=robust) each start's robust cost after the seed's BA, identity then two-view
        stats["init_start"] = "two-view" if frontend.two_view_used else "identity"
        stats["init_costs"], stats["init_cost"] = list(frontend.init_costs), frontend.init_cost
        stats["init_start_costs"] = list(frontend.start_costs)
    if not focal_known:
        # relative marginal std of the focal at the last BA that could estimate it, and whether
        # it was held there because the data did not constrain it (LMOptions.focal_max_std)
        stats["focal_rel_std"] = store.focal_std
        stats["focal_held"] = store.focal_held
    if message:
        stats["message"] = message
    return Reconstruction(
        timestamps=ts_arr, poses=poses, tracked=tracked, kf_indices=snap.frame_index.numpy(),
        kf_poses=kf_T, kf_disps=snap.disps.float().cpu().numpy(), kf_confidence=snap.confidence.float().cpu().numpy(),
        kf_images=store.images[: snap.n].numpy().copy(), intrinsics=Kp, image_size=(W, H), input_size=(W0, H0),
        input_intrinsics=K_input, focal_estimated=not focal_known, correspondence=source.name, stats=stats,
        interrupted=interrupted, kf_motion=snap.motion.float().cpu().numpy(), motion=frame_motion)


def _put_stop(q: queue.Queue, worker: threading.Thread) -> None:
    while worker.is_alive():
        try:
            q.put(_STOP, timeout=0.1)
            return
        except queue.Full:
            continue


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw) -> None: ...
    def close(self) -> None: ...


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, file=sys.stderr)
