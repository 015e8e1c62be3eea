"""The Open3D side of the viewer: a window or an offscreen (EGL) renderer, frame sinks,
and the render-process main loop.

Rendering uses Open3D's legacy ``o3d.visualization.Visualizer``: with a display it
opens a window (``VisualizerWithKeyCallback``, keys below); without one,
``create_window(visible=False)`` falls back to an EGL offscreen context (Mesa's
llvmpipe on a CPU-only machine) and frames are read back with
``capture_screen_float_buffer``.  On the project's 2-core machine this takes
about 12-20 ms per 640x480 frame of 50k points, against about 135 ms for the
Filament-based ``rendering.OffscreenRenderer`` (Vulkan on llvmpipe), hence the
choice.  The legacy renderer holds the GIL while it draws, so a live run renders
in its own process (:func:`render_main`, started by :mod:`viewer.live`).

Keys (window only):

=========  ====================================================================
``F``      follow the current camera on / off
``C``      confidence filter on / off (all valid depths vs. confident ones)
``V``      overview: fit the whole reconstruction
``+ -``    point size up / down (also ``] [``)
``Q``      close (Open3D's other default keys work too: ``H`` prints them)
=========  ====================================================================

Geometry is updated in place: one point cloud per keyframe slot, re-uploaded
only when that keyframe's depth or pose changed (or the filter/focal changed);
the frusta and the trajectory are one line set each.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from viewer.scene import TRAJECTORY_COLOR, SceneState, SceneUpdate
from viewer.settings import ViewerSettings

#: Message that tells the render process to draw the last state, finish the recording and exit.
CLOSE = "close"

# GLFW key codes (Open3D passes them to key callbacks)
_KEYS = {"F": 70, "C": 67, "V": 86, "=": 61, "-": 45, "]": 93, "[": 91, "KP_ADD": 334, "KP_SUB": 333}


class RenderUnavailable(RuntimeError):
    """No usable OpenGL / EGL: the viewer cannot draw anything on this machine."""


@contextmanager
def _captured_fds() -> Iterator[list[str]]:
    """Redirect the process's stdout and stderr file descriptors (where Open3D's C++ code,
    GLFW and Mesa write) to a temporary file; the yielded list receives the text."""
    out: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


def _last_message(text: str) -> str:
    """The most informative line of Open3D / GLFW / EGL output (ANSI colours removed)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and "XDG_RUNTIME_DIR" not in ln]
    for ln in reversed(lines):
        if "EGL" in ln or "GL" in ln or "ERROR" in ln:
            return re.sub(r"^\[Open3D (WARNING|ERROR)\]\s*", "", ln)
    return lines[-1] if lines else ""


def set_render_threads(n: int) -> None:
    """Threads of Mesa's software rasteriser (``LP_NUM_THREADS``) for contexts created after this
    call; 0 keeps Mesa's default (one per core).  An existing ``LP_NUM_THREADS`` is kept."""
    if n > 0:
        os.environ.setdefault("LP_NUM_THREADS", str(int(n)))


# ============================================================================ frame sinks
class FrameSink:
    """Where rendered frames go: :meth:`write` (H, W, 3) uint8 RGB, then :meth:`close`."""

    frames = 0
    path: Path

    def write(self, rgb: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PngStill(FrameSink):
    """A single PNG that always holds the latest frame (atomically replaced)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        tmp = self.path.with_name(f".{self.path.stem}.tmp.png")
        if not cv2.imwrite(str(tmp), rgb[..., ::-1]):
            raise OSError(f"cannot write {self.path}")
        os.replace(tmp, self.path)
        self.frames += 1


class PngFolder(FrameSink):
    """A folder of ``frame_00000.png``, ``frame_00001.png``, ..."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if not cv2.imwrite(str(self.path / f"frame_{self.frames:05d}.png"), rgb[..., ::-1]):
            raise OSError(f"cannot write into {self.path}")
        self.frames += 1


class Mp4Video(FrameSink):
    """An H.264 mp4 through the ``ffmpeg`` program when it is installed (plays in browsers),
    else MPEG-4 part 2 through ``cv2.VideoWriter``.  Frames are resized to ``size`` (even sides)."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float):
        self.path = path
        w, h = size
        self.size = (w - w % 2, h - h % 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen | None = None
        self._cv = None
        exe = shutil.which("ffmpeg")
        if exe:
            cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{self.size[0]}x{self.size[1]}", "-r", f"{fps:g}", "-i", "-",
                   "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                   "-movflags", "+faststart", str(path)]
            # own session: Ctrl-C in the terminal must not stop the encoder mid-run (the parent decides)
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True)
        else:
            import cv2

            self._cv = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
            if not self._cv.isOpened():
                raise OSError(f"cannot open a video writer for {path}")

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        if self._proc is not None:
            self._proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        else:
            self._cv.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames += 1

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            err = self._proc.stderr.read().decode("utf-8", "replace").strip()
            if self._proc.wait() != 0:
                raise OSError(f"ffmpeg failed writing {self.path}: {err.splitlines()[-1] if err else 'no message'}")
            self._proc = None
        if self._cv is not None:
            self._cv.release()
            self._cv = None


def open_sink(path: str | Path, size: tuple[int, int], fps: float) -> FrameSink:
    """``*.mp4`` -> :class:`Mp4Video`; ``*.png`` -> :class:`PngStill` (the last frame);
    anything else -> :class:`PngFolder`."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".mp4":
        return Mp4Video(p, size, fps)
    if suffix == ".png":
        return PngStill(p)
    return PngFolder(p)


# ============================================================================ renderer
class Renderer:
    """An Open3D legacy visualizer showing a :class:`SceneState`.

    Args:
        settings: the viewer settings.
        interactive: open a window with key callbacks; False renders offscreen (EGL
            when there is no display).
    Raises:
        RenderUnavailable: the window / offscreen context cannot be created.
    """

    def __init__(self, settings: ViewerSettings, interactive: bool):
        set_render_threads(settings.render_threads)
        import open3d as o3d

        self.o3d = o3d
        self.s = settings
        self.interactive = interactive
        self.state = SceneState(settings.scene_options())
        self.follow = settings.follow
        self.vis = o3d.visualization.VisualizerWithKeyCallback() if interactive else o3d.visualization.Visualizer()
        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Warning)  # captured: the failure's reason
        with _captured_fds() as log:
            try:
                ok = self.vis.create_window(window_name="slam viewer", width=settings.width,
                                            height=settings.height, visible=interactive)
            except Exception as e:  # noqa: BLE001 - depends on the GL stack  # pragma: no cover
                ok, log_err = False, str(e)
            else:
                log_err = ""
        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
        if not ok:
            detail = log_err or _last_message(log[0] if log else "")
            raise RenderUnavailable("cannot create an OpenGL window or an EGL offscreen context"
                                    + (f" ({detail})" if detail else ""))
        opt = self.vis.get_render_option()
        opt.point_size = float(settings.point_size)
        opt.background_color = np.asarray(settings.background, dtype=np.float64)
        opt.light_on = False
        self.clouds: dict[int, Any] = {}
        self.points: dict[int, np.ndarray] = {}  # slot -> drawn points (for the overview bounds)
        self.in_scene: set[int] = set()
        self.frusta = o3d.geometry.LineSet()
        self.path = o3d.geometry.LineSet()
        self.lines_in_scene: set[str] = set()
        self.view_set = False
        self.closed = False
        if interactive:
            self._register_keys()

    # ------------------------------------------------------------------ keys
    def _register_keys(self) -> None:
        reg = self.vis.register_key_callback
        reg(_KEYS["F"], lambda vis: self.toggle_follow())
        reg(_KEYS["C"], lambda vis: self.toggle_filter())
        reg(_KEYS["V"], lambda vis: self.overview())
        for k in ("=", "]", "KP_ADD"):
            reg(_KEYS[k], lambda vis: self.change_point_size(+1.0))
        for k in ("-", "[", "KP_SUB"):
            reg(_KEYS[k], lambda vis: self.change_point_size(-1.0))

    def toggle_follow(self) -> bool:
        """Key ``F``: follow the current camera on / off."""
        self.follow = not self.follow
        self._set_view(force=True)
        return True

    def toggle_filter(self) -> bool:
        """Key ``C``: confidence filter on / off (all keyframe points are rebuilt)."""
        self.state.set_filter(not self.state.opt.filter)
        self.sync()
        return True

    def overview(self) -> bool:
        """Key ``V``: stop following and fit the whole reconstruction."""
        self.follow = False
        self._set_view(force=True)
        return True

    def change_point_size(self, delta: float) -> bool:
        """Keys ``+``/``-``: point size in pixels, clamped to [1, 20]."""
        opt = self.vis.get_render_option()
        opt.point_size = float(np.clip(opt.point_size + delta, 1.0, 20.0))
        return True

    # ------------------------------------------------------------------ scene
    def apply(self, update: SceneUpdate) -> None:
        """Merge an update into the state (geometry follows at the next :meth:`sync`)."""
        self.state.apply(update)

    def sync(self) -> int:
        """Re-upload the changed keyframes' points and the line sets; returns how many
        keyframe clouds were re-uploaded."""
        o3d, vis = self.o3d, self.vis
        dirty, removed = self.state.take_dirty()
        # Open3D derives its camera from the scene's bounding box (an empty or stale box gives a
        # NaN camera), so geometry is added with reset_bounding_box=True; that also resets the
        # view, so a user's view (window, not following) is saved here and restored below.
        keep = vis.get_view_control().convert_to_pinhole_camera_parameters() \
            if self.interactive and self.view_set and not self.follow else None
        added = False
        for k in removed:
            self._drop(k)
        for k in sorted(dirty):
            xyz, rgb = self.state.keyframe_points(k)
            self.points[k] = xyz
            if len(xyz) == 0:
                self._drop(k)
                continue
            pc = self.clouds.get(k)
            if pc is None:
                pc = self.clouds[k] = o3d.geometry.PointCloud()
            pc.points = o3d.utility.Vector3dVector(xyz)
            pc.colors = o3d.utility.Vector3dVector(rgb)
            if k in self.in_scene:
                vis.update_geometry(pc)
            else:
                vis.add_geometry(pc, reset_bounding_box=True)
                self.in_scene.add(k)
                added = True
        if dirty or removed:
            pts, lines, cols = self.state.frusta()
            self._set_lines("frusta", self.frusta, pts, lines, cols)
            pts, lines = self.state.trajectory() if self.state.opt.show_trajectory else (np.zeros((0, 3)), [])
            self._set_lines("path", self.path, pts, lines, np.tile(TRAJECTORY_COLOR, (len(lines), 1)))
        if added and keep is not None:
            self._apply_camera(keep.extrinsic)
        return len(dirty)

    def _drop(self, k: int) -> None:
        self.points.pop(k, None)
        if k in self.in_scene:
            self.vis.remove_geometry(self.clouds[k], reset_bounding_box=False)
            self.in_scene.discard(k)
        if k >= self.state.n:
            self.clouds.pop(k, None)

    def _set_lines(self, name: str, ls: Any, pts: np.ndarray, lines: Any, cols: np.ndarray) -> None:
        o3d = self.o3d
        if len(lines) == 0:
            if name in self.lines_in_scene:
                self.vis.remove_geometry(ls, reset_bounding_box=False)
                self.lines_in_scene.discard(name)
            return
        ls.points = o3d.utility.Vector3dVector(np.asarray(pts, dtype=np.float64))
        ls.lines = o3d.utility.Vector2iVector(np.asarray(lines, dtype=np.int32))
        ls.colors = o3d.utility.Vector3dVector(np.asarray(cols, dtype=np.float64))
        if name in self.lines_in_scene:
            self.vis.update_geometry(ls)
        else:
            self.vis.add_geometry(ls, reset_bounding_box=True)
            self.lines_in_scene.add(name)

    # ------------------------------------------------------------------ camera
    def _all_points(self) -> np.ndarray:
        parts = [p for p in self.points.values() if len(p)]
        return np.vstack(parts) if parts else np.zeros((0, 3))

    def _set_view(self, force: bool = False) -> None:
        """Place the viewer camera: following the newest keyframe, or the overview.  With a
        window and no following, the overview is set once (and on ``V``) so that the mouse
        keeps control; offscreen it is refitted at every frame as the map grows."""
        if self.state.n == 0:
            return
        if not (self.follow or force or not self.interactive or not self.view_set):
            return
        if self.follow:
            E = self.state.follow_view(self.s.follow_distance, self.s.follow_height)
        else:
            E = self.state.overview_view(self._all_points(), self.s.fov_deg, self.s.width / self.s.height,
                                         self.s.elevation_deg)[0]
        self._apply_camera(E)
        self.view_set = True

    def _apply_camera(self, E: np.ndarray) -> None:
        """Set the viewer camera to the world-to-camera extrinsic ``E`` with the configured field
        of view, and clipping planes from the scene's depth and extent."""
        ctr = self.vis.get_view_control()
        params = ctr.convert_to_pinhole_camera_parameters()
        W, H = params.intrinsic.width, params.intrinsic.height  # the window's current size
        f = (H / 2.0) / np.tan(np.radians(self.s.fov_deg) / 2.0)
        params.intrinsic.set_intrinsics(W, H, f, f, W / 2.0 - 0.5, H / 2.0 - 0.5)
        params.extrinsic = np.asarray(E, dtype=np.float64)
        ctr.convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)
        depth = self.state.scene_depth()
        pts = self._all_points()
        eye = -E[:3, :3].T @ E[:3, 3]
        reach = np.linalg.norm(pts - eye, axis=1).max() if len(pts) else 0.0
        ctr.set_constant_z_near(0.002 * depth)
        ctr.set_constant_z_far(2.0 * reach + 100.0 * depth)

    # ------------------------------------------------------------------ drawing
    def render(self, capture: bool = False) -> np.ndarray | None:
        """Sync the geometry, place the camera, draw; returns the (H, W, 3) uint8 RGB frame when
        ``capture``."""
        self.sync()
        self._set_view()
        if capture:
            img = np.asarray(self.vis.capture_screen_float_buffer(do_render=True))
            return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        self.vis.poll_events()
        self.vis.update_renderer()
        return None

    def poll(self) -> bool:
        """Process window events and redraw; False once the window was closed."""
        if self.closed:
            return False
        alive = bool(self.vis.poll_events())
        if alive:
            self.vis.update_renderer()
        else:
            self.closed = True
        return alive

    def close(self) -> None:
        try:
            self.vis.destroy_window()
        except Exception:  # noqa: BLE001, S110 - already gone  # pragma: no cover
            pass
        self.closed = True


def make_renderer(settings: ViewerSettings, interactive: bool) -> Renderer:
    """The renderer factory (one place to swap or fail in tests)."""
    return Renderer(settings, interactive)


# ============================================================================ render process
def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its waited-for children (the encoder)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def render_main(inbox: Any, outbox: Any, settings: ViewerSettings, record: str | None, interactive: bool) -> None:
    """Main loop of the render process (started by :class:`viewer.live.LiveViewer`).

    Reads :class:`SceneUpdate` messages (and finally :data:`CLOSE`) from ``inbox``,
    draws at most ``settings.max_fps`` times per second, writes each drawn frame to
    ``record`` when given, and reports on ``outbox``: ``("ready", info, cpu_s)``, ``("error",
    message)``, ``("closed",)`` (the user closed the window) and ``("done", frames, path, cpu_s)``
    (``cpu_s``: CPU seconds of this process so far, :func:`_cpu_seconds`).
    SIGINT is ignored here: the parent process decides when to stop.
    """
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # pragma: no cover - not the main thread
        pass
    try:
        r = make_renderer(settings, interactive)
    except Exception as e:  # noqa: BLE001 - reported to the parent as the one warning
        outbox.put(("error", f"{type(e).__name__}: {e}" if not isinstance(e, RenderUnavailable) else str(e)))
        return
    sink = None
    try:
        if record is not None:
            sink = open_sink(record, (settings.width, settings.height), settings.record_fps)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        outbox.put(("error", f"cannot record to {record}: {e}"))
        r.close()
        return
    outbox.put(("ready", "window" if interactive else "offscreen", _cpu_seconds()))
    period = 1.0 / settings.max_fps
    last = -np.inf
    pending = closing = False
    error = None
    parent = os.getppid()
    try:
        while os.getppid() == parent:  # an orphan (the parent was killed) exits
            wait = 1.0 / 30.0 if interactive and not r.closed else max(0.05, period - (time.monotonic() - last))
            try:
                msg = inbox.get(timeout=wait)
            except queue.Empty:
                msg = None
            while msg is not None:
                if isinstance(msg, str) and msg == CLOSE:
                    closing = True
                elif isinstance(msg, SceneUpdate):
                    r.apply(msg)
                    pending = True
                try:
                    msg = inbox.get_nowait()
                except queue.Empty:
                    msg = None
            now = time.monotonic()
            if pending and not r.closed and (closing or now - last >= period):
                frame = r.render(capture=sink is not None)
                if sink is not None and frame is not None:
                    sink.write(frame)
                last, pending = now, False
            if interactive and not r.closed and not r.poll():
                outbox.put(("closed",))  # the user closed the window: the parent stops sending
                break
            if closing:
                break
        if interactive and settings.keep_open:
            while r.poll():
                time.sleep(1.0 / 60.0)
    except Exception as e:  # noqa: BLE001 - a drawing or writing failure: report it, keep the parent running
        error = f"{type(e).__name__}: {e}"
    finally:
        try:
            if sink is not None:
                sink.close()
        except Exception as e:  # noqa: BLE001 - reported to the parent
            error = error or f"{type(e).__name__}: {e}"
        r.close()
    if error:
        outbox.put(("error", error))
    outbox.put(("done", sink.frames if sink is not None else 0, str(sink.path) if sink is not None else None,
                _cpu_seconds()))


# ============================================================================ probe
_PROBE = """
import numpy as np, open3d as o3d
o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
vis = o3d.visualization.Visualizer()
if not vis.create_window(width=64, height=48, visible=False):
    raise SystemExit(3)
pc = o3d.geometry.PointCloud()
pc.points = o3d.utility.Vector3dVector(np.random.default_rng(0).random((500, 3)))
pc.paint_uniform_color([1.0, 0.0, 0.0])
vis.add_geometry(pc)
img = np.asarray(vis.capture_screen_float_buffer(do_render=True))
vis.destroy_window()
raise SystemExit(0 if img.std() > 0.01 else 4)
"""


def probe(timeout: float = 60.0) -> str | None:
    """Try an offscreen render of a few red points in a child process.

    Returns None when it works, else a one-line reason (no EGL/OpenGL, blank image, crash).
    """
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"offscreen rendering did not finish within {timeout:.0f} s"
    if p.returncode == 0:
        return None
    text = (p.stdout + p.stderr).decode("utf-8", "replace")
    reason = {3: "cannot create an OpenGL/EGL context", 4: "the rendered image is blank"}.get(p.returncode,
                                                                                            "the probe crashed")
    detail = _last_message(text)
    return f"{reason} ({detail})" if detail else reason
