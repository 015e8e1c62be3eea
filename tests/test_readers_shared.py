"""Readers on the real data in ../shared/data (skipped when it is absent).

The TartanAir pose conversion is checked by reprojection: frame a's pixels,
back-projected with its depth and moved with ``inv(T_wc[b]) @ T_wc[a]``, must
land where frame b sees the same depth and colour.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slam.data.detect import detect_kind, open_sequence
from slam.data.tartanair import TartanAirSequence
from slam.data.video import VideoSequence
from slam.geometry.pose import invert, tq_to_matrix

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARTANAIR = SHARED / "tartanair-snippet"
CUBE = SHARED / "visp-cube" / "cube.mp4"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="module")
def tartanair() -> TartanAirSequence:
    return TartanAirSequence(need(TARTANAIR))


def reprojection(T_a: np.ndarray, T_b: np.ndarray, fa, fb, K, step: int = 4):
    """Project frame a's depth into frame b under camera-to-world poses T_a, T_b.

    Returns:
        ``(relative depth errors (M,), colour errors (M,), fraction of points landing in b)``
        over the points that land inside frame b in front of it.
    """
    H, W = fa.depth.shape
    v, u = np.mgrid[0:H:step, 0:W:step]
    z = fa.depth[v, u].astype(np.float64)
    X = np.stack([(u - K.cx) / K.fx * z, (v - K.cy) / K.fy * z, z, np.ones_like(z)], -1).reshape(-1, 4)
    Y = X @ (invert(T_b) @ T_a).T
    front = Y[:, 2] > 1e-3
    zb = np.where(front, Y[:, 2], 1.0)
    ub = np.round(K.fx * Y[:, 0] / zb + K.cx).astype(np.int64)
    vb = np.round(K.fy * Y[:, 1] / zb + K.cy).astype(np.int64)
    inside = front & (ub >= 0) & (ub < W) & (vb >= 0) & (vb < H) & (z.reshape(-1) > 0)
    if not inside.any():
        return np.array([np.inf]), np.array([np.inf]), 0.0
    db = fb.depth[vb[inside], ub[inside]].astype(np.float64)
    rel = np.abs(db - Y[inside, 2]) / np.maximum(db, 1e-6)
    ca = fa.image[v, u].reshape(-1, 3)[inside].astype(np.float64)
    cb = fb.image[vb[inside], ub[inside]].astype(np.float64)
    return rel, np.abs(ca - cb).mean(1), float(inside.mean())


def test_tartanair_snippet_layout(tartanair):
    assert detect_kind(TARTANAIR) == "tartanair"
    assert len(tartanair) == 189
    K = tartanair.intrinsics
    assert (K.fx, K.fy, K.cx, K.cy, K.size) == (320, 320, 320, 240, (640, 480))
    assert tartanair.gt_poses.shape == (189, 4, 4)
    np.testing.assert_allclose(tartanair.timestamps[:3], [0.0, 0.1, 0.2])
    for k in (0, 1, 4, 188):
        f = tartanair[k]
        assert f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8
        assert (f.depth is not None) == (k % 4 == 0)
        if f.depth is not None:
            assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
    # Rigid, right-handed poses.
    R = tartanair.gt_poses[:, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-6)
    sub = open_sequence(TARTANAIR, start=4, stride=4, max_frames=5)
    assert len(sub) == 5 and all(f.depth is not None for f in sub)


@pytest.mark.parametrize("a,b", [(0, 4), (40, 48), (100, 104)])
def test_tartanair_pose_convention_by_reprojection(tartanair, a, b):
    fa, fb, K = tartanair[a], tartanair[b], tartanair.intrinsics
    T = tartanair.gt_poses
    rel, col, frac = reprojection(T[a], T[b], fa, fb, K)
    assert frac > 0.5
    assert np.median(rel) < 0.05
    consistent = rel < 0.05  # visible in both (not occluded)
    assert consistent.mean() > 0.7
    colour = col[consistent].mean()

    # Wrong conventions are clearly worse: identity motion, raw NED poses, world-to-camera reading.
    ned = tq_to_matrix(np.loadtxt(TARTANAIR / "pose_left.txt"))
    for Ta, Tb in ((np.eye(4), np.eye(4)), (ned[a], ned[b]), (invert(T[a]), invert(T[b]))):
        rel_w, col_w, frac_w = reprojection(Ta, Tb, fa, fb, K)
        worse_depth = frac_w < 0.5 or np.median(rel_w) > 3 * max(np.median(rel), 0.005)
        worse_colour = frac_w < 0.5 or col_w.mean() > 1.3 * colour
        assert worse_depth and worse_colour


def test_visp_cube_video():
    path = need(CUBE)
    assert detect_kind(path) == "video" and detect_kind(path.parent) == "video"
    seq = open_sequence(path)
    assert isinstance(seq, VideoSequence) and len(seq) == 218 and seq.fps == pytest.approx(30.0)
    fx, fy, cx, cy = np.loadtxt(path.parent / "calib.txt")
    K = seq.intrinsics
    assert (K.fx, K.fy, K.cx, K.cy, K.size) == (fx, fy, cx, cy, (640, 480))
    n = 0
    for f in seq:
        assert f.image.shape == (480, 640, 3)
        n += 1
    assert n == 218
    np.testing.assert_allclose(seq.timestamps[-1], 217 / 30.0)
    last = seq[217].image
    first = seq[0].image  # backwards: reopens
    assert not np.array_equal(first, last)
    np.testing.assert_array_equal(seq[0].image, first)
    sub = VideoSequence(path, start=200, stride=5)
    assert sub.raw_indices == [200, 205, 210, 215]
    np.testing.assert_array_equal(sub[3].image, seq[215].image)
