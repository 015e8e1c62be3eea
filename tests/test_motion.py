"""Motion-probability maps (slam.system.motion): the residual mixture, pooling, carrying
maps to non-keyframes, their effect on tracking a dynamic world, the mask outputs and
the motion IoU of the evaluation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from slam.cli import main as cli
from slam.config import load_config
from slam.data.synthetic import make_world
from slam.eval.metrics import compute_metrics, find_dynamic_masks, motion_iou
from slam.system.motion import MotionOptions, pool_per_frame, residual_motion, warp_motion
from slam.system.runner import run_sequence


def test_residual_mixture_marks_large_residuals():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(2, 20, 30, 2, generator=g).mul(0.4).norm(dim=-1)  # static: 2-D Gaussian, sigma 0.4 px
    r[:, 5:10, 5:12] += 3.0                                           # a moving block: 3 px off
    valid = torch.ones_like(r, dtype=torch.bool)
    valid[1, 0] = False
    p = residual_motion(r, valid, MotionOptions())
    assert p[:, 5:10, 5:12].min() > 0.95
    static = torch.ones_like(r, dtype=torch.bool)
    static[:, 5:10, 5:12] = False
    assert p[static].mean() < 0.02
    assert (p[1, 0] == 0).all()  # no evidence, no motion


def test_pooling_and_dilation():
    prob = torch.zeros(3, 6, 8)
    prob[0, 2, 3] = 1.0
    prob[1, 2, 3] = 0.0
    valid = torch.ones_like(prob, dtype=torch.bool)
    ii = torch.tensor([0, 0, 2])
    m, has = pool_per_frame(prob, valid, ii, 3)
    assert has.tolist() == [True, False, True]
    assert m[0, 2, 3] == pytest.approx(0.5) and m[2].sum() == 0
    m1, _ = pool_per_frame(prob, valid, ii, 3, dilate=1)
    assert (m1[0, 1:4, 2:5] == 0.5).all() and m1[0].sum() == pytest.approx(4.5)


def test_warp_motion_follows_correspondences():
    h, w = 6, 8
    motion = torch.zeros(h, w)
    motion[1:3, 1:3] = 0.9
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    target = torch.stack([u + 3, v + 2], -1)  # the frame sees everything shifted by (3, 2)
    weight = torch.ones(h, w, 2)
    out = warp_motion(motion, target, weight)
    assert (out[3:5, 4:6] == pytest.approx(0.9)) and out.sum() == pytest.approx(0.9 * 4)
    assert warp_motion(motion, target, torch.zeros(h, w, 2)).sum() == 0


@pytest.fixture(scope="module")
def dynamic_world():
    # a quarter of the pixels belong to a moving object
    return make_world(seed=31, scene="table", motion="orbit", frames=48, width=160, height=120, focal=130.0,
                      dynamic=True, mover_size=0.5)


def _ate_pct(recon, world) -> float:
    m = compute_metrics(recon.timestamps, recon.poses, world.timestamps, world.gt_poses)
    return 100.0 * m["ate_rmse_m"] / m["path_length_m"]


def test_motion_map_lowers_dynamic_weights_and_error(dynamic_world):
    """With the oracle's motion output (ground-truth masks) pooled into the store's maps,
    BA and the filler ignore the moving object: the error at least halves."""
    w = dynamic_world
    base = ["correspondence=oracle", "image.pixels=19200", "frontend.filter_thresh=1.0"]
    on = run_sequence(w, load_config("run", base), progress=False)
    off = run_sequence(w, load_config("run", base + ["motion.weighting=false"]), progress=False)
    # the keyframe maps mark the moving pixels
    inter = union = 0
    for k, f in enumerate(on.kf_indices):
        gt = w.dynamic_mask(int(f))
        pred = cv2.resize(on.kf_motion[k], (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5
        inter += (pred & gt).sum()
        union += (pred | gt).sum()
    assert inter / union > 0.6
    assert on.motion.shape[0] == len(w) and on.motion.max() > 0.9
    assert _ate_pct(on, w) < 0.5 * _ate_pct(off, w)


def test_motion_masks_written_and_evaluated(tmp_path, dynamic_world):
    seq_dir = tmp_path / "dyn"
    assert cli(["synth", str(seq_dir), "--seed", "31", "--frames", "24", "--size", "160x120", "--scene", "table",
                "--motion", "orbit", "--dynamic", "--mover-size", "0.5", "--focal", "130", "--quiet"]) == 0
    out = tmp_path / "run"
    assert cli(["run", str(seq_dir), "--out", str(out), "--no-progress", "correspondence=oracle",
                "frontend.filter_thresh=1.0", "outputs.motion_masks=true"]) == 0
    files = sorted((out / "motion_masks").glob("*.png"))
    assert len(files) == 24
    m = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert m.shape == (120, 160) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    gt_files = find_dynamic_masks(seq_dir / "video.mp4", 24)
    assert gt_files is not None and len(gt_files) == 24
    pred = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) / 255.0 for f in files])
    assert motion_iou(pred, gt_files) > 0.6
    assert motion_iou(np.zeros_like(pred), gt_files) == 0.0
    assert find_dynamic_masks(seq_dir, 23) is None  # count mismatch


def test_bad_motion_mode_is_a_clear_error(tmp_path, capsys):
    rc = cli(["run", "--out", str(tmp_path / "r"), "--no-progress", "motion.mode=magic", "input.max_frames=5"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "motion.mode" in err and "Traceback" not in err
