#!/usr/bin/env python
"""Benchmark the synthetic renderer: frames/s per scene kind and image size.

Prints a markdown table.  World construction (textures, scene, trajectory) is
timed separately from rendering; rendering times cover rendering every frame
(ray casting, shading, sensor effects; no caching, no writing to disk).

    python tools/bench_render.py                       # 320x240 and 640x480, 90 frames each
    python tools/bench_render.py --sizes 320x240 --frames 60 --dynamic
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="320x240,640x480", help="comma-separated WxH list")
    ap.add_argument("--frames", type=int, default=90, help="frames rendered per world")
    ap.add_argument("--motion", default="handheld")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dynamic", action="store_true", help="add one mover")
    ap.add_argument("--supersample", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="render each world this many times, report the best")
    args = ap.parse_args(argv)

    from slam.data.synthetic import SCENE_KINDS, make_world

    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    print(f"# bench_render  {datetime.date.today().isoformat()}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"# command: python tools/bench_render.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# motion={args.motion} frames={args.frames} dynamic={args.dynamic} supersample={args.supersample} "
          f"repeat={args.repeat} (best of)\n")
    header = "| scene | " + " | ".join(f"{w}x{h} frames/s" for w, h in sizes) + " | build s (first size) |"
    print(header)
    print("|" + "---|" * (len(sizes) + 2))
    for scene in SCENE_KINDS:
        cells, build = [], 0.0
        for n, (w, h) in enumerate(sizes):
            t0 = time.perf_counter()
            seq = make_world(seed=args.seed, scene=scene, motion=args.motion, frames=args.frames, width=w, height=h,
                             dynamic=args.dynamic, supersample=args.supersample)
            seq.render(0)  # warm-up (BVH build)
            t2 = time.perf_counter()
            best = float("inf")
            for _ in range(max(args.repeat, 1)):
                t3 = time.perf_counter()
                for k in range(1, len(seq)):
                    seq.renderer.render(seq.gt_poses[k], seq.object_poses(k), k, float(seq.timestamps[k]))
                best = min(best, time.perf_counter() - t3)
            if n == 0:
                build = t2 - t0
            cells.append(f"{(len(seq) - 1) / best:.1f}")
        print(f"| {scene} | " + " | ".join(cells) + f" | {build:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
