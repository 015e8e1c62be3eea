"""The 3D viewer (issue #7): scene maths, the non-blocking feed, offscreen recording of a live
run, ``slam view`` of a saved run, and the one-warning fallback without OpenGL/EGL."""
from __future__ import annotations

import queue
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from slam.cli import main as cli
from slam.config import load_config
from slam.corr.base import FrameData
from slam.data.synthetic import make_world, sample_path
from slam.geometry.pose import tq_to_matrix
from slam.system.runner import run_sequence
from slam.system.store import KeyframeStore
from viewer.live import LiveViewer, make_viewer
from viewer.scene import (
    SceneOptions,
    SceneState,
    SceneUpdate,
    lift_keyframe,
    quat_to_matrix,
)
from viewer.settings import ViewerSettings

BACKGROUND = np.array([0.08, 0.08, 0.1]) * 255


@pytest.fixture(scope="module")
def can_render():
    from viewer.render import probe

    reason = probe()
    if reason is not None:
        pytest.skip(f"Open3D cannot render offscreen on this machine: {reason}")


@pytest.fixture(scope="module")
def world():
    return make_world(seed=21, scene="room", motion="orbit", frames=40, width=160, height=120, focal=130.0)


def _content(img: np.ndarray) -> float:
    """Share of pixels that differ from the background."""
    return float((np.abs(img.astype(np.float64) - BACKGROUND).sum(-1) > 30).mean())


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, path
    return img[..., ::-1]


def _plane_update(n: int = 3, h: int = 15, w: int = 20, z: float = 2.0) -> SceneUpdate:
    """n keyframes looking at the plane z = z, stepping along x; confidence 1 on the left half."""
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = 0.2 * np.arange(n)
    conf = np.zeros((h, w), np.float32)
    conf[:, : w // 2] = 1.0
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = 220
    rgb[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    return SceneUpdate(n=n, poses=poses, frame_index=np.arange(n) * 5, intrinsics=np.array([20.0, 20.0, 9.5, 7.0]),
                       depth={k: (np.full((h, w), 1.0 / z, np.float32), conf) for k in range(n)},
                       colors={k: rgb for k in range(n)})


# ----------------------------------------------------------------------------- scene maths (no OpenGL)
def test_quaternions_match_the_project_convention():
    rng = np.random.default_rng(0)
    tq = np.concatenate([rng.normal(size=(5, 3)), rng.normal(size=(5, 4))], 1)
    tq[:, 3:] /= np.linalg.norm(tq[:, 3:], axis=1, keepdims=True)
    assert np.allclose(quat_to_matrix(tq), tq_to_matrix(tq), atol=1e-12)


def test_lift_keyframe_depth_and_confidence_filter():
    u = _plane_update(n=1)
    disp, conf = u.depth[0]
    xyz, rgb = lift_keyframe(disp, conf, u.intrinsics, u.poses[0], u.colors[0], 0.5, 4.0)
    assert len(xyz) == conf.size // 2 and np.allclose(xyz[:, 2], 2.0)
    assert rgb.shape == xyz.shape and np.allclose(rgb[:, 0], 220 / 255)
    xyz_all, _ = lift_keyframe(disp, conf, u.intrinsics, u.poses[0], None, None, None)
    assert len(xyz_all) == conf.size
    # the pixel at the principal point lies on the optical axis
    assert np.isclose(np.abs(xyz_all[:, :2]).sum(1).min(), 0.5 * 2.0 / 20.0)


def test_scene_state_tracks_exactly_what_changed():
    st = SceneState(SceneOptions())
    u = _plane_update(n=3)
    st.apply(u)
    assert st.take_dirty() == ({0, 1, 2}, set())
    # same poses, new depth for slot 1 only
    st.apply(SceneUpdate(n=3, poses=u.poses, frame_index=u.frame_index, intrinsics=u.intrinsics,
                         depth={1: u.depth[1]}))
    assert st.take_dirty() == ({1}, set())
    # a pose moved (BA), nothing else
    poses = u.poses.copy()
    poses[2, 1, 3] += 0.01
    st.apply(SceneUpdate(n=3, poses=poses, frame_index=u.frame_index, intrinsics=u.intrinsics))
    assert st.take_dirty() == ({2}, set())
    # a keyframe removed: the last slot disappears
    st.apply(SceneUpdate(n=2, poses=poses[:2], frame_index=u.frame_index[:2], intrinsics=u.intrinsics))
    assert st.take_dirty() == (set(), {2})
    # the focal length changed: every point moves
    st.apply(SceneUpdate(n=2, poses=poses[:2], frame_index=u.frame_index[:2], intrinsics=u.intrinsics * 1.1))
    assert st.take_dirty() == ({0, 1}, set())
    st.set_filter(False)
    assert st.take_dirty()[0] == {0, 1}
    assert len(st.keyframe_points(0)[0]) == u.depth[0][0].size


def test_overview_frames_the_points_and_the_cameras():
    st = SceneState(SceneOptions())
    st.apply(_plane_update(n=4))
    pts = np.vstack([st.keyframe_points(k)[0] for k in range(4)])
    E, dist = st.overview_view(pts, fov_deg=60.0, aspect=4 / 3, elevation_deg=30.0)
    assert np.allclose(E[:3, :3] @ E[:3, :3].T, np.eye(3), atol=1e-9) and dist > 0
    f = 240 / np.tan(np.radians(30))
    for P in (pts, st.poses[:, :3, 3]):
        Q = P @ E[:3, :3].T + E[:3, 3]
        assert (Q[:, 2] > 0).all()
        u, v = f * Q[:, 0] / Q[:, 2] + 319.5, f * Q[:, 1] / Q[:, 2] + 239.5
        assert ((u > -1) & (u < 640) & (v > -1) & (v < 480)).mean() > 0.97
    # the world "up" (the cameras' -y) points up in the overview image
    assert (E[:3, :3] @ np.array([0.0, -1.0, 0.0]))[1] < 0


def test_viewer_config_group():
    cfg = load_config("run", [])
    assert not ViewerSettings.from_config(cfg.viewer).active
    cfg = load_config("run", ["viewer=true", "viewer.record=out.mp4", "viewer.point_size=5"])
    s = ViewerSettings.from_config(cfg.viewer)
    assert s.enabled and s.record == "out.mp4" and s.point_size == 5.0 and isinstance(s.point_size, float)
    assert ViewerSettings.from_config(load_config("run", ["viewer.record=x.png"]).viewer).active
    with pytest.raises(ValueError):
        ViewerSettings.from_config({"point_sise": 3})


# ----------------------------------------------------------------------------- the feed (no OpenGL)
class _FakeProcess:
    exitcode = None

    def is_alive(self) -> bool:
        return True

    def join(self, timeout=None) -> None: ...

    def terminate(self) -> None: ...


def _store(n: int) -> KeyframeStore:
    st = KeyframeStore(10, (32, 24), 8, torch.tensor([30.0, 30.0, 15.5, 11.5]))
    for k in range(n):
        img = np.full((24, 32, 3), 10 * k, np.uint8)
        st.append(FrameData(index=3 * k, image=img), 0.1 * k, torch.tensor([0.1 * k, 0, 0, 0, 0, 0, 1.0]), 0.5)
    return st


def test_feed_sends_only_changed_keyframes_and_never_blocks():
    inbox: queue.Queue = queue.Queue(maxsize=2)
    s = ViewerSettings(enabled=True, max_fps=1000.0, close_timeout_s=1.0)
    v = LiveViewer(s, None, False, starter=lambda *a: (_FakeProcess(), inbox, queue.Queue()))
    v._stop.set()  # drive sync() by hand
    store = _store(3)
    v.on_keyframe(store)
    assert v.sync()
    u = inbox.get_nowait()
    assert u.n == 3 and set(u.depth) == {0, 1, 2} and set(u.colors) == {0, 1, 2}
    assert u.colors[1].shape == (3, 4, 3) and (u.colors[1] == 10).all()
    assert np.allclose(u.poses[2, :3, 3], [-0.2, 0, 0])  # camera-to-world of G = [0.2, 0, 0 | identity]
    # BA refines slot 1 only: only slot 1 travels, without its (unchanged) image
    store.write(torch.tensor([1]), disps=torch.full((1, 3, 4), 0.7))
    assert v.sync()
    u = inbox.get_nowait()
    assert set(u.depth) == {1} and u.colors == {} and np.allclose(u.depth[1][0], 0.7)
    # nothing changed: nothing sent
    assert v.sync() and inbox.empty()
    # the renderer is busy (queue full): sync returns at once and keeps the change for later
    inbox.put("busy")
    inbox.put("busy")
    store.write(torch.tensor([2]), disps=torch.full((1, 3, 4), 0.9))
    assert not v.sync()
    store.remove(0)  # slots shift: 1 -> 0, 2 -> 1
    inbox.get_nowait()
    inbox.get_nowait()
    assert v.sync()
    u = inbox.get_nowait()
    assert u.n == 2 and set(u.depth) == {0, 1} and set(u.colors) == {0, 1}
    assert np.allclose(u.depth[1][0], 0.9) and (u.colors[0] == 10).all()
    assert v.lock_hold_max_s < 0.05
    v.close()  # sends the final state
    assert inbox.get_nowait().final


# ----------------------------------------------------------------------------- offscreen rendering
def test_renderer_keys_change_the_picture(can_render):
    from viewer.render import Renderer

    r = Renderer(ViewerSettings(enabled=True, width=160, height=120, point_size=2.0), interactive=False)
    try:
        r.apply(_plane_update(n=3))
        a = r.render(capture=True)
        assert a.shape == (120, 160, 3) and _content(a) > 0.02
        r.change_point_size(+3.0)
        b = r.render(capture=True)
        assert _content(b) > _content(a)
        r.toggle_filter()  # all pixels, not only the confident half
        c = r.render(capture=True)
        assert len(r.points[0]) == 300 and _content(c) > _content(b)
        r.toggle_follow()
        d = r.render(capture=True)
        assert np.abs(d.astype(int) - c.astype(int)).mean() > 1.0
    finally:
        r.close()


def test_live_run_records_frames_that_grow(world, tmp_path, can_render):
    rec = tmp_path / "frames"
    cfg = load_config("run", ["correspondence=oracle", "image.pixels=19200", "viewer=true", f"viewer.record={rec}",
                              "viewer.headless=true", "viewer.max_fps=20", "viewer.width=320", "viewer.height=240"])
    viewer = make_viewer(cfg.viewer)
    assert viewer.wait_ready()  # the run is short: start it with the renderer up
    recon = run_sequence(world, cfg, progress=False, on_keyframe=viewer.on_keyframe)
    viewer.close()
    assert recon.tracked.all() and not viewer.disabled
    frames = sorted(rec.glob("frame_*.png"))
    assert len(frames) >= 3 and viewer.frames_written == len(frames)
    first, last = _read_rgb(frames[0]), _read_rgb(frames[-1])
    assert last.shape == (240, 320, 3)
    assert _content(last) > 0.05 and last.std() > 10
    assert np.abs(last.astype(int) - first.astype(int)).mean() > 2.0
    assert _content(last) > _content(first)
    # incremental: fewer keyframe payloads than re-sending every keyframe at every update
    assert viewer.slots_sent < viewer.updates_sent * len(recon.kf_indices)


def test_slam_run_records_video_and_slam_view_renders_the_run(tmp_path, can_render):
    out = tmp_path / "run"
    video = tmp_path / "live.mp4"
    rc = cli(["run", str(sample_path()), "--out", str(out), "--no-progress", "input.max_frames=60",
              "image.pixels=19200", "viewer=true", "viewer.headless=true", f"viewer.record={video}"])
    assert rc == 0 and (out / "points.ply").is_file()
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n >= 1
    png = tmp_path / "view.png"
    assert cli(["view", str(out), "--record", str(png), "viewer.width=320", "viewer.height=240"]) == 0
    img = _read_rgb(png)
    assert img.shape == (240, 320, 3) and _content(img) > 0.02 and img.std() > 5
    folder = tmp_path / "replay"
    assert cli(["view", str(out), "--record", str(folder), "viewer.width=160", "viewer.height=120",
                "replay.hold_s=0"]) == 0
    frames = sorted(folder.glob("frame_*.png"))
    n_kf = len(np.load(out / "keyframes.npz")["indices"])
    assert len(frames) == n_kf
    assert _content(_read_rgb(frames[-1])) > _content(_read_rgb(frames[0]))


def test_slam_view_errors_are_one_line(tmp_path, capsys):
    assert cli(["view", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert cli(["view", str(tmp_path / "empty")]) == 2
    assert "keyframes.npz" in capsys.readouterr().err


# ----------------------------------------------------------------------------- no OpenGL / EGL
def _viewer_lines(err: str) -> list[str]:
    """Lines from the viewer, Open3D, GLFW, EGL or Python warnings (not the run's own report)."""
    keys = ("viewer:", "viewer disabled", "Open3D", "GLFW", "EGL", "Warning", "Traceback")
    return [ln for ln in err.splitlines() if any(k in ln for k in keys)]


def test_no_egl_gives_one_warning_and_the_run_is_unaffected(tmp_path, capfd, monkeypatch):
    # libglvnd finds no EGL vendor: the render process cannot create any context
    monkeypatch.setenv("__EGL_VENDOR_LIBRARY_FILENAMES", str(tmp_path / "no-such-vendor.json"))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "run"
    rc = cli(["run", str(sample_path()), "--out", str(out), "--no-progress", "input.max_frames=30",
              "image.pixels=19200", "viewer=true", f"viewer.record={tmp_path / 'v.mp4'}"])
    err = capfd.readouterr().err
    assert rc == 0
    for name in ("trajectory.txt", "keyframes.npz", "points.ply", "summary.json"):
        assert (out / name).is_file()
    lines = _viewer_lines(err)
    assert len(lines) == 1 and "3D viewer disabled" in lines[0], err
    assert "Traceback" not in err


def test_renderer_factory_failure_gives_one_warning(world, capfd, monkeypatch):
    import viewer.live

    def broken(*args, **kwargs):
        raise RuntimeError("no OpenGL here")

    monkeypatch.setattr(viewer.live, "start_render_process", broken)
    cfg = load_config("run", ["correspondence=oracle", "image.pixels=19200", "viewer=true", "viewer.record=x.mp4"])
    v = make_viewer(cfg.viewer)
    recon = run_sequence(world, cfg, progress=False, on_keyframe=v.on_keyframe)
    v.close()
    err = capfd.readouterr().err
    assert recon.tracked.all() and v.disabled
    lines = _viewer_lines(err)
    assert len(lines) == 1 and "no OpenGL here" in lines[0]
    assert not Path("x.mp4").exists()
