"""Feeding the viewer from a running system without ever blocking tracking.

Data flow::

    frontend thread --on_keyframe(store)--> LiveViewer (remembers the store; O(1))
    poller thread (this process, at most max_fps per second):
        if store.version changed: under store.lock take_changes() and clone the
        changed slots (a few small tensors; the lock is held for well under 1 ms)
        -> SceneUpdate -> multiprocessing queue (put_nowait; a full queue keeps the
        changes for the next poll)
    render process (viewer.render.render_main): merges updates, draws at most
        max_fps frames per second, writes them to viewer.record

Rendering runs in its own process because Open3D's legacy renderer holds the GIL
while it draws (a render thread slowed a pure-Python loop in the tracking process
to about 10 % of its speed).  Nothing the viewer does can stop tracking: every
failure (no OpenGL/EGL, the process dying, a full queue) turns into at most one
warning on stderr, and the run and its outputs are unaffected.

The viewer owns :meth:`KeyframeStore.take_changes` (nobody else consumes it).
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slam.geometry.pose import invert
from viewer.render import CLOSE, render_main
from viewer.scene import SceneUpdate, quat_to_matrix
from viewer.settings import ViewerSettings


def warn(message: str) -> None:
    """The viewer's one-line warning on stderr (whitespace and newlines in ``message`` collapsed)."""
    message = " ".join(str(message).split())
    print(f"slam: warning: 3D viewer disabled: {message} (tracking and outputs are not affected)",
          file=sys.stderr, flush=True)


def feature_colors(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(m, H, W, 3) uint8 processing-resolution images -> (m, h, w, 3) colours of the feature
    pixels (``size = (w, h)``): the mean over each pixel's footprint (area resampling)."""
    import cv2

    return np.stack([cv2.resize(np.ascontiguousarray(im), size, interpolation=cv2.INTER_AREA) for im in images]) \
        if len(images) else np.zeros((0, size[1], size[0], 3), np.uint8)


def start_render_process(settings: ViewerSettings, record: str | None, interactive: bool
                         ) -> tuple[Any, Any, Any]:
    """Start the render process (spawned, so no torch/OpenMP state is inherited).

    Returns ``(process, inbox, outbox)``.  The factory that tests replace to simulate a
    machine where the viewer cannot start.
    """
    ctx = mp.get_context("spawn")
    inbox = ctx.Queue(maxsize=settings.queue_size)
    outbox = ctx.Queue()
    inbox.cancel_join_thread()  # never hang at exit on updates a dead renderer will not read
    proc = ctx.Process(target=render_main, args=(inbox, outbox, settings, record, interactive),
                       name="slam-viewer-render", daemon=True)
    proc.start()
    return proc, inbox, outbox


class LiveViewer:
    """The live viewer of one run.

    Args:
        settings: viewer settings (``configs/viewer``).
        record: where to write frames (``*.mp4`` video, ``*.png`` last frame, else a folder of
            PNGs); None: no recording.  Offscreen without a record path nothing is drawn.
        interactive: open a window (needs a display).
        starter: the render-process factory (default :func:`start_render_process`).

    Use :meth:`on_keyframe` as ``run_sequence``'s hook and call :meth:`close` at the end.
    """

    def __init__(self, settings: ViewerSettings, record: str | None, interactive: bool,
                 starter: Callable[..., tuple[Any, Any, Any]] | None = None):
        self.s = settings
        self.record = record
        self.interactive = interactive
        self.disabled = False
        self.status: str | None = None
        self.frames_written = 0
        self.polls = self.updates_sent = self.slots_sent = 0
        self.lock_hold_max_s = 0.0
        self.poller_cpu_s = 0.0      # CPU time of the poller thread (this process)
        self.render_cpu_s = 0.0      # CPU time of the render process and its encoder, reported at its end
        self.render_start_cpu_s = 0.0  # ... of which spent starting up (imports, context)
        self._store = None
        self._last_version = -1
        self._pending: set[int] = set()
        self._sent_frame: dict[int, int] = {}  # slot -> frame index whose colours the renderer has
        self._stop = threading.Event()
        self._warned = False
        self._status_lock = threading.Lock()
        self._warn_lock = threading.Lock()
        self.proc = self.inbox = self.outbox = None
        try:
            self.proc, self.inbox, self.outbox = (starter or start_render_process)(settings, record, interactive)
        except Exception as e:  # noqa: BLE001 - any start failure becomes the one warning
            self._disable(f"cannot start the render process: {type(e).__name__}: {e}")
            self._thread = None
            return
        self._thread = threading.Thread(target=self._poll_loop, name="viewer-poller", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ hook
    def on_keyframe(self, store: Any) -> None:
        """``run_sequence``'s hook (frontend thread): remember the store; never blocks."""
        self._store = store

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until the render process has its window / offscreen context (True) or failed
        (False).  Not needed for a run (updates wait in the queue); tests and benchmarks use it
        to start tracking with the renderer up."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and not self.disabled and self.status is None:
            self._read_status()
            time.sleep(0.02)
        return self.status is not None and not self.disabled

    # ------------------------------------------------------------------ poller
    def _disable(self, message: str) -> None:
        self.disabled = True
        with self._warn_lock:
            if not self._warned:
                self._warned = True
                warn(message)

    def _read_status(self) -> None:
        """Handle the render process's reports (non-blocking; any thread)."""
        if self.outbox is None:
            return
        with self._status_lock:
            self._read_status_locked()

    def _read_status_locked(self) -> None:
        dead = self.proc is not None and not self.proc.is_alive()  # checked first: its last words are read below
        while True:
            try:
                msg = self.outbox.get_nowait()
            except (queue.Empty, OSError, ValueError):
                break
            kind = msg[0]
            if kind == "ready":
                self.status = msg[1]
                self.render_start_cpu_s = float(msg[2])
            elif kind == "error":
                self._disable(msg[1])
            elif kind == "closed":
                self.status = "closed"
                self.disabled = True  # the user closed the window: stop quietly
            elif kind == "done":
                self.frames_written = int(msg[1])
                self.render_cpu_s = float(msg[3])
                self.status = self.status if self.status == "closed" else "done"
        if dead and not self.disabled and self.status != "done":
            self._disable(f"the render process exited (code {self.proc.exitcode})")

    def _poll_loop(self) -> None:
        period = 1.0 / self.s.max_fps
        while not self._stop.wait(period):
            c0 = time.thread_time()
            try:
                self._read_status()
                if not self.disabled:
                    self.sync()
            except Exception as e:  # noqa: BLE001 - never let the viewer take the run down
                self._disable(f"{type(e).__name__}: {e}")
            self.poller_cpu_s += time.thread_time() - c0

    def sync(self, final: bool = False) -> bool:
        """Send what changed since the last successful send; True when sent (or nothing to send)."""
        store = self._store
        if store is None or self.disabled:
            return True
        if store.version == self._last_version and not final:
            return True
        import torch

        self.polls += 1
        with store.lock:
            t0 = time.perf_counter()
            self._pending |= store.take_changes()
            version, n = store.version, store.n
            slots = sorted(k for k in self._pending if k < n)
            poses = store.poses[:n].clone()
            frame_index = store.frame_index[:n].clone()
            K = store.feature_intrinsics().clone()
            sel = torch.as_tensor(slots, dtype=torch.long)
            disps = store.disps[sel.to(store.disps.device)].clone() if slots else None
            conf = store.confidence[sel.to(store.confidence.device)].clone() if slots else None
            new_colour = [k for k in slots if self._sent_frame.get(k) != int(frame_index[k])]
            images = store.images[torch.as_tensor(new_colour, dtype=torch.long)].clone() if new_colour else None
            hold = time.perf_counter() - t0
        self.lock_hold_max_s = max(self.lock_hold_max_s, hold)
        fi = frame_index.numpy()
        T_wc = invert(quat_to_matrix(poses.detach().double().cpu().numpy()))
        upd = SceneUpdate(n=n, poses=T_wc, frame_index=fi, intrinsics=K.double().cpu().numpy(), final=final)
        if slots:
            d, c = disps.float().cpu().numpy(), conf.float().cpu().numpy()
            upd.depth = {k: (d[i], c[i]) for i, k in enumerate(slots)}
            if new_colour:
                h, w = d.shape[1:]
                cols = feature_colors(images.numpy(), (w, h))
                upd.colors = {k: cols[i] for i, k in enumerate(new_colour)}
        if not (self._put_final(upd) if final else self._put_now(upd)):
            return False  # the renderer is busy: keep the pending slots for the next poll
        self._pending.clear()
        for k in upd.colors:
            self._sent_frame[k] = int(fi[k])
        for k in [k for k in self._sent_frame if k >= n]:
            del self._sent_frame[k]
        self._last_version = version
        self.updates_sent += 1
        self.slots_sent += len(slots)
        return True

    def _put_now(self, item: Any) -> bool:
        try:
            self.inbox.put_nowait(item)
            return True
        except queue.Full:
            return False

    def _put_final(self, item: Any) -> bool:
        """Put ``item`` waiting up to ``close_timeout_s`` while the render process is alive and
        has reported no error (a dead renderer's own report wins over a full queue)."""
        t_end = time.monotonic() + self.s.close_timeout_s
        while True:
            try:
                self.inbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                self._read_status()
                if self.disabled or time.monotonic() > t_end:
                    return False

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Send the final state, let the renderer draw it and finish the recording, then stop.

        With a window and ``keep_open`` this waits until the window is closed (Ctrl-C closes it);
        otherwise it waits at most ``close_timeout_s``.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.proc is None:
            return
        try:
            self._read_status()
            if not self.disabled and not (self.sync(final=True) and self._put_final(CLOSE)):
                self._disable(f"the renderer did not accept the final state within {self.s.close_timeout_s:g} s")
            if self.interactive and self.s.keep_open and not self.disabled and self.proc.is_alive():
                print("slam: viewer window open: close it (or press Q) to exit", file=sys.stderr, flush=True)
                try:
                    self.proc.join()
                except KeyboardInterrupt:  # Ctrl-C closes the window at once
                    self.proc.terminate()
            self.proc.join(timeout=self.s.close_timeout_s if not self.disabled else 5.0)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(timeout=5.0)
                if not self.disabled:
                    self._disable(f"the renderer did not finish within {self.s.close_timeout_s:g} s")
            self._read_status()
        except Exception as e:  # noqa: BLE001 - closing must not fail the run
            self._disable(f"{type(e).__name__}: {e}")
            if self.proc.is_alive():
                self.proc.terminate()
        finally:
            for q in (self.inbox, self.outbox):
                try:
                    q.cancel_join_thread()
                    q.close()
                except Exception:  # noqa: BLE001, S110 - best effort on queues of a dead process
                    pass
        if self.record is not None and not self.disabled:
            print(f"slam: viewer: {self.frames_written} frame(s) written to {self.record} (viewer CPU "
                  f"{self.render_cpu_s + self.poller_cpu_s:.1f} s, of which start-up {self.render_start_cpu_s:.1f} s)",
                  file=sys.stderr, flush=True)


def make_viewer(node: Any, default_record: str | Path | None = None) -> LiveViewer | None:
    """The live viewer for a run's ``viewer`` config node, or None when it is off.

    Waits (at most ``viewer.start_timeout_s``) until the render process is up, so that its
    start-up (importing Open3D, creating the context: about 1-2 s of CPU) does not compete
    with tracking; a failure to start is reported as the one warning and returns the
    (disabled) viewer all the same.

    Offscreen (no display, or ``viewer.headless=true``) a viewer only makes sense when it
    records: without ``viewer.record`` it records to ``default_record`` (e.g. ``OUT/viewer.mp4``).
    """
    try:
        s = ViewerSettings.from_config(node)
    except ValueError as e:
        from slam.data.sequence import InputError

        raise InputError(f"bad viewer setting: {e}") from None
    if not s.active:
        return None
    interactive = not s.offscreen()
    record = s.record
    if record is None and not interactive:
        if default_record is None:
            warn("no display and no `viewer.record=PATH` to render to")
            return None
        record = str(default_record)
    if record is not None:
        record = str(Path(record).expanduser().resolve())
    viewer = LiveViewer(s, record, interactive)
    if s.start_timeout_s > 0:
        viewer.wait_ready(s.start_timeout_s)  # the window opens, then tracking starts
    return viewer
