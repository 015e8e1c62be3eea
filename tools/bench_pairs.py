"""Time of the classical source's pair measurements with one and two workers (`correspondence.workers`).

    python tools/bench_pairs.py [FOLDER] [--pairs 24] [--gap 2] [--repeats 3]

FOLDER is an image folder or dataset the readers know (default: ../shared/data/tartanair-snippet, else a
synthetic world); its first frames, resized to 320x240, form ``pairs`` edges ``(k, k + gap)``.  For each
worker count and OpenCV thread count (``cv2.setNumThreads`` 1 and 2), a fresh ``ClassicalFlow`` measures
all edges in one ``update`` (DIS forward and backward, from zero) and then re-measures them in one
``refine`` (Lucas-Kanade from the DIS targets).  Printed: the best of ``repeats`` runs, ms per edge, and
whether every result equals the one-worker result.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from slam.corr.classical import ClassicalFlow, ClassicalOptions

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tartanair-snippet"


def load_frames(folder: str | None, n: int) -> list[np.ndarray]:
    """``n`` RGB frames at 320x240 from ``folder`` (or the default data, or a synthetic world)."""
    path = Path(folder) if folder else DEFAULT
    if path.exists():
        from slam.data.detect import open_sequence

        seq = open_sequence(str(path))
        frames = [seq[k].image for k in range(min(n, len(seq)))]
    else:
        from slam.data.synthetic import make_world

        world = make_world(seed=1, scene="room", motion="handheld", frames=n, width=320, height=240)
        frames = [world[k].image for k in range(n)]
    return [cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in frames]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=None)
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--gap", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    images = load_frames(args.folder, args.pairs + args.gap)
    torch.set_num_threads(1)
    ref = None
    print("| workers | OpenCV threads | DIS pair (update) [ms/edge] | Lucas-Kanade (refine) [ms/edge] | same results |")
    print("|---:|---:|---:|---:|---|")
    for workers in (1, 2):
        for cv_threads in (1, 2):
            cv2.setNumThreads(cv_threads)
            t_upd, t_ref = [], []
            for _ in range(args.repeats):
                src = ClassicalFlow(ClassicalOptions(workers=workers))
                fr = [src.prepare(k, im) for k, im in enumerate(images)]
                fi, fj = fr[: args.pairs], fr[args.gap: args.gap + args.pairs]
                t0 = time.perf_counter()
                upd = src.update(fi, fj, None)
                t1 = time.perf_counter()
                ref_upd = src.refine(fi, fj, upd.target)
                t2 = time.perf_counter()
                src.close()
                t_upd.append(t1 - t0)
                t_ref.append(t2 - t1)
            out = (upd.target, upd.weight, ref_upd.target, ref_upd.weight)
            ref = out if ref is None else ref
            same = all(torch.equal(a, b) for a, b in zip(out, ref))
            print(f"| {workers} | {cv_threads} | {1e3 * min(t_upd) / args.pairs:.2f} | "
                  f"{1e3 * min(t_ref) / args.pairs:.2f} | {'yes' if same else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
