#!/usr/bin/env python3
"""Benchmark ``slam adapt-depth``: does adapting the depth network to a video, without labels,
make it a better depth prior and a better prior for tracking?

For each sequence with ground-truth depth (synthetic worlds rendered here with
``--worlds scene:motion:seed``, and dataset sequences given with ``--sequences``, e.g.
``../shared/data/tartanair-snippet``, whose frames carry depth every 4th frame):

1. ``slam adapt-depth SEQ --out ADAPTED.pt --time T`` (classical reconstruction + view
   synthesis, starting from the shipped ``weights/monodepth_small.pt``);
2. **depth** of the shipped and the adapted network on the frames with ground truth
   (the prior's 128x96 input, resized back): abs-rel and d<1.25 after per-frame median
   scaling (:func:`slam.depth.metrics.depth_metrics`), and after the best per-frame scale
   and shift of inverse depth (the shape alone, as the tracking prior is aligned);
3. **tracking** (``--track``): ``slam run`` (classical) with no prior, with the shipped and
   with the adapted network prior: ATE as % of the path (Sim(3)-aligned) and keyframe
   depth abs-rel / d<1.25 (median-scaled).

Prints markdown tables.

Usage:  python tools/bench_adapt_depth.py [--worlds clutter:handheld:9,room:orbit:11] [--frames 80]
            [--size 320x240] [--sequences PATH,...] [--time 120] [--track] [--set key=value ...]
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


def gt_frames(seq, step: int) -> dict[int, np.ndarray]:
    """Frame row -> ground-truth depth, for every ``step``-th of the frames that have one."""
    have = [(k, seq[k].depth) for k in range(len(seq))]
    have = [(k, d) for k, d in have if d is not None]
    return {k: np.asarray(d, np.float32) for k, d in have[::step]}


def depth_rows(seq, gt: dict[int, np.ndarray], weights: str | None) -> dict:
    from slam.depth.align import align_scale_shift
    from slam.depth.metrics import depth_metrics
    from slam.depth.monodepth import load_monodepth
    from slam.depth.selfsup import SelfSupOptions

    model = load_monodepth(weights)
    size = SelfSupOptions().size  # the prior's input size, which adapt-depth trains at
    med, shape, ref = [], [], []
    for k, g in gt.items():
        inv = model.predict(seq[k].image, size)
        inv = cv2.resize(inv, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_LINEAR)
        ok = np.isfinite(g) & (g > 0)
        s, t = align_scale_shift(inv[ok], 1.0 / g[ok], None, {"loss": "l2"})
        a = s * inv + t
        med.append(1.0 / np.maximum(inv, 1e-6))
        shape.append(np.where(a > 0, 1.0 / np.maximum(a, 1e-9), 0.0))
        ref.append(g)
    G = np.stack(ref)
    m1, m2 = depth_metrics(np.stack(med), G), depth_metrics(np.stack(shape), G)
    return {"med_abs_rel": m1["abs_rel"], "med_d125": m1["delta_1.25"], "st_abs_rel": m2["abs_rel"],
            "st_d125": m2["delta_1.25"]}


def track_row(seq, gt: dict[int, np.ndarray], extra: list[str]) -> dict:
    from slam.config import load_config
    from slam.depth.metrics import depth_metrics
    from slam.eval.metrics import compute_metrics
    from slam.system.runner import run_sequence

    r = run_sequence(seq, load_config("run", ["correspondence=classical", *extra]), progress=False)
    m = compute_metrics(r.timestamps, r.poses, seq.timestamps, seq.gt_poses)
    h, w = r.kf_disps.shape[1:]
    pairs = [(k, int(f)) for k, f in enumerate(r.kf_indices) if int(f) in gt]
    out = {"ate": 100 * m["ate_rmse_m"] / m["path_length_m"], "kf": len(r.kf_indices), "kf_gt": len(pairs),
           "kf_abs_rel": float("nan"), "kf_d125": float("nan")}
    if pairs:
        ref = np.stack([cv2.resize(gt[f], (w, h), interpolation=cv2.INTER_AREA) for _, f in pairs])
        dm = depth_metrics(1.0 / np.maximum(r.kf_disps[[k for k, _ in pairs]], 1e-9), ref)
        out.update(kf_abs_rel=dm["abs_rel"], kf_d125=dm["delta_1.25"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="clutter:handheld:9,room:orbit:11",
                    help="synthetic worlds scene:motion:seed, comma separated ('' for none)")
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--sequences", default="", help="dataset sequences with ground-truth depth, comma separated")
    ap.add_argument("--time", type=float, default=120.0, help="slam adapt-depth budget per sequence (s)")
    ap.add_argument("--gt-step", type=int, default=1, help="evaluate on every n-th of the frames with ground truth")
    ap.add_argument("--track", action="store_true", help="also track with no / shipped / adapted prior")
    ap.add_argument("--set", nargs="*", default=[], help="configs/adapt_depth.yaml overrides for slam adapt-depth")
    args = ap.parse_args()

    from slam.cli import main as cli
    from slam.commands.synth import render_specs
    from slam.data.detect import open_sequence

    depth_table, track_table = [], []
    with tempfile.TemporaryDirectory() as tmp:
        worlds = render_specs(args.worlds, Path(tmp), args.frames, args.size, ("--format", "tartanair"))
        if worlds is None:
            return 1
        seqs = [(f"{scene}/{motion} (seed {seed})", d) for scene, motion, seed, d in worlds]
        seqs += [(Path(p).name, Path(p)) for p in args.sequences.split(",") if p]
        for name, path in seqs:
            seq = open_sequence(path)
            gt = gt_frames(seq, args.gt_step)
            adapted = str(Path(tmp) / f"{path.name}_adapted.pt")
            if cli(["adapt-depth", str(path), "--out", adapted, "--time", str(args.time), "--quiet", *args.set]) != 0:
                return 1
            for label, w in (("shipped", None), ("adapted", adapted)):
                row = {"sequence": name, "network": label, "gt": len(gt), **depth_rows(seq, gt, w)}
                depth_table.append(row)
                print(row, file=sys.stderr, flush=True)
            if args.track:
                for label, extra in (("no prior", []), ("shipped prior", ["depth.prior.kind=network"]),
                                     ("adapted prior", ["depth.prior.kind=network",
                                                        f"depth.prior.network.weights={adapted}"])):
                    row = {"sequence": name, "run": label, **track_row(seq, gt, extra)}
                    track_table.append(row)
                    print(row, file=sys.stderr, flush=True)
    print(f"\n{platform.node()} | python {platform.python_version()} | adapt-depth --time {args.time:g} "
          f"{' '.join(args.set)} | synthetic {args.frames} frames {args.size}\n")
    print(markdown_table(depth_table, (
        ("sequence", "sequence", "s"), ("network", "network", "s"), ("GT frames", "gt", ".0f"),
        ("abs-rel (median)", "med_abs_rel", ".3f"), ("d<1.25 (median)", "med_d125", ".3f"),
        ("abs-rel (scale+shift)", "st_abs_rel", ".3f"), ("d<1.25 (scale+shift)", "st_d125", ".3f"))))
    if track_table:
        print()
        print(markdown_table(({**r, "kfs": f"{r['kf']} ({r['kf_gt']})"} for r in track_table), (
            ("sequence", "sequence", "s"), ("run", "run", "s"), ("keyframes (with GT)", "kfs", "s"),
            ("kf abs-rel", "kf_abs_rel", ".3f"), ("kf d<1.25", "kf_d125", ".3f"), ("ATE % path", "ate", ".2f"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
