"""Motion-filter flow accuracy: DIS keyframe -> frame directly vs composed from consecutive-frame flows.

    python tools/bench_flow_chain.py SYNTH_DIR START [PRESET]

SYNTH_DIR is a `slam synth` output (320x240); the flow from frame START to START+4, +8, ..., +32 is
compared with the world's exact flow: median end-point error (px) and the share above 3 px of
direct DIS, composed consecutive flows, and DIS refined from the composed flow (what
slam/corr/classical.py does).
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from slam.corr import synthetic_world_for
from slam.corr.classical import compose_flows
from slam.corr.dis import DISFlow
from slam.data.detect import open_sequence


def main() -> None:
    seq = open_sequence(sys.argv[1])
    world = synthetic_world_for(seq)
    a = int(sys.argv[2])
    dis = DISFlow(sys.argv[3] if len(sys.argv) > 3 else "medium")
    grey = lambda k: cv2.cvtColor(seq[k].image, cv2.COLOR_RGB2GRAY)  # noqa: E731
    ga = prev = grey(a)
    comp = np.zeros(ga.shape + (2,), np.float32)
    print("| gap | mean true flow [px] | median EPE direct / composed / composed+refined | share > 3 px |")
    print("|---:|---:|---|---|")
    for b in range(a + 1, a + 33):
        gb = grey(b)
        comp = compose_flows(comp, dis.calc(prev, gb, None))
        prev = gb
        if (b - a) % 4:
            continue
        direct = dis.calc(ga, gb, None)
        refined = dis.calc(ga, gb, comp)
        gt, valid = world.flow(a, b)
        errs = [np.linalg.norm(f - gt, axis=-1)[valid] for f in (direct, comp, refined)]
        print(f"| {b - a} | {np.linalg.norm(gt, axis=-1)[valid].mean():.1f} | "
              + " / ".join(f"{np.median(e):.2f}" for e in errs) + " | "
              + " / ".join(f"{(e > 3).mean():.2f}" for e in errs) + " |")


if __name__ == "__main__":
    main()
