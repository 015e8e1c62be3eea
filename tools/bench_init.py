"""The initialisation alone on shaky synthetic worlds, with each way of choosing its start.

    python tools/bench_init.py [--worlds clutter:1-6,room:1-8] [--frames 35] [--variants robust,seed,final,plain]
                               [key=value ...]

Each world is ``slam.data.synthetic.make_world(seed, scene, motion="shaky", frames, 320x240)`` (the worlds
of ``tests/test_system.py``'s initialisation tests), tracked by ``correspondence=classical`` with no
final refinement (``backend.final_iters=0 backend.refine_rounds=0``), so the error is what the
initialisation and the tracking after it leave.  Variants (added to the overrides):

* ``robust``: ``frontend.init_select=robust`` (the start whose seed BA leaves the lower robust cost);
* ``seed``: ``frontend.init_select=seed`` (the lower least-squares cost);
* ``final``: ``frontend.init_select=final`` (both starts grown, the lower final robust cost);
* ``plain``: the default choice without the graduated robust stages (``frontend.init_graduated=[]``).

Printed: a markdown table of the ATE in % of the path (Sim(3)-aligned) and the start kept (i: identity,
t: two-view), one row per world.
"""
from __future__ import annotations

import argparse
import time

from slam.config import load_config
from slam.data.synthetic import make_world
from slam.eval.metrics import compute_metrics
from slam.system.runner import run_sequence

VARIANTS = {"robust": ["frontend.init_select=robust"], "seed": ["frontend.init_select=seed"],
            "final": ["frontend.init_select=final"], "plain": ["frontend.init_graduated=[]"]}


def parse_worlds(spec: str) -> list[tuple[str, int]]:
    """``clutter:1-6,room:8`` -> [("clutter", 1), ..., ("clutter", 6), ("room", 8)]."""
    out = []
    for item in spec.split(","):
        scene, seeds = item.split(":")
        lo, _, hi = seeds.partition("-")
        out += [(scene, s) for s in range(int(lo), int(hi or lo) + 1)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default="clutter:1-6,room:1-8")
    ap.add_argument("--frames", type=int, default=35)
    ap.add_argument("--variants", default="robust,seed,final,plain")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    names = args.variants.split(",")
    base = ["correspondence=classical", "backend.final_iters=0", "backend.refine_rounds=0", *args.overrides]
    print("| world | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    t0 = time.perf_counter()
    for scene, seed in parse_worlds(args.worlds):
        world = make_world(seed=seed, scene=scene, motion="shaky", frames=args.frames, width=320, height=240)
        cells = []
        for name in names:
            recon = run_sequence(world, load_config("run", base + VARIANTS[name]), progress=False)
            m = compute_metrics(recon.timestamps, recon.poses, world.timestamps, world.gt_poses)
            start = recon.stats.get("init_start", "?")[0]
            cells.append(f"{100.0 * m['ate_rmse_m'] / m['path_length_m']:.2f} ({start})")
        print(f"| {scene}/shaky seed {seed} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
