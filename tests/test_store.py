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
