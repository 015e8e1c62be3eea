"""Dense bundle adjustment: convergence, focal recovery, outliers, depth prior, gauge, precision."""
from __future__ import annotations

import pypose as pp
import pytest
import torch

from slam.ba.dense_ba import DenseBA, LMOptions, bundle_adjust
from slam.ba.synthetic import make_problem
from slam.geometry.lie import geodesic_errors


def errors(res, prob):
    rot, tr = geodesic_errors(res.poses, prob.poses_gt)
    return rot.max().item(), tr.max().item() / prob.scene_scale


def test_exact_targets_converge_to_machine_precision():
    p = make_problem(6, None, 20, 24, noise_px=0.0, outlier_fraction=0.1, focal_error=0.1, seed=3)
    res = bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, p.weight,
                        fixed=2, optimize_focal=True, options=LMOptions(iters=30))
    rot, tr = errors(res, p)
    assert rot < 1e-8 and tr < 1e-10
    assert abs(res.intrinsics[0].item() / p.K_gt[0].item() - 1) < 1e-10
    # depths are recovered where observed
    seen = torch.zeros_like(p.disps_gt, dtype=torch.bool)
    seen[p.ii] |= p.weight[..., 0] > 0
    assert torch.allclose(res.disps[seen], p.disps_gt[seen], rtol=1e-8)
    assert res.costs[-1] < 1e-12 * res.costs[0]


def test_noisy_problem_with_outliers_and_free_focal_meets_targets():
    """8 poses, dense edges, 0.5 px noise, 10 % gross outliers (weight 0), focal 20 % off.

    The errors that remain are the statistical floor of 0.5 px noise; at 96x128
    (1/8 of 768x1024) the issue's targets hold (see docs/benchmarks.md for seeds).
    """
    p = make_problem(8, None, 96, 128, noise_px=0.5, outlier_fraction=0.1, focal_error=0.2,
                     arc_step_deg=4.0, depth_range=(1.0, 10.0), seed=2)
    res = bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, p.weight,
                        fixed=2, optimize_focal=True, options=LMOptions(iters=20))
    rot, tr = errors(res, p)
    assert rot < 0.01, rot
    assert tr < 1e-3, tr
    assert abs(res.intrinsics[0].item() / p.K_gt[0].item() - 1) < 1e-3
    # the start was far off
    rot0, tr0 = geodesic_errors(p.poses_init, p.poses_gt)
    assert rot0.max() > 1.0


def test_outliers_are_ignored_only_through_weights():
    p = make_problem(6, None, 24, 32, noise_px=0.0, outlier_fraction=0.2, seed=4)
    ok = bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, p.weight,
                       fixed=2, options=LMOptions(iters=20))
    assert errors(ok, p)[0] < 1e-6
    # giving the outliers weight breaks the solution: the weights are what rejects them
    w_bad = p.weight.clone()
    w_bad[p.outliers] = 1.0
    bad = bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, w_bad,
                        fixed=2, options=LMOptions(iters=20))
    assert errors(bad, p)[0] > 100 * max(errors(ok, p)[0], 1e-9)


@pytest.mark.parametrize("kind,bound", [("cauchy", 0.05), ("huber", 0.2)])
def test_robust_loss_rejects_confident_outliers(kind, bound):
    """10 % gross outliers at full weight: least squares is pulled off by
    degrees, the robust loss (IRLS) keeps the solution near the truth
    (Cauchy, whose influence vanishes far out, much nearer than Huber)."""
    p = make_problem(6, None, 24, 32, noise_px=0.05, outlier_fraction=0.1, seed=4)
    w_bad = p.weight.clone()
    w_bad[p.outliers] = 1.0
    plain = bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, w_bad,
                          fixed=2, options=LMOptions(iters=20))
    robust = bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, w_bad,
                           fixed=2, options=LMOptions(iters=20, robust=kind, robust_px=0.2))
    assert errors(plain, p)[0] > 0.3
    assert errors(robust, p)[0] < bound
    # the costs the solver accepted are the robust loss, and they decrease
    assert all(b <= a for a, b in zip(robust.costs, robust.costs[1:]))


def test_unknown_robust_loss_is_an_error():
    p = make_problem(3, None, 8, 10, seed=1)
    with pytest.raises(ValueError, match="robust"):
        bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, p.weight,
                      options=LMOptions(iters=2, robust="tukey"))


def test_depth_prior_pulls_unobserved_depths_and_not_observed_ones():
    p = make_problem(5, None, 16, 20, noise_px=0.0, outlier_fraction=0.0, disp_noise=0.0, seed=5)
    weight = p.weight.clone()
    weight[:, :8] = 0.0  # top half of every frame unobserved
    prior = torch.full_like(p.disps_gt, 0.33)
    res = bundle_adjust(p.poses_gt, p.disps_gt, p.K_gt, p.ii, p.jj, p.target, weight,
                        fixed=5, disp_prior=prior, prior_weight=1.0, options=LMOptions(iters=5))
    top = res.disps[:, :8]
    assert torch.allclose(top, prior[:, :8], atol=1e-6)
    # observed pixels stay at the geometric solution (the prior is weak against 2D evidence)
    bottom_seen = torch.zeros_like(p.disps_gt, dtype=torch.bool)
    bottom_seen[p.ii] |= weight[..., 0] > 0
    err = (res.disps[bottom_seen] - p.disps_gt[bottom_seen]).abs().max()
    pull = (prior[bottom_seen] - p.disps_gt[bottom_seen]).abs().max()
    assert err < 0.05 * pull


def test_gauge_fixed_poses_untouched():
    p = make_problem(6, None, 20, 24, seed=6)
    fixed = [0, 3]
    res = bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, p.weight,
                        fixed=fixed, options=LMOptions(iters=5))
    assert torch.equal(res.poses.tensor()[fixed], p.poses_init.tensor()[fixed])
    moved = [1, 2, 4, 5]
    assert (res.poses.tensor()[moved] - p.poses_init.tensor()[moved]).abs().max() > 1e-4
    # inputs are not modified in place
    p2 = make_problem(6, None, 20, 24, seed=6)
    assert torch.equal(p.poses_init.tensor(), p2.poses_init.tensor())


def test_inverse_depths_stay_positive():
    p = make_problem(4, None, 12, 16, noise_px=0.0, seed=7)
    disps = p.disps_init.clone()
    disps[:, :4] = 1e-6
    opts = LMOptions(iters=3, min_disp=1e-3)
    res = bundle_adjust(p.poses_init, disps, p.K_init, p.ii, p.jj, p.target, p.weight, fixed=1, options=opts)
    assert (res.disps >= 1e-3).all()


def test_float32_and_float64_agree():
    p = make_problem(6, None, 24, 32, noise_px=0.3, outlier_fraction=0.1, focal_error=0.1, seed=8)
    res = {}
    for dt in (torch.float32, torch.float64):
        c = {k: (v.to(dt) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in vars(p).items()}
        r = bundle_adjust(pp.SE3(c["poses_init"]), c["disps_init"], c["K_init"], p.ii, p.jj, c["target"],
                          c["weight"], fixed=2, optimize_focal=True, options=LMOptions(iters=15))
        assert r.poses.dtype == dt and r.disps.dtype == dt
        res[dt] = r
    a, b = res[torch.float32], res[torch.float64]
    rot, tr = geodesic_errors(pp.SE3(a.poses.tensor().double()), b.poses)
    assert rot.max() < 2e-3 and tr.max() < 1e-4 * p.scene_scale
    assert abs(a.intrinsics[0].item() - b.intrinsics[0].item()) < 1e-4 * b.intrinsics[0].item()


def test_sparse_graph_and_cost_decreases_monotonically():
    p = make_problem(25, 100, 24, 32, noise_px=0.5, seed=9, dtype=torch.float32)
    ba = DenseBA(p.ii, p.jj, p.target, p.weight, 25, fixed=2, options=LMOptions(iters=8))
    res = ba.run(p.poses_init, p.disps_init, p.K_init)
    assert all(c1 <= c0 for c0, c1 in zip(res.costs, res.costs[1:]))
    assert res.costs[-1] < 0.1 * res.costs[0]


def test_rejects_self_edges():
    p = make_problem(3, None, 8, 8, seed=1)
    with pytest.raises(ValueError):
        DenseBA(torch.tensor([0]), torch.tensor([0]), p.target[:1], p.weight[:1], 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    p = make_problem(6, None, 20, 24, seed=10, device="cuda")
    r = bundle_adjust(p.poses_init, p.disps_init, p.K_init, p.ii, p.jj, p.target, p.weight, fixed=2)
    assert r.poses.device.type == "cuda"
    q = make_problem(6, None, 20, 24, seed=10)
    s = bundle_adjust(q.poses_init, q.disps_init, q.K_init, q.ii, q.jj, q.target, q.weight, fixed=2)
    assert torch.allclose(r.poses.tensor().cpu(), s.poses.tensor(), atol=1e-8)


def test_weak_focal_is_held_and_strong_focal_estimated():
    """The focal's marginal std decides: a problem that constrains it is solved, one
    judged too weak (threshold below its std) keeps the initial focal; steps and bounds
    keep the focal positive and plausible."""
    p = make_problem(6, None, 24, 32, noise_px=0.3, outlier_fraction=0.1, focal_error=0.1, seed=8)
    args = (p.ii, p.jj, p.target, p.weight, 6)
    free = DenseBA(*args, fixed=2, optimize_focal=True, options=LMOptions(iters=15)).run(
        p.poses_init, p.disps_init, p.K_init)
    assert 0 < free.focal_std < LMOptions().focal_max_std and not free.focal_held
    assert abs(free.intrinsics[0].item() / p.K_gt[0].item() - 1) < 0.05
    held = DenseBA(*args, fixed=2, optimize_focal=True,
                   options=LMOptions(iters=15, focal_max_std=0.1 * free.focal_std)).run(
        p.poses_init, p.disps_init, p.K_init)
    assert held.focal_held and held.intrinsics[0].item() == p.K_init[0].item()
    # bounds: a focal range that excludes the truth stops the estimate at its edge, which is
    # not trusted: the problem is solved again with the focal held
    side = max(p.disps_init.shape[-2:])
    lo = 1.2 * p.K_gt[0].item() / side
    capped = DenseBA(*args, fixed=2, optimize_focal=True,
                     options=LMOptions(iters=15, focal_range=(lo, 5.0))).run(p.poses_init, p.disps_init, p.K_init)
    assert capped.focal_held and capped.intrinsics[0].item() == p.K_init[0].item()
