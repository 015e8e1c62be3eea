#!/usr/bin/env python3
"""Benchmark consistent video depth (slam.depth.video_depth): abs-rel and delta < 1.25.

Every depth map is median-scaled per frame against the ground truth
(slam.depth.metrics.depth_metrics) and the metrics are averaged over the frames
with ground truth.  Rows per dataset:

* ``prior (median)`` - the prior's inverse depth inverted, median-scaled only;
* ``prior (oracle s,t)`` - the prior after the best per-frame scale and shift
  against the ground-truth inverse depth (what a perfect alignment could give);
* ``initial depth`` - the keyframe depths interpolated to every frame (KeyframeDepth);
* ``video depth: flow`` / ``+ prior`` / ``+ prior + init`` - estimate_video_depth
  with poses and focal fixed.

Datasets:

* synthetic worlds (``--worlds scene:motion:seed,...``) with ground-truth poses;
* ``--tartanair DIR`` (default ``../shared/data/tartanair-snippet`` when it
  exists; ground-truth depth for every 4th frame) with ground-truth poses;
* ``--sequence PATH --run DIR``: any sequence with ground-truth depth, with the
  poses (``trajectory.txt``), intrinsics (``summary.json``) and initial depth
  (``keyframes.npz``) of a ``slam run`` output folder.

Priors and initial depths are simulated unless ``--prior-folder`` / ``--prior-onnx`` / ``--prior-network``
give a real prior or ``--run`` gives real keyframes:

* simulated prior: ground-truth inverse depth x ``exp(a sin(.) cos(.))`` (a smooth field,
  amplitude ``--prior-amp``) x (1 + 5 % noise), then a random scale in [0.5, 2] and shift
  in [0, 0.2]; frames without ground truth get none (confidence 0);
* simulated keyframes: ground truth of every ``--kf-every``-th frame (with ground truth) at
  1/8 resolution, x a smooth field of amplitude 0.1 x (1 + 5 % noise).

Prints a markdown table.

Usage:  python tools/bench_video_depth.py [--worlds room:handheld:1,street:forward:2,table:orbit:3]
            [--frames 40] [--size 160x120] [--tartanair DIR] [--tartan-frames 96]
            [--sequence PATH --run DIR] [--prior-folder DIR | --prior-onnx FILE | --prior-network] [--threads 1]
            [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARTANAIR_DEFAULT = ROOT.parent / "shared" / "data" / "tartanair-snippet"


# ----------------------------------------------------------------- simulations
def smooth_field(rng: np.random.Generator, h: int, w: int, amplitude: float) -> np.ndarray:
    """(h, w) multiplicative field ``exp(a sin(.) cos(.))`` with random frequencies and phases."""
    v, u = np.mgrid[0:h, 0:w] / max(h, w)
    return np.exp(amplitude * np.sin(2 * np.pi * (u * rng.uniform(0.5, 1.5) + rng.uniform()))
                  * np.cos(2 * np.pi * (v * rng.uniform(0.5, 1.5) + rng.uniform())))


def make_sim_prior(gt: dict[int, np.ndarray], amplitude: float):
    """A DepthPrior distorting the ground truth (see the module docstring)."""
    from slam.depth.prior import DepthPrior

    class SimulatedPrior(DepthPrior):
        name = "simulated"

        def predict(self, image: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
            H, W = image.shape[:2]
            d = gt.get(index)
            if d is None:
                return np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
            rng = np.random.default_rng(1000 + index)
            ok = np.isfinite(d) & (d > 0)
            inv = np.where(ok, 1.0 / np.where(ok, d, 1.0), 0.0) * smooth_field(rng, *d.shape, amplitude)
            inv = inv * (1 + 0.05 * rng.standard_normal(d.shape))
            inv = rng.uniform(0.5, 2.0) * inv + rng.uniform(0.0, 0.2) * float(np.median(inv[ok]))
            inv, conf = inv.astype(np.float32), ok.astype(np.float32)
            if inv.shape != (H, W):
                inv = cv2.resize(inv, (W, H), interpolation=cv2.INTER_LINEAR)
                conf = cv2.resize(conf, (W, H), interpolation=cv2.INTER_NEAREST)
            return inv, conf

    return SimulatedPrior()


def sim_keyframes(gt: dict[int, np.ndarray], poses: np.ndarray, K: np.ndarray, every: int):
    """KeyframeDepth from distorted 1/8-resolution ground truth of every ``every``-th frame with ground truth."""
    from slam.depth.keyframes import KeyframeDepth
    from slam.geometry.camera import Intrinsics

    idx = sorted(gt)[::every]
    H, W = gt[idx[0]].shape
    h, w = max(8, H // 8), max(8, W // 8)
    disps = []
    for k in idx:
        rng = np.random.default_rng(2000 + k)
        d = cv2.resize(gt[k], (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float64)
        ok = np.isfinite(d) & (d > 0)
        d = d * smooth_field(rng, h, w, 0.1) * (1 + 0.05 * rng.standard_normal(d.shape))
        disps.append(np.where(ok, 1.0 / np.where(ok, d, 1.0), 0.0))
    Kf = Intrinsics(*K, width=W, height=H).scaled(w, h).as_array()
    return KeyframeDepth(idx, np.stack(disps), Kf, poses)


# -------------------------------------------------------------------- datasets
def synthetic(spec: str, frames: int, size: tuple[int, int]) -> dict:
    from slam.data.synthetic import make_world

    scene, motion, seed = spec.split(":")
    seq = make_world(seed=int(seed), scene=scene, motion=motion, frames=frames, width=size[0], height=size[1])
    images = [seq[k].image for k in range(len(seq))]
    gt = {k: seq[k].depth for k in range(len(seq))}
    return {"name": f"synthetic {scene}/{motion} s{seed}", "images": images, "poses": seq.gt_poses,
            "K": seq.intrinsics.as_array(), "gt": gt, "init": None, "poses_from": "GT"}


def from_sequence(path: Path, frames: int | None, name: str) -> dict:
    from slam.data.detect import open_sequence

    seq = open_sequence(path, max_frames=frames)
    if seq.gt_poses is None or seq.intrinsics is None:
        raise SystemExit(f"{path}: needs ground-truth poses and intrinsics")
    images, gt = [], {}
    for k in range(len(seq)):
        f = seq[k]
        images.append(f.image)
        if f.depth is not None:
            gt[k] = f.depth
    if not gt:
        raise SystemExit(f"{path}: no ground-truth depth")
    return {"name": name, "images": images, "poses": seq.gt_poses, "K": seq.intrinsics.as_array(), "gt": gt,
            "init": None, "poses_from": "GT"}


def with_run(data: dict, run: Path) -> dict:
    """Replace poses/intrinsics by those of a ``slam run`` folder and take its keyframes as initial depth."""
    from slam.depth.keyframes import KeyframeDepth
    from slam.io.tum import read_tum

    _, poses = read_tum(run / "trajectory.txt")
    if len(poses) != len(data["images"]):
        raise SystemExit(f"{run}: {len(poses)} poses but the sequence has {len(data['images'])} frames")
    summary = json.loads((run / "summary.json").read_text())
    kf = np.load(run / "keyframes.npz")
    data = dict(data, poses=poses, K=np.asarray(summary["intrinsics"], float), poses_from=f"slam run {run.name}")
    data["init"] = KeyframeDepth(kf["indices"], kf["disps"], kf["feature_intrinsics"], poses, kf["confidence"])
    data["name"] += " (run poses)"
    return data


# --------------------------------------------------------------------- metrics
def metrics_on(depth_of, gt: dict[int, np.ndarray]) -> dict:
    from slam.depth.metrics import depth_metrics

    ks = sorted(gt)
    pred = []
    for k in ks:
        d = np.asarray(depth_of(k), np.float32)
        H, W = gt[k].shape
        if d.shape != (H, W):
            d = cv2.resize(d, (W, H), interpolation=cv2.INTER_LINEAR)
        pred.append(d)
    return depth_metrics(np.stack(pred), np.stack([gt[k] for k in ks]))


def oracle_aligned_prior(prior, images, gt: dict[int, np.ndarray]):
    from slam.depth.align import align_scale_shift

    def depth_of(k: int) -> np.ndarray:
        inv, conf = prior.predict(images[k], k)
        g = gt[k]
        ok = (conf > 0) & np.isfinite(g) & (g > 0)
        s, t = align_scale_shift(inv[ok], 1.0 / g[ok], None, {"loss": "l2"})
        a = s * inv + t
        return np.where(a > 0, 1.0 / np.maximum(a, 1e-9), 0.0)

    return depth_of


def bench(data: dict, prior, prior_note: str, opts: dict, rows: list) -> None:
    from slam.depth.video_depth import estimate_video_depth

    images, gt = data["images"], data["gt"]
    n = len(images)
    H, W = images[0].shape[:2]
    base = {"dataset": data["name"], "frames": f"{n} ({len(gt)} GT)", "poses": data["poses_from"]}

    def add(method: str, m: dict, secs: float | None, wsize: str = "") -> None:
        rows.append({**base, "method": method, "res": wsize or f"{W}x{H}", "abs_rel": m["abs_rel"],
                     "d125": m["delta_1.25"], "s_per_frame": secs})
        print(f"  {method:28s} abs_rel {m['abs_rel']:.4f}  d<1.25 {m['delta_1.25']:.4f}"
              + (f"  {secs:.2f} s/frame" if secs is not None else ""), flush=True)

    print(f"{data['name']}: {n} frames {W}x{H}, {len(gt)} with ground truth, poses {data['poses_from']}", flush=True)
    if prior is not None:
        add(f"prior (median) [{prior_note}]",
            metrics_on(lambda k: 1.0 / np.maximum(prior.predict(images[k], k)[0], 1e-9), gt), None)
        add("prior (oracle s,t)", metrics_on(oracle_aligned_prior(prior, images, gt), gt), None)
    init = data["init"]
    if init is not None:
        add("initial depth", metrics_on(lambda k: init[k], gt), None)
    variants = [("video depth: flow", None, None)]
    if prior is not None:
        variants.append(("video depth: flow + prior", prior, None))
    if init is not None:
        variants.append(("video depth: flow + init", None, init))
        if prior is not None:
            variants.append(("video depth: flow + prior + init", prior, init))
    for name, pr, ini in variants:
        t = time.perf_counter()
        res = estimate_video_depth(images, data["poses"], data["K"], prior=pr, initial_depth=ini, options=opts)
        secs = (time.perf_counter() - t) / n
        w, h = res.working_size
        add(name, metrics_on(lambda k, depth=res.depth: depth[k], gt), secs, f"{w}x{h}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="room:handheld:1,street:forward:2,table:orbit:3",
                    help="synthetic worlds scene:motion:seed, comma separated ('' for none)")
    ap.add_argument("--frames", type=int, default=40, help="frames per synthetic world")
    ap.add_argument("--size", default="160x120", help="synthetic image size WxH")
    ap.add_argument("--tartanair", default=str(TARTANAIR_DEFAULT) if TARTANAIR_DEFAULT.is_dir() else "",
                    help="TartanAir sequence folder ('' to skip)")
    ap.add_argument("--tartan-frames", type=int, default=None, help="first N TartanAir frames (default: all)")
    ap.add_argument("--sequence", default=None, help="a sequence with ground-truth depth, used with --run")
    ap.add_argument("--run", default=None,
                    help="`slam run` output folder of --sequence (poses, intrinsics, keyframes)")
    ap.add_argument("--prior-folder", default=None, help="real prior: folder of depth maps (match=index)")
    ap.add_argument("--prior-onnx", default=None, help="real prior: ONNX model (prior.yaml onnx defaults)")
    ap.add_argument("--prior-network", action="store_true", help="real prior: the shipped monodepth network")
    ap.add_argument("--prior-amp", type=float, default=0.3, help="amplitude of the simulated prior's smooth field")
    ap.add_argument("--kf-every", type=int, default=2, help="simulated keyframes: every n-th frame with ground truth")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="video-depth options (YAML values)")
    args = ap.parse_args()

    import torch
    import yaml

    from slam.depth.prior import make_prior

    torch.set_num_threads(args.threads)
    opts = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        opts[k] = yaml.safe_load(v)
    W, H = (int(v) for v in args.size.lower().split("x"))

    datasets = []
    for spec in [s for s in args.worlds.split(",") if s]:
        datasets.append(lambda spec=spec: synthetic(spec, args.frames, (W, H)))
    if args.tartanair:
        datasets.append(lambda: from_sequence(Path(args.tartanair), args.tartan_frames,
                                              f"tartanair {Path(args.tartanair).name}"))
    if args.sequence:
        seq_path = Path(args.sequence)

        def seq_data() -> dict:
            d = from_sequence(seq_path, None, seq_path.name)
            return with_run(d, Path(args.run)) if args.run else d

        datasets.append(seq_data)

    rows: list[dict] = []
    t0 = time.perf_counter()
    for make in datasets:
        data = make()
        if data["init"] is None:
            data["init"] = sim_keyframes(data["gt"], data["poses"], data["K"], args.kf_every)
            data["init_note"] = "simulated"
        if args.prior_folder:
            prior = make_prior({"kind": "folder", "folder": {"path": args.prior_folder, "match": "index"}})
            note = "folder"
        elif args.prior_onnx:
            prior = make_prior({"kind": "onnx", "onnx": {"path": args.prior_onnx}})
            note = "onnx"
        elif args.prior_network:
            prior = make_prior({"kind": "network"})
            note = "network"
        else:
            prior, note = make_sim_prior(data["gt"], args.prior_amp), f"simulated a={args.prior_amp}"
        bench(data, prior, note, opts, rows)

    print()
    print(f"Video depth benchmark ({platform.processor() or platform.machine()}, torch threads {args.threads}, "
          f"total {time.perf_counter() - t0:.0f} s; options {opts or 'defaults'})")
    print()
    print("| dataset | frames | poses | method | working res | abs-rel | δ<1.25 | s/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        spf = f"{r['s_per_frame']:.2f}" if r["s_per_frame"] is not None else "-"
        print(f"| {r['dataset']} | {r['frames']} | {r['poses']} | {r['method']} | {r['res']} | "
              f"{r['abs_rel']:.3f} | {r['d125']:.3f} | {spf} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
