"""Global BA started at the ground truth: how far do a source's correspondences pull it away?

    python tools/bench_gt_start.py SYNTH_DIR [--step K] [--weights MODE] [--max-error PX] [key=value ...]

Keyframes are every K-th frame of a `slam synth` world, with their true poses and inverse depths
(feature resolution, pixel centres); the run configuration's correspondence source (`correspondence=...`,
default classical) gives the edges of a global BA (temporal + proximity, `configs/run.yaml` backend
settings and `lm.*`), run three times for 12 iterations.  Printed: the keyframe ATE after each, in % of the
keyframe path (Sim(3)-aligned).  `--weights` isolates what the source gets wrong:

* `source` (default): the source's targets and weights;
* `true-targets`: the exact targets with the source's weights (is its coverage enough?);
* `clean`: the source's targets, weights zeroed where the target is more than `--max-error` feature px
  from the exact one (are a few gross errors to blame?).
"""
from __future__ import annotations

import argparse

import numpy as np
import pypose as pp
import torch
from evo.core.geometry import umeyama_alignment

from slam.config import load_config, lm_options
from slam.corr import make_source, synthetic_world_for
from slam.corr.base import EdgeUpdate
from slam.corr.oracle import OracleFlow
from slam.data.detect import open_sequence
from slam.system.backend import BackendOptions, global_ba
from slam.system.store import KeyframeStore


class _Mixed:
    """A correspondence source combining another source with the exact flow (see module doc)."""

    def __init__(self, source, exact: OracleFlow, mode: str, max_error: float) -> None:
        self.source, self.exact, self.mode, self.max_error = source, exact, mode, max_error

    def __getattr__(self, name):
        return getattr(self.source, name)

    def update(self, frames_i, frames_j, coords, state=None) -> EdgeUpdate:
        a = self.source.update(frames_i, frames_j, coords, state)
        if self.mode == "source":
            return a
        b = self.exact.update(frames_i, frames_j, coords, state)
        visible = b.weight > 0
        if self.mode == "true-targets":
            return EdgeUpdate(target=b.target, weight=a.weight * visible)
        err = (a.target - b.target).norm(dim=-1, keepdim=True)
        return EdgeUpdate(target=a.target, weight=a.weight * visible * (err < self.max_error))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("world")
    ap.add_argument("--step", type=int, default=12)
    ap.add_argument("--weights", choices=["source", "true-targets", "clean"], default="source")
    ap.add_argument("--max-error", type=float, default=0.5)
    args, overrides = ap.parse_known_args()  # the rest: run-config overrides (key=value)
    cfg = load_config("run", overrides)
    seq = open_sequence(args.world)
    world = synthetic_world_for(seq)
    W, H = world.intrinsics.width, world.intrinsics.height
    stride = int(cfg.correspondence.get("stride", 8))
    source = _Mixed(make_source(cfg.correspondence, seq, (W, H)), OracleFlow(world, (W, H), stride),
                    args.weights, args.max_error)
    K = world.intrinsics
    store = KeyframeStore(len(seq) // args.step + 1, (W, H), stride, torch.tensor([K.fx, K.fy, K.cx, K.cy]), True)
    idx = np.arange(0, len(seq), args.step)
    T_cw = np.linalg.inv(world.gt_poses[idx])
    c = (stride - 1) // 2  # a pixel next to each feature pixel's centre (s u + (s - 1) / 2)
    for k, i in enumerate(idx):
        depth = world.depth(int(i))[c::stride, c::stride]
        disp = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.01).astype(np.float32)
        pose = pp.mat2SE3(torch.from_numpy(T_cw[k]), check=False).tensor().float()
        store.append(source.prepare(int(i), world[int(i)].image), float(i), pose, torch.from_numpy(disp))
    truth = world.gt_poses[idx][:, :3, 3]
    path = float(np.linalg.norm(np.diff(truth, axis=0), axis=1).sum())
    lm = lm_options(cfg.lm)
    bopt = BackendOptions(**dict(cfg.backend))
    for rnd in range(3):
        global_ba(store, source, bopt, lm, 12)
        est = pp.SE3(store.poses[: store.n]).Inv().translation().double().numpy()
        r, t, s = umeyama_alignment(est.T, truth.T, True)
        err = np.linalg.norm((s * (r @ est.T)).T + t - truth, axis=1)
        print(f"after {12 * (rnd + 1)} iterations: keyframe ATE {100 * np.sqrt((err ** 2).mean()) / path:.3f} % of path")


if __name__ == "__main__":
    main()
