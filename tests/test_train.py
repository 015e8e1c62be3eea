"""Training pipeline: clips, differentiable BA, the three losses, the trainer, `slam train` and `slam adapt`."""
from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pypose as pp
import pytest
import torch

from slam.ba.dense_ba import DenseBA, LMOptions, ba_steps
from slam.ba.synthetic import make_problem
from slam.cli import main
from slam.geometry.projective import project_edges
from slam.net import CorrNet, NetConfig, load_checkpoint, save_checkpoint
from slam.train.data import ClipOptions, ClipStream, collate, graph_edges
from slam.train.unroll import (
    UnrollOptions,
    ba_finetune_loss,
    flow_loss,
    selfsup_loss,
    supervised_loss,
)

# tiny clips: 64 x 64 images (8 x 8 feature maps, the least 4 correlation levels allow), 3 frames, 4 edges
TINY = ClipOptions(frames=3, width=64, height=64, radius=1, seeds=(1000, 1003), world_frames=40, max_spacing=4,
                   min_flow=1.0, max_flow=8.0, world_reuse=1)
TINY_TRAIN = ["loss.flow_warmup=0.5", "data.width=64", "data.height=64", "data.frames=3", "data.radius=1", "data.world_frames=40",
              "data.max_spacing=4", "data.seeds=[1000,1003]", "loss.iters=2", "val.clips=1", "val.seeds=[9000,9001]",
              "log.every=1", "threads=1"]


@pytest.fixture(scope="module")
def clips():
    stream = ClipStream(replace(TINY, dynamic_prob=1.0))
    return [stream.batch(b)[0] for b in range(2)]


def test_clip_shapes_and_labels_are_consistent(clips):
    c = clips[0]
    N, H, W, h, w = 3, 64, 64, 8, 8
    E = len(c.ii)
    assert E == 4 and set(zip(c.ii.tolist(), c.jj.tolist())) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    assert c.images.shape == (N, H, W, 3) and c.images.dtype == np.uint8
    assert c.poses.shape == (N, 4, 4) and c.disps.shape == (N, h, w) and c.dynamic.shape == (N, h, w)
    assert c.target.shape == (E, h, w, 2) and c.target_valid.shape == (E, h, w)
    assert c.flow.shape == (E, H, W, 2) and c.flow_valid.shape == (E, H, W)
    assert c.meta["seed"] >= 1000  # training worlds never use evaluation (100-199) or test seeds
    assert c.dynamic.max() > 0  # dynamic world: the motion head has positives
    b = collate(clips[:1])
    assert b.images.shape == (N, 3, H, W) and b.poses.shape == (N, 7) and b.fixed.tolist() == [True, True, False]
    assert abs(float(torch.quantile(b.disps[b.disps > 0], 0.5)) - 1.0) < 1e-5  # normalised scale
    # the labels agree with the geometry: GT poses and inverse depths reproject onto the GT targets
    pr = project_edges(pp.SE3(b.poses.double()), b.disps.double(), b.K.double(), b.ii, b.jj)
    ok = (b.target_valid > 0.5) & (b.dynamic[b.ii] == 0) & (b.disps[b.ii] > 0) & pr.valid
    assert ok.sum() > 20
    err = (pr.coords.float() - b.target).norm(dim=-1)[ok]
    assert err.median() < 0.05, err.median()


def test_graph_edges():
    ii, jj = graph_edges(4, 2)
    assert len(ii) == 10 and all(1 <= abs(a - b) <= 2 for a, b in zip(ii, jj))


def test_differentiable_ba_matches_lm_step_and_has_gradients():
    p = make_problem(4, None, 6, 8, noise_px=0.3, seed=1, dtype=torch.float64)
    lam = 1e-3
    opts = LMOptions(iters=1, adaptive=False, lambda_init=lam)
    lm = DenseBA(p.ii, p.jj, p.target, p.weight, 4, fixed=2, options=opts).run(p.poses_init, p.disps_init, p.K_init)
    target = p.target.clone().requires_grad_(True)
    weight = p.weight.clone().requires_grad_(True)
    eta = torch.full_like(p.disps_init, 1e-3).requires_grad_(True)
    P, d = ba_steps(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, target, weight, fixed=2, iters=1, lam=lam,
                    options=opts)
    assert torch.allclose(P.tensor(), lm.poses.tensor(), atol=1e-12) and torch.allclose(d, lm.disps, atol=1e-12)
    # gradients reach targets, weights and the depth damping, and match central differences
    P2, d2 = ba_steps(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, target, weight, fixed=2, iters=2, eta=eta)
    w7 = torch.linspace(0.5, 1.5, 7, dtype=torch.float64)

    def f(t, wt, e):
        Q, dd = ba_steps(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, t, wt, fixed=2, iters=2, eta=e)
        return (Q.tensor() * w7).sum() + (dd ** 2).sum()

    loss = (P2.tensor() * w7).sum() + (d2 ** 2).sum()
    grads = torch.autograd.grad(loss, (target, weight, eta))
    g = torch.Generator().manual_seed(0)
    for x, gx, idx in zip((target, weight, eta), grads, range(3)):
        assert torch.isfinite(gx).all() and gx.abs().sum() > 0
        v = torch.randn(x.shape, generator=g, dtype=x.dtype)
        args_p = [target.detach(), weight.detach(), eta.detach()]
        args_m = list(args_p)
        args_p[idx] = args_p[idx] + 1e-6 * v
        args_m[idx] = args_m[idx] - 1e-6 * v
        with torch.no_grad():
            num = (f(*args_p) - f(*args_m)) / 2e-6
        assert abs(float((gx * v).sum()) - float(num)) < 1e-4 * max(1.0, abs(float(num)))


def _tiny_model() -> CorrNet:
    torch.manual_seed(0)
    return CorrNet(NetConfig()).train()


@pytest.mark.parametrize("mode", ["supervised", "flow", "selfsup", "ba"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(clips, mode):
    torch.set_num_threads(1)
    model = _tiny_model()
    batch = collate(clips[1:2])
    uo = UnrollOptions(iters=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_of():
        if mode == "supervised":
            return supervised_loss(model, batch, uo, torch.Generator().manual_seed(0))
        if mode == "flow":
            return flow_loss(model, batch, uo)
        if mode == "selfsup":
            return selfsup_loss(model, batch, uo)
        return ba_finetune_loss(model, batch, uo, solution=(batch.poses, batch.disps))

    losses = []
    for _ in range(5):
        loss, metrics = loss_of()
        assert torch.isfinite(loss) and "loss" in metrics
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses
    if mode == "ba":  # the unlabelled variant (the network's own converged BA) runs too
        loss, m = ba_finetune_loss(model, batch, uo)
        assert torch.isfinite(loss) and m["ba_res"] >= 0


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_slam_train_writes_outputs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), "--quiet", "steps=2", *TINY_TRAIN])
    assert rc == 0, capsys.readouterr().err
    for name in ("checkpoint.pt", "train_state.pt", "metrics.csv", "summary.json", "loss.png"):
        assert (out / name).is_file(), name
    _, prov = load_checkpoint(out / "checkpoint.pt")
    assert prov["steps"] == 2 and prov["extra"]["mode"] == "supervised"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 2 and "dis_full_epe" in summary["val"] and "net_full_epe" in summary["val"]
    assert [int(r["step"]) for r in _read_csv(out / "metrics.csv")] == [1, 2]
    # a rerun with a longer schedule continues at step 2 (same optimiser state) and appends
    rc = main(["train", "--out", str(out), "--quiet", "steps=3", "mode=supervised", *TINY_TRAIN, "val.clips=0"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] and summary["step"] == 3 and summary["steps_this_run"] == 1
    assert [int(r["step"]) for r in _read_csv(out / "metrics.csv")] == [1, 2, 3]
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["step"] == 3 and state["optimizer"]["state"]  # Adam moments restored and carried on
    assert load_checkpoint(out / "checkpoint.pt")[1]["steps"] == 3


def test_slam_train_bad_options(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "a"), "mode=nonsense", "steps=1"]) == 2
    assert "unknown mode" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "b"), "val.seeds=[1000,1001]", "steps=1"]) == 2
    err = capsys.readouterr().err
    assert "overlap" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    out = tmp_path_factory.mktemp("video")
    # 10 fps: enough motion in 14 frames for the classical system to make keyframes (phase 2 of adapt)
    assert main(["synth", str(out), "--frames", "14", "--size", "128x96", "--seed", "3", "--fps", "10", "--quiet"]) == 0
    return out / "video.mp4"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    save_checkpoint(path, _tiny_model(), command="test")
    return path


def test_slam_adapt_writes_loadable_weights(tiny_video, weights, tmp_path, capsys):
    out = tmp_path / "adapted.pt"
    rc = main(["adapt", str(tiny_video), "--weights", str(weights), "--out", str(out), "--time", "6", "--quiet",
               "image.pixels=12288", "loss.iters=2", "clips.frames=3"])
    assert rc == 0, capsys.readouterr().err
    model, prov = load_checkpoint(out)
    extra = prov["extra"]
    assert extra["note"] == f"adapted from {weights} on {tiny_video}"
    # selfsup_share is 0 by default: BA fine-tuning only
    assert extra["adapt"]["steps"]["selfsup"] == 0 and extra["adapt"]["steps"]["ba"] >= 1
    assert extra["adapt"]["resolution"] == [128, 96]
    base, _ = load_checkpoint(weights)
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert changed



def test_slam_adapt_runs_both_phases_when_asked(tiny_video, weights, tmp_path, capsys):
    """`selfsup_share` above 0: self-supervised pairs first (at least one step), then BA fine-tuning."""
    out = tmp_path / "adapted.pt"
    rc = main(["adapt", str(tiny_video), "--weights", str(weights), "--out", str(out), "--time", "4", "--quiet",
               "image.pixels=12288", "loss.iters=2", "clips.frames=3", "selfsup_share=0.25"])
    assert rc == 0, capsys.readouterr().err
    steps = load_checkpoint(out)[1]["extra"]["adapt"]["steps"]
    assert steps["selfsup"] >= 1 and steps["ba"] >= 1

def test_slam_adapt_bad_inputs(tiny_video, weights, tmp_path, capsys):
    rc = main(["adapt", str(tmp_path / "missing.mp4"), "--weights", str(weights), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.mp4" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    rc = main(["adapt", str(tiny_video), "--weights", str(bad), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "corrupt.pt" in err and len(err.strip().splitlines()) == 1
    rc = main(["adapt", str(tiny_video), "--out", str(tmp_path / "o.pt")])
    assert rc == 2 and "--weights" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()
