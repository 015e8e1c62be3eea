#!/usr/bin/env python3
"""Benchmark dense BA: milliseconds per Levenberg-Marquardt iteration and peak memory.

One LM iteration = linearise + Schur solve + cost of the candidate (the work of
an accepted step).  Each configuration runs in a fresh subprocess so that the
peak resident memory (CPU) is its own; on CUDA the peak allocated memory is
reported.  Prints a markdown table.

Usage:  python tools/bench_ba.py [--device cpu|cuda|all] [--repeat 5] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

CONFIGS = [(8, 24, 30, 40), (25, 100, 48, 64), (100, 800, 48, 64)]


def measure(n: int, e: int, h: int, w: int, device: str, repeat: int, threads: int) -> dict:
    import resource

    import torch

    from slam.ba.dense_ba import DenseBA
    from slam.ba.synthetic import make_problem

    torch.set_num_threads(threads)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = make_problem(n, e, h, w, seed=0, dtype=torch.float32, focal_error=0.1, device=device)
    ba = DenseBA(p.ii, p.jj, p.target, p.weight, n, fixed=2, optimize_focal=True)

    def step() -> None:
        lin = ba.linearize(p.poses_init, p.disps_init, p.K_init)
        dx, dd, _ = ba.solve(lin, 1e-4)
        ba.cost(*ba.apply(p.poses_init, p.disps_init, p.K_init, dx, dd))
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"ms": 1000 * times[len(times) // 2], "peak_mb": peak_mb, "edges": int(p.ii.numel())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)  # internal: N E H W device
    args = ap.parse_args()
    import os

    threads = args.threads or os.cpu_count() or 1
    if args.one:
        n, e, h, w = map(int, args.one[:4])
        print(json.dumps(measure(n, e, h, w, args.one[4], args.repeat, threads)))
        return 0
    import torch

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    cpu = platform.processor() or platform.machine()
    print(f"# dense BA, float32, focal free; {os.cpu_count()} cores ({cpu}), torch {torch.__version__}, "
          f"{threads} threads, median of {args.repeat}")
    print("| device | keyframes | edges | H x W | ms / LM iteration | peak memory (MB) |")
    print("|---|---|---|---|---|---|")
    for dev in devices:
        for n, e, h, w in CONFIGS:
            out = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--threads", str(threads),
                                  "--one", str(n), str(e), str(h), str(w), dev],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            name = dev if dev == "cpu" else torch.cuda.get_device_name()
            print(f"| {name} | {n} | {r['edges']} | {h} x {w} | {r['ms']:.1f} | {r['peak_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
