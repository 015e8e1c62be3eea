#!/usr/bin/env python3
"""Benchmark the correspondence network (slam.net): milliseconds per operation.

Measures, for a preset at 240x320 (feature map 30x40), with torch.no_grad():
encoding one frame (features + context, and features alone), building an
all-pairs correlation pyramid for E edges, one lookup (all-pairs and
on-demand), one update step on E edges (lookup included), and the per-frame
aggregation.  Also prints parameter counts and checkpoint sizes (fp32, fp16).
Prints a markdown table; min/median of ``--repeat`` runs after a warm-up.

Usage:  python tools/bench_net.py [--preset small|large|all] [--edges 6] [--repeat 10] [--threads 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def timeit(fn: Callable[[], object], repeat: int, device: str) -> str:
    """``"min/median"`` wall time of ``fn`` in ms (one warm-up call; the minimum is the least
    disturbed by other processes on a shared machine)."""
    fn()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return f"{min(times):.1f}/{statistics.median(times):.1f}"


def bench(preset: str, edges: int, repeat: int, device: str, channels_last: bool = False,
          H: int = 240, W: int = 320) -> dict:
    from slam.corr.base import identity_coords
    from slam.net import CorrNet, load_net_config, save_checkpoint

    cfg = load_net_config(preset)
    model = CorrNet(cfg).to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    img = torch.rand(1, 3, H, W, device=device) * 255
    frames = torch.rand(edges + 1, 3, H, W, device=device) * 255
    res: dict = {"preset": preset + (" (NHWC)" if channels_last else ""), "params": model.num_parameters()}
    with tempfile.TemporaryDirectory() as d:
        for half in (False, True):
            p = save_checkpoint(Path(d) / "m.pt", model, half=half)
            res["MB_fp16" if half else "MB_fp32"] = f"{p.stat().st_size / 1e6:.2f}"
    with torch.no_grad():
        res["encode_ms"] = timeit(lambda: model.encode(img), repeat, device)
        res["fnet_ms"] = timeit(lambda: model.encode_features(img), repeat, device)
        fmaps, net0, inp0 = model.encode(frames)
        h, w = fmaps.shape[-2:]
        ii = torch.zeros(edges, dtype=torch.long, device=device) + torch.arange(edges, device=device) % 2
        jj = torch.arange(edges, device=device) + 1
        coords = identity_coords(edges, h, w).to(device) + torch.randn(edges, h, w, 2, device=device)
        net, inp = net0[ii], inp0[ii]
        res["allpairs_build_ms"] = timeit(lambda: model.correlation(fmaps, ii, jj), repeat, device)
        ap = model.correlation(fmaps, ii, jj)
        od = model.correlation(fmaps, ii, jj, on_demand=True)
        res["lookup_allpairs_ms"] = timeit(lambda: ap(coords), repeat, device)
        res["lookup_ondemand_ms"] = timeit(lambda: od(coords), repeat, device)
        corr = ap(coords)
        flow = (coords - identity_coords(1, h, w).to(device)).permute(0, 3, 1, 2)
        res["update_only_ms"] = timeit(lambda: model.update(net, inp, corr, flow), repeat, device)
        res["step_ms"] = timeit(lambda: model.step(net, inp, ap, coords), repeat, device)
        res["aggregate_ms"] = timeit(lambda: model.aggregate(net, ii), repeat, device)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", help="small | large | all | a YAML path")
    ap.add_argument("--edges", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels-last", action="store_true", help="also time the model in channels-last memory format")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    presets = ["small", "large"] if args.preset == "all" else [args.preset]
    rows = [bench(p, args.edges, args.repeat, args.device, cl) for p in presets
            for cl in ((False, True) if args.channels_last else (False,))]
    keys = list(rows[0])
    print(f"device {args.device}, threads {torch.get_num_threads()}, 240x320 (30x40 features), "
          f"{args.edges} edges, ms min/median of {args.repeat}")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
