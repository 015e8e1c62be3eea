#!/usr/bin/env python
"""Benchmark the live viewer's cost: tracking throughput with and without offscreen recording.

Runs ``slam run INPUT`` (default: the bundled sample, 120 frames 320x240) in fresh
processes, alternating the configurations so that load from other processes hits
them alike, and prints a markdown table of medians:

* tracking frames/s = frames / ``tracking_s`` (reading + tracking + backend, from
  ``summary.json``), the number the viewer must not slow down; its change against "off"
  as the ratio of medians and (in brackets) the median of the per-repeat ratios (runs
  of one repeat are back to back, so they share the machine's load);
* overall frames/s (``summary.json`` ``fps``: also the final BA and the trajectory filler);
* process wall time (also start-up, writing outputs, and the viewer's last frame and video);
* CPU seconds of the whole process tree, and the viewer's own (render process + encoder +
  poller thread), split into start-up (importing Open3D, creating the context; before
  tracking starts) and drawing; "drawing CPU share" = drawing CPU / process-tree CPU, the
  load-independent estimate of the throughput cost on a machine whose cores tracking fills;
* frames the viewer wrote.

On a shared machine the frames/s columns are noisy (other processes, OpenMP threads
competing for 2 cores): compare them over several ``--repeat`` and read the CPU columns.

    python tools/bench_viewer.py                          # off vs viewer.max_fps=2 (default) and 5, 3 runs each
    python tools/bench_viewer.py --max-fps 2 --repeat 5 --input /tmp/world
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_once(input_path: str, out: Path, extra: list[str], env: dict[str, str] | None = None) -> dict:
    """One ``slam run`` in a fresh process; returns its summary numbers and wall time."""
    cmd = [sys.executable, "-m", "slam.cli", "run", input_path, "--out", str(out), "--no-progress", *extra]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    s = json.loads((out / "summary.json").read_text())
    m = re.search(r"viewer: (\d+) frame.*viewer CPU ([\d.]+) s, of which start-up ([\d.]+) s", p.stderr)
    return {"track_fps": s["frames"] / s["tracking_s"], "fps": s["fps"], "wall": wall,
            "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "rendered": int(m.group(1)) if m else 0,
            "viewer_cpu": float(m.group(2)) if m else 0.0, "viewer_start_cpu": float(m.group(3)) if m else 0.0,
            "warned": "viewer disabled" in p.stderr}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default=None, help="sequence to track (default: the bundled sample)")
    ap.add_argument("--max-fps", default="2,5", help="comma-separated viewer.max_fps values to compare with off")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (median reported)")
    ap.add_argument("--record", default="mp4", choices=("mp4", "png"), help="record a video or PNG frames")
    ap.add_argument("--omp-wait", default="PASSIVE", metavar="POLICY",
                    help="OMP_WAIT_POLICY of every run (default PASSIVE; 'inherit' keeps the environment's). "
                         "With libgomp's default spin-waiting, a loaded 2-core machine makes the BA several times "
                         "slower, and the viewer's extra threads throttle that spinning, which would favour the "
                         "viewer runs")
    ap.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides for every run")
    args = ap.parse_args(argv)

    from slam.data.synthetic import sample_path

    input_path = args.input or str(sample_path())
    configs: list[tuple[str, list[str]]] = [("off", [])]
    for r in [float(x) for x in args.max_fps.split(",") if x]:
        configs.append((f"on, max_fps={r:g}", ["viewer=true", "viewer.headless=true", f"viewer.max_fps={r:g}"]))
    results: dict[str, list[dict]] = {name: [] for name, _ in configs}
    env = dict(os.environ)
    if args.omp_wait.lower() != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait
    with tempfile.TemporaryDirectory(prefix="bench_viewer_") as tmp:
        for rep in range(args.repeat):
            for k, (name, extra) in enumerate(configs):
                out = Path(tmp) / f"run{k}"
                rec = out / ("viewer.mp4" if args.record == "mp4" else "frames")
                ov = list(extra) + ([f"viewer.record={rec}"] if extra else []) + list(args.overrides)
                res = run_once(input_path, out, ov, env)
                results[name].append(res)
                print(f"# run {rep + 1}/{args.repeat} {name}: tracking {res['track_fps']:.2f} frames/s, "
                      f"overall {res['fps']:.2f} frames/s, wall {res['wall']:.1f} s, {res['rendered']} renders"
                      + (" (viewer disabled!)" if res["warned"] else ""), file=sys.stderr, flush=True)

    print(f"# bench_viewer  {datetime.date.today().isoformat()}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"# command: python tools/bench_viewer.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# input {input_path}, {args.repeat} runs per configuration, medians, record={args.record}, "
          f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', '(unset)')}\n")
    print("| viewer | tracking frames/s | change (paired) | overall frames/s | process wall [s] | process CPU [s] | "
          "viewer CPU [s] (start-up + drawing) | drawing CPU share | frames rendered |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    med = statistics.median
    base = med(r["track_fps"] for r in results["off"])
    for name, _ in configs:
        rs = results[name]
        tf = med(r["track_fps"] for r in rs)
        paired = med(r["track_fps"] / o["track_fps"] - 1 for r, o in zip(rs, results["off"]))
        change = "—" if name == "off" else f"{100 * (tf / base - 1):+.1f} % ({100 * paired:+.1f} %)"
        vc, vs = med(r["viewer_cpu"] for r in rs), med(r["viewer_start_cpu"] for r in rs)
        share = "—" if name == "off" else f"{100 * med((r['viewer_cpu'] - r['viewer_start_cpu']) / r['cpu'] for r in rs):.1f} %"
        print(f"| {name} | {tf:.2f} | {change} | {med(r['fps'] for r in rs):.2f} | {med(r['wall'] for r in rs):.1f} | "
              f"{med(r['cpu'] for r in rs):.1f} | {'—' if name == 'off' else f'{vs:.1f} + {vc - vs:.1f}'} | {share} | "
              f"{med(r['rendered'] for r in rs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
