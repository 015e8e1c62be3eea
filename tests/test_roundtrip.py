"""Round trips: generate a world -> write each layout with `slam synth`'s writers -> read it back
with the readers (format detected from the path) -> same poses, intrinsics, images and depth."""
from __future__ import annotations

import numpy as np
import pytest

from slam.data.detect import detect_kind, open_sequence
from slam.data.synthetic import make_world
from slam.data.synthetic.writers import write_sequence


@pytest.fixture(scope="module")
def world():
    return make_world(seed=5, scene="table", motion="handheld", frames=12, width=96, height=72, focal=80.0)


def _check_poses(seq, world, atol):
    assert seq.gt_poses is not None and len(seq) == len(world)
    est = seq.gt_poses
    ok = np.isfinite(est).all(axis=(1, 2))
    assert ok.mean() > 0.9
    # same relative motion (readers may re-express the world frame): compare T_0^-1 T_k
    rel_e = np.linalg.inv(est[ok][0]) @ est[ok]
    rel_g = np.linalg.inv(world.gt_poses[ok][0]) @ world.gt_poses[ok]
    assert np.allclose(rel_e, rel_g, atol=atol)


def _check_intrinsics(seq, world):
    K, G = seq.intrinsics, world.intrinsics
    assert K is not None and (K.width, K.height) == (G.width, G.height)
    assert np.allclose([K.fx, K.fy, K.cx, K.cy], [G.fx, G.fy, G.cx, G.cy], atol=1e-4)


def test_tartanair_roundtrip(world, tmp_path):
    out = write_sequence(world, tmp_path / "ta", "tartanair")
    assert detect_kind(out) == "tartanair"
    seq = open_sequence(out)
    _check_intrinsics(seq, world)
    _check_poses(seq, world, 1e-5)
    f = seq[3]
    assert np.array_equal(f.image, world[3].image)
    assert np.allclose(f.depth, world.depth(3), atol=1e-5)


def test_euroc_roundtrip(world, tmp_path):
    out = write_sequence(world, tmp_path / "eu", "euroc")
    assert detect_kind(out) == "euroc"
    seq = open_sequence(out)
    _check_intrinsics(seq, world)
    _check_poses(seq, world, 1e-4)  # ground truth interpolated from a 200 Hz body trajectory through T_BS
    assert np.array_equal(seq[2].image, world[2].image)


def test_video_roundtrip(world, tmp_path):
    out = write_sequence(world, tmp_path / "vid", "video")
    assert detect_kind(out) == "video"
    seq = open_sequence(out)
    _check_intrinsics(seq, world)
    _check_poses(seq, world, 1e-6)
    diff = np.abs(seq[5].image.astype(float) - world[5].image.astype(float)).mean()
    assert diff < 6.0  # lossy H.264 (crf 18)
