"""Correspondence sources against the exact flow of a synthetic world."""
from __future__ import annotations

import numpy as np
import torch

from slam.corr.classical import ClassicalFlow, ClassicalOptions
from slam.corr.oracle import OracleFlow
from slam.data.synthetic import make_world


def _pair_frames(src, world, i: int, j: int):
    return [src.prepare(i, world[i].image)], [src.prepare(j, world[j].image)]


def test_refine_moves_a_perturbed_start_onto_the_true_correspondence():
    """ClassicalFlow.refine (Lucas-Kanade from the current reprojection) recovers the exact
    targets from a start 1.5 image px off on the pixels it trusts, with almost no gross errors."""
    world = make_world(seed=5, scene="room", motion="handheld", frames=12, width=320, height=240, focal=260.0)
    exact = OracleFlow(world, (320, 240), stride=8)
    src = ClassicalFlow(ClassicalOptions())
    fi, fj = _pair_frames(src, world, 0, 8)
    truth = exact.update(fi, fj, None)
    visible = truth.weight[0, ..., 0] > 0
    rng = np.random.default_rng(0)
    start = truth.target + torch.from_numpy(rng.normal(0.0, 1.5 / 8, truth.target.shape).astype(np.float32))
    out = src.refine(fi, fj, start)
    assert out.target.shape == truth.target.shape and out.weight.shape == truth.weight.shape
    trusted = (out.weight[0, ..., 0] > 0.5) & visible
    assert trusted.float().mean() > 0.5  # most of the textured, visible pixels are measured
    err = (out.target[0] - truth.target[0]).norm(dim=-1)[trusted] * 8  # image px
    start_err = (start[0] - truth.target[0]).norm(dim=-1)[trusted] * 8
    assert float(err.median()) < 0.25 < float(start_err.median())
    assert float((err > 2.0).float().mean()) < 0.01
    # weights are zero where the track left the image or failed
    assert float(out.weight.min()) >= 0.0 and float(out.weight.max()) <= 1.0


def test_refine_is_deterministic_and_keeps_untrusted_pixels_at_zero_weight():
    world = make_world(seed=6, scene="table", motion="orbit", frames=6, width=160, height=120, focal=130.0)
    exact = OracleFlow(world, (160, 120), stride=8)
    src = ClassicalFlow(ClassicalOptions())
    fi, fj = _pair_frames(src, world, 0, 5)
    start = exact.update(fi, fj, None).target
    a, b = src.refine(fi, fj, start), src.refine(fi, fj, start)
    assert torch.equal(a.target, b.target) and torch.equal(a.weight, b.weight)
    lost = a.weight[0, ..., 0] == 0
    # a pixel started outside the frame can never be trusted
    far = start.clone()
    far[..., 0] += 1000.0
    assert float(src.refine(fi, fj, far).weight.max()) == 0.0
    assert lost.sum() < lost.numel()


def test_long_pair_without_an_estimate_starts_from_the_chained_flow():
    """With no motion estimate (identity reprojection, as at the start of the initialisation), a pair
    across a large motion starts DIS from the composition of the kept flows through the frame in
    between, and is then as accurate as the consecutive pairs; measured alone it is not."""
    world = make_world(seed=11, scene="room", motion="orbit", frames=60, width=320, height=240, focal=260.0)
    exact = OracleFlow(world, (320, 240), stride=8)
    idx = (0, 12, 24)  # 17 and 18 image px apart; 35 px across the pair

    def err(src, a, b) -> float:
        fa, fb = src.prepare(a, world[a].image), src.prepare(b, world[b].image)
        truth = exact.update([fa], [fb], None)
        h, w = truth.target.shape[1:3]
        grid = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy"), -1).float()[None]
        out = src.update([fa], [fb], grid)  # identity reprojection: no estimate
        ok = (truth.weight[0, ..., 0] > 0) & (out.weight[0, ..., 0] > 0.5)
        return float(((out.target[0] - truth.target[0]).norm(dim=-1)[ok] * 8).median())

    alone = err(ClassicalFlow(ClassicalOptions()), idx[0], idx[2])
    src = ClassicalFlow(ClassicalOptions())
    steps = [err(src, idx[0], idx[1]), err(src, idx[1], idx[2])]
    chained = err(src, idx[0], idx[2])
    assert max(steps) < 1.0 and chained < 1.0 < alone


def test_workers_measure_as_one_thread_would():
    """`workers=2` measures independent pairs (DIS, Lucas-Kanade) on two threads: the results, the
    DIS work and the flows kept for later edges are those of measuring the edges one by one; a pair
    and its reverse share their two DIS fields, and an edge without an estimate chains kept flows."""
    world = make_world(seed=13, scene="clutter", motion="handheld", frames=20, width=160, height=120, focal=130.0)
    h, w = 15, 20
    grid = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy"), -1).float()
    exact = OracleFlow(world, (160, 120), stride=8)
    pairs = [(0, 3), (3, 0), (3, 6), (0, 6), (6, 3), (9, 12), (2, 7)]
    outs = []
    for workers in (1, 2):
        src = ClassicalFlow(ClassicalOptions(workers=workers))
        fr = {k: src.prepare(k, world[k].image) for k in range(13)}
        fi, fj = [fr[a] for a, _ in pairs], [fr[b] for _, b in pairs]
        coords = exact.update(fi, fj, None).target  # an estimate for every edge ...
        coords[3] = grid  # ... but (0, 6): none, so it starts from the flows through 3, chained
        first = src.update(fi, fj, coords)
        again = src.update(fi[::-1], fj[::-1], coords.flip(0))  # cached: no DIS work
        ref = src.refine(fi, fj, first.target)
        outs.append((first, again, ref, src.dis_calls, list(src._flows)))
        src.close()
    (f1, a1, r1, n1, k1), (f2, a2, r2, n2, k2) = outs
    assert torch.equal(f1.target, f2.target) and torch.equal(f1.weight, f2.weight)
    assert torch.equal(a1.target, f1.target.flip(0)) and torch.equal(a2.target, f2.target.flip(0))
    assert torch.equal(r1.target, r2.target) and torch.equal(r1.weight, r2.weight)
    assert n1 == n2 == 2 * 5  # five unordered pairs, two DIS fields each
    assert k1 == k2  # the same flows kept, in the same order
    truth = exact.update(fi, fj, None)
    ok = (f2.weight[..., 0] > 0.5) & (truth.weight[..., 0] > 0)
    err = (f2.target - truth.target).norm(dim=-1) * 8  # image px
    assert all(float(err[e][ok[e]].median()) < 1.0 for e in range(len(pairs)))


def test_motion_filter_flows_started_ahead():
    """`ahead` (the reader thread) starts each frame's DIS flow from the frame before on the workers;
    the motion filter then uses it instead of computing it: the same mean flows, and no DIS work left
    in the tracking thread; a keyframe that is not the frame before is measured on the spot."""
    world = make_world(seed=14, scene="room", motion="handheld", frames=10, width=160, height=120, focal=130.0)
    one = ClassicalFlow(ClassicalOptions(workers=1))
    two = ClassicalFlow(ClassicalOptions(workers=2))
    f1 = [one.prepare(k, world[k].image) for k in range(8)]
    f2 = [two.ahead(k, world[k].image) for k in range(8)]
    # keyframe 0 for frames 1-4, then frame 4 becomes the keyframe; frame 7 is measured from 5 (not the frame before)
    schedule = [(0, 1), (0, 2), (0, 3), (0, 4), (4, 5), (4, 6), (5, 7)]
    m1 = [one.mean_flow(f1[a], f1[b]) for a, b in schedule]
    m2 = [two.mean_flow(f2[a], f2[b]) for a, b in schedule]
    assert m1 == m2 and m1[3] > m1[0] > 0
    assert two._dis.calls == 1  # only (5, 7): every other flow was ready
    assert two.dis_calls == 7 + 1  # frames 1-7 from the frame before, ahead, and (5, 7)
    two.close()
    assert not two._ahead


def _grey(world, k: int) -> np.ndarray:
    import cv2

    return cv2.cvtColor(world[k].image, cv2.COLOR_RGB2GRAY)


def test_dis_calls_do_not_depend_on_earlier_calls():
    """OpenCV's DIS object starts a call without an initial flow from the last initial flow it was
    given; DISFlow's calls depend on their own inputs only, and a given initial flow is not modified."""
    from slam.corr.dis import DISFlow

    world = make_world(seed=12, scene="room", motion="handheld", frames=8, width=320, height=240, focal=260.0)
    a, b, c, d = (_grey(world, k) for k in (0, 2, 4, 7))
    fresh = DISFlow("medium").calc(a, b)
    dis = DISFlow("medium")
    init = np.full(a.shape + (2,), 5.0, np.float32)
    dis.calc(c, d, init)
    assert np.all(init == 5.0)  # the caller's initial flow is untouched
    assert np.array_equal(dis.calc(a, b), fresh)  # a zero start after an initialised call
    assert dis.calls == 2



def test_dis_refuses_an_initial_flow_of_the_wrong_shape():
    """OpenCV ignores a mis-shaped initial flow (and would reuse a stale one): DISFlow says so instead."""
    import pytest

    from slam.corr.dis import DISFlow

    a = np.zeros((24, 32), np.uint8)
    with pytest.raises(ValueError, match="initial flow"):
        DISFlow("ultrafast").calc(a, a, np.zeros((12, 16, 2), np.float32))
