"""The keyframe store: snapshot and restore of its estimate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slam.corr.base import FrameData
from slam.system.store import KeyframeStore


def _store(n: int) -> KeyframeStore:
    st = KeyframeStore(10, (32, 24), 8, torch.tensor([30.0, 30.0, 15.5, 11.5]), focal_known=False)
    for k in range(n):
        st.append(FrameData(index=2 * k, image=np.zeros((24, 32, 3), np.uint8)), 0.1 * k,
                  torch.tensor([0.1 * k, 0, 0, 0, 0, 0, 1.0]), 0.5)
    return st


def test_restore_puts_back_the_snapshot_estimate():
    st = _store(3)
    st.focal_std, st.focal_held = 0.01, False
    snap = st.snapshot()
    # an attempt that changes every part of the estimate
    st.write(torch.arange(3), poses=torch.tensor([[1.0, 2, 3, 0, 0, 0, 1]]).expand(3, 7), disps=torch.full((3, 3, 4), 2.0),
             confidence=torch.ones(3, 3, 4), motion=torch.full((3, 3, 4), 0.7))
    st.intrinsics[0] = 99.0
    st.focal_std, st.focal_held = 0.5, True
    version = st.version
    st.restore(snap)
    assert torch.equal(st.poses[:3], snap.poses) and torch.equal(st.disps[:3], snap.disps)
    assert torch.equal(st.confidence[:3], snap.confidence) and torch.equal(st.motion[:3], snap.motion)
    assert float(st.intrinsics[0]) == 30.0 and (st.focal_std, st.focal_held) == (0.01, False)
    assert st.version > version and {0, 1, 2} <= st.changed
    # the snapshot holds copies: restoring did not tie the store to it
    st.disps[0] = 5.0
    assert float(snap.disps[0, 0, 0]) == 0.5


def test_restore_refuses_a_snapshot_of_other_keyframes():
    st = _store(3)
    snap = st.snapshot()
    st.remove(1)
    with pytest.raises(ValueError, match="other keyframes"):
        st.restore(snap)


def test_edges_cost_is_the_ba_cost_of_the_store_and_changes_nothing():
    """slam.system.optimize.edges_cost: the robust cost optimize_store's BA starts from (weights times
    1 - the motion map), without touching the store; a residual-free estimate costs nothing."""
    import pypose as pp

    from slam.ba.dense_ba import LMOptions
    from slam.geometry.projective import project_edges
    from slam.system.graph import Edges
    from slam.system.motion import MotionOptions
    from slam.system.optimize import edges_cost, optimize_store

    st = _store(3)
    ii, jj = torch.tensor([0, 1, 2, 1]), torch.tensor([1, 2, 1, 0])
    exact = project_edges(pp.SE3(st.poses[:3]), st.disps[:3], st.feature_intrinsics(), ii, jj).coords
    weight = torch.ones_like(exact)
    opt = LMOptions(robust="cauchy", robust_px=0.1, iters=1)
    motion = MotionOptions(weighting=True, mode="geometric")
    assert edges_cost(st, Edges(ii, jj, exact, weight), options=opt) == pytest.approx(0.0, abs=1e-9)
    target = exact + 0.3  # every residual 0.3 feature px in both coordinates
    st.write(torch.arange(3), motion=torch.full((3, 3, 4), 0.5))
    snap = st.snapshot()
    cost = edges_cost(st, Edges(ii, jj, target, weight), options=opt, motion=motion)
    assert torch.equal(st.poses[:3], snap.poses) and torch.equal(st.disps[:3], snap.disps)
    # Cauchy at 0.1 px: rho(s) = d^2 log(1 + s / d^2) per coordinate, times the weight 1 - 0.5
    per = 0.5 * 0.01 * np.log(1.0 + 0.09 / 0.01)
    assert cost == pytest.approx(per * exact[..., 0].numel() * 2, rel=1e-4)
    res = optimize_store(st, Edges(ii, jj, target, weight), fixed_below=1, options=opt, motion=motion)
    assert res.costs[0] == pytest.approx(cost, rel=1e-6)
