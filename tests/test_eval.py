"""Evaluation: trajectory metrics, plots, the ``slam eval`` command and the COLMAP baseline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.data.sequence import Frame, InputError
from slam.eval.metrics import MetricsError, compute_metrics, evaluate_trajectory
from slam.eval.plot import plot_trajectories, top_view_axes
from slam.geometry.camera import Intrinsics
from slam.io.tum import write_tum
from slam.system.result import Reconstruction


def curve_poses(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) camera-to-world poses along a smooth 3D curve with varying orientation."""
    s = np.linspace(0.0, 2.0 * np.pi, n)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3] = 2.0 * np.sin(s)
    T[:, 1, 3] = 0.3 * np.cos(2 * s)
    T[:, 2, 3] = 1.5 * s / np.pi
    T[:, :3, :3] = Rotation.from_rotvec(np.stack([0.2 * np.sin(s), s / 3, 0.1 * s], 1)).as_matrix()
    return T


def sim3(scale: float, rotvec, t) -> np.ndarray:
    S = np.eye(4)
    S[:3, :3] = scale * Rotation.from_rotvec(rotvec).as_matrix()
    S[:3, 3] = t
    return S


def apply_sim3(S: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Poses of a trajectory seen in another Sim(3) frame (rotations stay orthonormal)."""
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    out = T.copy()
    out[:, :3, :3] = (S[:3, :3] / s) @ T[:, :3, :3]
    out[:, :3, 3] = T[:, :3, 3] @ S[:3, :3].T + S[:3, 3]
    return out


# ---------------------------------------------------------------------------- metrics
def test_ate_zero_under_sim3():
    T = curve_poses(60)
    t = np.arange(60) * 0.05
    est = apply_sim3(sim3(0.37, [0.3, -1.0, 2.0], [1.0, -2.0, 0.5]), T)
    m = compute_metrics(t, est, t, T)
    assert m["ate_rmse_m"] < 1e-9 and m["rpe_trans_m"] < 1e-9 and m["rpe_rot_deg"] < 1e-6
    assert m["scale"] == pytest.approx(1 / 0.37)
    seg = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1).sum()
    assert m["path_length_m"] == pytest.approx(seg)
    assert m["tracked_fraction"] == 1.0 and m["evaluated_frames"] == 60


def test_ate_of_noisy_estimate():
    n, sigma = 2000, 0.01
    T = curve_poses(n)
    t = np.arange(n) * 0.05
    rng = np.random.default_rng(1)
    noisy = T.copy()
    noisy[:, :3, 3] += rng.normal(0.0, sigma, (n, 3))
    est = apply_sim3(sim3(2.0, [0.0, 0.5, 0.0], [3.0, 0.0, 0.0]), noisy)
    m = compute_metrics(t, est, t, T)
    assert m["ate_rmse_m"] == pytest.approx(sigma * np.sqrt(3), rel=0.05)
    # relative translation error of independent noise: sqrt(2) times the absolute one
    assert m["rpe_trans_m"] == pytest.approx(sigma * np.sqrt(6), rel=0.05)
    assert m["ate_pct_path"] == pytest.approx(100 * m["ate_rmse_m"] / m["path_length_m"])


def test_metrics_drop_missing_rows_and_count_tracking():
    n = 40
    T = curve_poses(n)
    t = 100.0 + np.arange(n) * 0.1
    gt = T.copy()
    gt[[3, 7, 8]] = np.nan  # missing ground truth
    est = T.copy()
    est[[10, 11]] = np.nan  # unregistered frames
    tracked = np.ones(n, bool)
    tracked[20] = False
    ev = evaluate_trajectory(t, est, t, gt, tracked=tracked)
    assert ev.metrics["evaluated_frames"] == n - 5
    assert ev.metrics["tracked_fraction"] == pytest.approx((n - 3) / n)
    assert ev.metrics["ate_rmse_m"] < 1e-9
    assert ev.est_xyz.shape == ev.gt_xyz.shape == (n - 5, 3)


def test_metrics_degenerate_inputs():
    T = curve_poses(10)
    t = np.arange(10.0)
    with pytest.raises(MetricsError, match="too few"):
        compute_metrics(t[:2], T[:2], t, T)
    static = np.tile(np.eye(4), (10, 1, 1))
    with pytest.raises(MetricsError, match="static"):
        compute_metrics(t, T, t, static)
    with pytest.raises(MetricsError, match="static"):
        compute_metrics(t, static, t, T)
    with pytest.raises(MetricsError):
        compute_metrics(t + 1000.0, T, t, T)  # no timestamps in common
    # a straight line is fine (evo's own Umeyama refuses collinear points)
    line = np.tile(np.eye(4), (10, 1, 1))
    line[:, 0, 3] = np.arange(10.0)
    assert compute_metrics(t, line, t, line)["ate_rmse_m"] < 1e-9


def test_plot_writes_png(tmp_path):
    T = curve_poses(50)
    xyz = T[:, :3, 3]
    assert top_view_axes(xyz) == (0, 2)  # x spans 4 m, z 3 m, y 0.6 m
    path = plot_trajectories(tmp_path / "p" / "plot.png", xyz, {"a": xyz + 0.05, "empty": np.zeros((0, 3))},
                             title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- slam eval
def write_tum_sequence(root: Path, poses: np.ndarray | None, n: int = 12, W: int = 32, H: int = 24) -> Path:
    """A TUM RGB-D layout (rgb.txt, rgb/*.png, optional groundtruth.txt, calib.txt)."""
    import cv2

    (root / "rgb").mkdir(parents=True)
    rng = np.random.default_rng(0)
    stamps = 1000.0 + np.arange(n) / 30.0
    lines = []
    for ts in stamps:
        cv2.imwrite(str(root / "rgb" / f"{ts:.6f}.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        lines.append(f"{ts:.6f} rgb/{ts:.6f}.png")
    (root / "rgb.txt").write_text("# timestamp filename\n" + "\n".join(lines) + "\n")
    (root / "calib.txt").write_text(f"30 30 {(W - 1) / 2} {(H - 1) / 2}\n")
    if poses is not None:
        write_tum(root / "groundtruth.txt", stamps, poses)
    return root


def fake_recon(sequence, method: str, seed: int = 0) -> Reconstruction:
    """What a run could return: ground truth in another Sim(3) frame, plus noise of 1 cm."""
    gt = np.asarray(sequence.gt_poses)
    n = len(gt)
    rng = np.random.default_rng(seed)
    noisy = gt.copy()
    noisy[:, :3, 3] += rng.normal(0.0, 0.01, (n, 3))
    poses = apply_sim3(sim3(0.5, [0.1, 0.2, 0.3], [1.0, 2.0, 3.0]), noisy)
    kf = np.array([0, n // 2, n - 1])
    W, H = sequence.intrinsics.size
    Kp = sequence.intrinsics.as_array()
    return Reconstruction(
        timestamps=np.asarray(sequence.timestamps), poses=poses, tracked=np.ones(n, bool), kf_indices=kf,
        kf_poses=poses[kf], kf_disps=np.full((3, H // 8, W // 8), 0.5), kf_confidence=np.ones((3, H // 8, W // 8)),
        kf_images=np.zeros((3, H, W, 3), np.uint8), intrinsics=Kp, image_size=(W, H), input_size=(W, H),
        input_intrinsics=Kp * np.array([1.1, 1.1, 1, 1]), focal_estimated=True, correspondence=method,
        stats={"fps": 20.0, "wall_s": n / 20.0, "peak_rss_mb": 123.0})


@pytest.fixture
def patched_eval(monkeypatch):
    """``slam eval`` with the system and the run config replaced by fakes; yields the calls made."""
    from omegaconf import OmegaConf

    import slam.commands.evaluate as ev

    calls = []

    def fake_config(overrides):
        name = "classical"
        for o in overrides:
            if o.startswith("correspondence="):
                name = o.split("=", 1)[1]
        cfg = OmegaConf.from_dotlist([o for o in overrides if not o.startswith("correspondence=")])
        return OmegaConf.merge(cfg, {"correspondence": {"name": name}, "overrides": list(overrides)})

    def fake_run(sequence, cfg, *, progress=True):
        calls.append((sequence.name, cfg.correspondence.name, list(cfg.overrides)))
        return fake_recon(sequence, cfg.correspondence.name, seed=len(calls))

    monkeypatch.setattr(ev, "load_run_config", fake_config)
    monkeypatch.setattr(ev, "run_sequence", fake_run)
    return calls


def test_eval_command_writes_metrics_and_plots(tmp_path, patched_eval, capsys):
    from slam.cli import main

    root = tmp_path / "data"
    write_tum_sequence(root / "seq_a", curve_poses(12))
    write_tum_sequence(root / "seq_nogt", None)
    (root / "notes.txt").write_text("not a sequence")
    out = tmp_path / "out"
    rc = main(["eval", str(root), "--out", str(out), "--methods", "classical,oracle", "--no-progress",
               "ba.iters=3", "correspondence=ignored", "eval.outputs.fuse.min_views=1", "eval.plot=true"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "seq_nogt: no ground truth" in text and "| sequence | method | ATE RMSE [m]" in text
    assert [c[:2] for c in patched_eval] == [("seq_a", "classical"), ("seq_a", "oracle")]
    assert patched_eval[0][2] == ["ba.iters=3", "correspondence=classical"]

    rows = json.loads((out / "metrics.json").read_text())
    assert [(r["sequence"], r["method"]) for r in rows] == [("seq_a", "classical"), ("seq_a", "oracle")]
    for r in rows:
        for key in ("sequence", "method", "ate_rmse_m", "rpe_trans_m", "rpe_rot_deg", "tracked_fraction", "fps",
                    "wall_s", "peak_rss_mb", "path_length_m", "ate_pct_path", "focal_error"):
            assert key in r, key
        assert 0.005 < r["ate_rmse_m"] < 0.03  # 1 cm noise per axis
        assert r["tracked_fraction"] == 1.0 and r["fps"] == 20.0 and r["peak_rss_mb"] == 123.0
        assert r["focal_error"] == pytest.approx(0.1)
    assert (out / "seq_a.png").read_bytes()[:4] == b"\x89PNG"
    for m in ("classical", "oracle"):
        d = out / "seq_a" / m
        assert {"trajectory.txt", "keyframes.npz", "points.ply", "summary.json"} <= {p.name for p in d.iterdir()}


def test_eval_command_single_sequence_and_no_ground_truth(tmp_path, patched_eval):
    from slam.cli import main

    seq = write_tum_sequence(tmp_path / "one", curve_poses(12))
    out = tmp_path / "out"
    assert main(["eval", "--no-progress", str(seq), "input.max_frames=8", "--out", str(out),
                 "eval.outputs.write=false"]) == 0
    rows = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 1 and rows[0]["method"] == "classical"  # the run config's correspondence
    assert rows[0]["frames"] == 8  # frames selected by the run config's input node
    assert not (out / "one").exists()

    nogt = write_tum_sequence(tmp_path / "nogt", None)
    assert main(["eval", str(nogt), "--out", str(tmp_path / "out2"), "--no-progress"]) == 2
    with pytest.raises(InputError):
        from slam.commands.evaluate import find_sequences

        find_sequences(tmp_path / "does_not_exist", {})


# ---------------------------------------------------------------------------- COLMAP baseline
def render_planes(T_wc: np.ndarray, K: tuple[float, float, float, float], W: int, H: int) -> np.ndarray:
    """Ray-cast three textured rectangles (a wall, a box face, a floor) seen from ``T_wc``."""
    import cv2
    import skimage.data as skd

    quads = [  # corner, axis u, axis v, size u, size v, texture
        (np.array([-6.0, -4.0, 6.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 12.0, 8.0, skd.astronaut()),
        (np.array([-1.5, -1.0, 3.5]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 2.0, 2.5, skd.coffee()),
        (np.array([-4.0, 1.5, 0.5]), np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), 8.0, 5.5, skd.chelsea()),
    ]
    fx, fy, cx, cy = K
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1) @ T_wc[:3, :3].T
    c = T_wc[:3, 3]
    best = np.full((H, W), np.inf)
    out = np.zeros((H, W, 3), np.float32)
    for o, a, b, su, sv, tex in quads:
        n = np.cross(a, b)
        denom = d @ n
        t = ((o - c) @ n) / np.where(np.abs(denom) > 1e-9, denom, np.nan)
        X = c + d * t[..., None]
        pu, pv = (X - o) @ a / su, (X - o) @ b / sv
        hit = (t > 0) & (pu >= 0) & (pu <= 1) & (pv >= 0) & (pv <= 1) & (t < best)
        th, tw = tex.shape[:2]
        mx = np.nan_to_num(pu * (tw - 1)).astype(np.float32)
        my = np.nan_to_num(pv * (th - 1)).astype(np.float32)
        col = cv2.remap(tex.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out[hit], best[hit] = col[hit], t[hit]
    return np.clip(out, 0, 255).astype(np.uint8)


def test_colmap_baseline_on_rendered_sequence():
    pytest.importorskip("pycolmap")
    from slam.eval.colmap_baseline import ColmapOptions, run_colmap

    n, W, H = 10, 480, 360
    s = np.linspace(0.0, 1.0, n)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3], T[:, 1, 3], T[:, 2, 3] = -0.6 + 1.2 * s, 0.1 * np.sin(3 * s), 0.3 * s
    T[:, :3, :3] = Rotation.from_euler("y", (-4 + 8 * s)[:, None], degrees=True).as_matrix()
    K = Intrinsics(375.0, 375.0, (W - 1) / 2, (H - 1) / 2, W, H)
    frames = [Frame(k, 0.1 * k, render_planes(T[k], tuple(K.as_array()), W, H), K) for k in range(n)]
    # at a processing resolution of 2/3 of the input: the intrinsics are scaled with the frames
    res = run_colmap(frames, K, size=(320, 240), options=ColmapOptions(num_threads=2, timeout_s=120, max_runtime_s=60))
    assert res.registered.sum() >= 8 and res.registered_fraction >= 0.8
    assert np.isnan(res.poses[~res.registered]).all()
    assert res.image_size == (320, 240)
    np.testing.assert_allclose(res.intrinsics, K.scaled(320, 240).as_array(), atol=1e-6)  # held fixed
    m = compute_metrics(res.timestamps, res.poses, 0.1 * np.arange(n), T, tracked=res.registered)
    assert m["ate_pct_path"] < 2.0
    assert res.wall_s > 0 and res.peak_rss_mb > 0 and res.num_points > 100


def test_eval_command_with_colmap(tmp_path, patched_eval, capsys):
    """``--with-colmap`` on a rendered TUM-layout sequence: a COLMAP row next to the method's."""
    import cv2

    from slam.cli import main

    n, W, H = 10, 320, 240
    s = np.linspace(0.0, 1.0, n)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3], T[:, 1, 3], T[:, 2, 3] = -0.6 + 1.2 * s, 0.1 * np.sin(3 * s), 0.3 * s
    T[:, :3, :3] = Rotation.from_euler("y", (-4 + 8 * s)[:, None], degrees=True).as_matrix()
    root = tmp_path / "render"
    (root / "rgb").mkdir(parents=True)
    stamps = 50.0 + 0.1 * np.arange(n)
    K = (250.0, 250.0, (W - 1) / 2, (H - 1) / 2)
    for k in range(n):
        cv2.imwrite(str(root / "rgb" / f"{k}.png"), cv2.cvtColor(render_planes(T[k], K, W, H), cv2.COLOR_RGB2BGR))
    (root / "rgb.txt").write_text("".join(f"{t:.6f} rgb/{k}.png\n" for k, t in enumerate(stamps)))
    (root / "calib.txt").write_text(" ".join(str(v) for v in K) + "\n")
    write_tum(root / "groundtruth.txt", stamps, T)
    out = tmp_path / "out"
    assert main(["eval", str(root), "--out", str(out), "--with-colmap", "--no-progress",
                 "eval.colmap.timeout_s=120"]) == 0
    rows = {r["method"]: r for r in json.loads((out / "metrics.json").read_text())}
    assert set(rows) == {"classical", "colmap"}
    c = rows["colmap"]
    assert c["tracked_fraction"] >= 0.8 and c["ate_pct_path"] < 2.0 and c["peak_rss_mb"] > 0 and c["fps"] > 0
    assert (out / "render" / "colmap" / "trajectory.txt").is_file() and (out / "render.png").is_file()
    assert "| render | colmap |" in capsys.readouterr().out


def test_eval_command_stops_after_an_interrupted_run(tmp_path, patched_eval, monkeypatch):
    import slam.commands.evaluate as ev
    from slam.cli import main

    inner = ev.run_sequence

    def interrupted_run(sequence, cfg, *, progress=True):
        recon = inner(sequence, cfg, progress=progress)
        recon.interrupted = True
        return recon

    monkeypatch.setattr(ev, "run_sequence", interrupted_run)
    root = tmp_path / "data"
    write_tum_sequence(root / "a", curve_poses(12))
    write_tum_sequence(root / "b", curve_poses(12))
    out = tmp_path / "out"
    assert main(["eval", str(root), "--out", str(out), "--methods", "classical,oracle", "--no-progress"]) == 130
    rows = json.loads((out / "metrics.json").read_text())
    assert [(r["sequence"], r["method"], r["interrupted"]) for r in rows] == [("a", "classical", True)]
    assert json.loads((out / "a" / "classical" / "summary.json").read_text())["interrupted"] is True
