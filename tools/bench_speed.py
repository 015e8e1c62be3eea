"""Wall time of `slam eval` under several configurations, interleaved and repeated.

    python tools/bench_speed.py INPUT [--repeats 3] [--variant NAME=OVERRIDES ...] [--out DIR]

Each variant is a name and space-separated run overrides (``--variant "serial=threads=0
correspondence.workers=1"``; the default variant, ``default``, has none).  The variants run in turn,
``repeats`` rounds, each in a fresh process (`slam eval INPUT --methods classical --no-progress`),
so that a slow spell of a shared machine hits every variant alike.  Printed: one markdown row per
variant and sequence with the ATE (% of path; the runs are deterministic, so one value), the
median and the smallest wall time [s] and frames/s over the rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """``NAME=k=v k2=v2`` -> ``(NAME, ["k=v", "k2=v2"])``."""
    name, sep, rest = spec.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=OVERRIDES, got {spec!r}")
    return name, rest.split()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="a sequence or a folder of sequences with ground truth")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", type=parse_variant, action="append", default=None,
                    help="NAME=OVERRIDES (repeatable; default: one variant without overrides)")
    ap.add_argument("--out", default=None, help="keep the runs' outputs here (default: a temporary folder)")
    args = ap.parse_args()
    variants = args.variant or [("default", [])]
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_speed_"))
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeats):
        for name, overrides in variants:
            out = root / f"{name}-{r}"
            cmd = [sys.executable, "-m", "slam.cli", "eval", args.input, "--out", str(out), "--methods",
                   "classical", "--no-progress", *overrides]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{name} round {r}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                return 1
            for m in json.loads((out / "metrics.json").read_text()):
                rows.setdefault((m["sequence"], name), []).append(m)
            print(f"round {r + 1}/{args.repeats} {name} done", file=sys.stderr, flush=True)
    print("| sequence | variant | ATE % of path | wall [s] median / min | frames/s median / max |")
    print("|---|---|---:|---:|---:|")
    for (seq, name), ms in sorted(rows.items()):
        ate = {round(100 * m["ate_rmse_m"] / m["path_length_m"], 4) for m in ms}
        walls = [m["wall_s"] for m in ms]
        fps = [m["fps"] for m in ms]
        ate_s = " / ".join(f"{a:.2f}" for a in sorted(ate))
        print(f"| {seq} | {name} | {ate_s} | {statistics.median(walls):.1f} / {min(walls):.1f} | "
              f"{statistics.median(fps):.2f} / {max(fps):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
