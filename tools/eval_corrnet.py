#!/usr/bin/env python3
"""Held-out flow accuracy of network weights vs OpenCV DIS on synthetic clips (slam.train.evaluate).

Clips come from world seeds disjoint from training (default 9000-9099, the
``val.seeds`` of configs/train.yaml) at the training resolution; every method
is scored on the same pixels (exact flow, visible in the target frame).
Prints a markdown table of end-point errors (image px) and >3 px outlier rates.

Usage:  python tools/eval_corrnet.py weights/corrnet_small.pt [--clips 8] [--iters 6 12] [--size 160x128]
"""
from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights")
    ap.add_argument("--clips", type=int, default=8, help="held-out clips (one world each)")
    ap.add_argument("--seeds", type=int, nargs=2, default=(9000, 9099), help="world seed range (inclusive)")
    ap.add_argument("--iters", type=int, nargs="+", default=[6], help="update iterations to evaluate")
    ap.add_argument("--size", default="160x128", help="WxH (multiples of 8)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dis", default="medium", help="DIS preset")
    args = ap.parse_args()

    import torch

    from slam.net import load_checkpoint
    from slam.train.data import ClipOptions, ClipStream
    from slam.train.evaluate import evaluate_flow
    from slam.train.unroll import UnrollOptions

    torch.set_num_threads(args.threads)
    W, H = (int(v) for v in args.size.lower().split("x"))
    opts = ClipOptions(frames=args.frames, width=W, height=H, radius=args.radius, seeds=tuple(args.seeds),
                       world_reuse=1)
    stream = ClipStream(opts)
    clips = [stream.batch(b)[0] for b in range(args.clips)]
    model, prov = load_checkpoint(args.weights)
    edges = sum(len(c.ii) for c in clips)
    print(f"# {args.weights}: {prov.get('steps')} steps; {args.clips} held-out clips (seeds {args.seeds[0]}-"
          f"{args.seeds[1]}), {edges} edges at {W}x{H}, frames {args.frames}, radius {args.radius}")
    print("| method | iters | EPE full res (px) | >3 px | EPE at 1/8 centres (px) | >3 px |")
    print("|---|---|---|---|---|---|")
    dis_done = False
    for it in args.iters:
        t = time.perf_counter()
        r = evaluate_flow(model, clips, UnrollOptions(iters=it), args.dis)
        dt = time.perf_counter() - t
        print(f"| network (flow only) | {it} | {r['net_full_epe']:.2f} | {100 * r['net_full_out3']:.0f}% | "
              f"{r['net_feat_epe']:.2f} | {100 * r['net_feat_out3']:.0f}% |")
        print(f"| network + BA, target | {it} | | | {r['netba_target_epe']:.2f} | |")
        print(f"| network + BA, induced (static) | {it} | | | {r['netba_induced_epe']:.2f} | |")
        if not dis_done:
            print(f"| OpenCV DIS ({args.dis}) | - | {r['dis_full_epe']:.2f} | {100 * r['dis_full_out3']:.0f}% | "
                  f"{r['dis_feat_epe']:.2f} | {100 * r['dis_feat_out3']:.0f}% |")
            dis_done = True
        print(f"<!-- {it} iterations: {dt:.1f} s -->", file=sys.stderr)
        last = r
    print("\nEPE (full resolution, px) by ground-truth flow magnitude, last iteration count:")
    print("| flow magnitude | pixels | network | DIS |")
    print("|---|---|---|---|")
    from slam.train.evaluate import BINS

    for lo, hi in BINS:
        key = f"{lo:g}-{hi:g}"
        n = last.get(f"net_full_{key}_pixels", 0)
        print(f"| {key} px | {int(n)} | {last.get(f'net_full_{key}_epe', float('nan')):.2f} | "
              f"{last.get(f'dis_full_{key}_epe', float('nan')):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
