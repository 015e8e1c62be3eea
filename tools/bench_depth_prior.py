#!/usr/bin/env python3
"""Benchmark the monocular depth prior inside tracking on degenerate camera motions.

A camera that only rotates, or barely moves, gives bundle adjustment no
parallax: keyframe depths are unconstrained.  For each synthetic world
(``--worlds scene:motion:seed``) this runs ``slam run``'s pipeline with the
``classical`` correspondences without and with a prior (simulated; with
``--network`` also the shipped monodepth network), and reports

* ``kf abs_rel`` / ``kf d<1.25``: keyframe depths (feature resolution) against the
  ground truth after median scaling (slam.depth.metrics.depth_metrics);
* ``rot err max [deg]``: largest rotation error relative to the first frame;
* ``ATE % path``: Sim(3)-aligned ATE (only meaningful when the camera translates).

The prior is a folder of simulated maps (``depth.prior.kind=folder``): ground-truth
inverse depth x a smooth multiplicative field of amplitude ``--prior-amp`` x (1 + 5 %
noise), then a random scale in [0.5, 2] and shift in [0, 0.2] per frame (what a
monocular network gives: right shape, unknown scale and shift).

Prints a markdown table.

Usage:  python tools/bench_depth_prior.py [--worlds room:rotation:7,table:static:8,room:handheld:9]
            [--frames 60] [--size 320x240] [--prior-amp 0.2] [--network] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slam.eval.report import markdown_table  # noqa: E402 (after the path)


def simulated_prior(gt: list[np.ndarray], out: Path, amp: float, seed: int) -> None:
    """Write one distorted inverse-depth .npy per frame (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for k, g in enumerate(gt):
        h, w = g.shape
        v, u = np.mgrid[0:h, 0:w] / max(h, w)
        field = np.exp(amp * np.sin(2 * np.pi * (u * rng.uniform(0.5, 1.5) + rng.uniform()))
                       * np.cos(2 * np.pi * (v * rng.uniform(0.5, 1.5) + rng.uniform())))
        inv = np.where(g > 0, 1.0 / np.maximum(g, 1e-9), 0.0) * field * (1 + 0.05 * rng.standard_normal((h, w)))
        np.save(out / f"{k:06d}.npy", (rng.uniform(0.5, 2.0) * inv + rng.uniform(0.0, 0.2)).astype(np.float32))


def evaluate(recon, seq, gt: list[np.ndarray]) -> dict:
    from slam.depth.metrics import depth_metrics
    from slam.eval.metrics import MetricsError, compute_metrics

    h, w = recon.kf_disps.shape[1:]
    ref = np.stack([cv2.resize(gt[int(f)], (w, h), interpolation=cv2.INTER_AREA) for f in recon.kf_indices])
    dm = depth_metrics(1.0 / np.maximum(recon.kf_disps, 1e-9), ref)
    R0, G0 = recon.poses[0, :3, :3], seq.gt_poses[0][:3, :3]
    rot = max(np.degrees(np.arccos(np.clip((np.trace((R0.T @ a[:3, :3]).T @ (G0.T @ b[:3, :3])) - 1) / 2, -1, 1)))
              for a, b in zip(recon.poses, seq.gt_poses))
    try:
        m = compute_metrics(recon.timestamps, recon.poses, seq.timestamps, seq.gt_poses)
        ate = 100 * m["ate_rmse_m"] / m["path_length_m"]
    except MetricsError:
        ate = float("nan")
    return {"abs_rel": dm["abs_rel"], "d125": dm["delta_1.25"], "rot": rot, "ate": ate,
            "kf": len(recon.kf_indices)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="room:rotation:7,table:static:8,room:handheld:9",
                    help="synthetic worlds scene:motion:seed, comma separated")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--prior-amp", type=float, default=0.2, help="amplitude of the prior's smooth distortion")
    ap.add_argument("--network", action="store_true", help="also run with the shipped monodepth network as the prior")
    ap.add_argument("--set", nargs="*", default=[], help="extra configs/run.yaml overrides")
    args = ap.parse_args()

    from slam.commands.synth import render_specs
    from slam.config import load_config
    from slam.data.detect import open_sequence
    from slam.system.runner import run_sequence

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        worlds = render_specs(args.worlds, Path(tmp), args.frames, args.size)
        if worlds is None:
            return 1
        for scene, motion, seed, d in worlds:
            seq = open_sequence(d)
            gt = [np.load(f) for f in sorted((d / "depth").glob("*.npy"))]
            simulated_prior(gt, d / "prior", args.prior_amp, int(seed))
            base = ["correspondence=classical"] + list(args.set)
            runs = [("no prior", []),
                    ("simulated prior", ["depth.prior.kind=folder", f"depth.prior.folder.path={d / 'prior'}",
                                         "depth.prior.folder.npy_kind=inverse_depth"])]
            if args.network:
                runs.append(("network prior", ["depth.prior.kind=network"]))
            for name, extra in runs:
                r = run_sequence(seq, load_config("run", base + extra), progress=False)
                row = {"world": f"{scene}/{motion}", "run": name, **evaluate(r, seq, gt)}
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
    print(f"\n{platform.node()} | python {platform.python_version()} | frames {args.frames} | size {args.size} | "
          f"prior amplitude {args.prior_amp}\n")
    print(markdown_table(rows, (
        ("world", "world", "s"), ("run", "run", "s"), ("keyframes", "kf", ".0f"), ("kf abs_rel", "abs_rel", ".3g"),
        ("kf d<1.25", "d125", ".3f"), ("rot err max [deg]", "rot", ".3f"), ("ATE % path", "ate", ".2f"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
