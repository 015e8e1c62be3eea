"""``slam run [INPUT] --out DIR [KEY=VALUE ...]``: track a video, image folder or dataset sequence.

Writes ``trajectory.txt`` (TUM, every frame, camera-to-world), ``keyframes.npz``,
``points.ply``, ``summary.json`` and, with ``outputs.colmap=true``, a COLMAP text
model.  With no INPUT it runs on the bundled sample.  Ctrl-C stops tracking and
writes what was computed so far.  ``viewer=true`` shows the reconstruction live
(:mod:`viewer`; offscreen it records to ``viewer.record``, default ``DIR/viewer.mp4``).
"""
from __future__ import annotations

import argparse

HELP = "track a video, image folder or dataset sequence: poses, focal, depth, point cloud"


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/<input name>)")
    p.add_argument("--calib", default=None, metavar="FILE", help="calibration file `fx fy cx cy [k1 k2 p1 p2 [k3]]`")
    p.add_argument("--focal", type=float, default=None, metavar="F", help="known focal length in input pixels")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(p: argparse.ArgumentParser) -> None:
    p.usage = "slam run [INPUT] [--out DIR] [--calib FILE] [--focal F] [KEY=VALUE ...]"
    _add_options(p)
    p.add_argument("input", nargs="?", default=None, metavar="INPUT",
                   help="video file, image folder, or TartanAir/EuRoC/TUM/KITTI sequence (default: bundled sample)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="Hydra overrides of configs/run.yaml, e.g. correspondence=oracle outputs.colmap=true")


def parse_trailing(args: argparse.Namespace) -> argparse.Namespace:
    """Options given after INPUT arrive in ``args.overrides``: parse them out again."""
    from slam.commands import split_trailing

    inner = argparse.ArgumentParser(prog="slam run", add_help=False)
    _add_options(inner)
    rest = list(args.overrides or [])
    if args.input is not None and "=" in args.input and not args.input.startswith(("/", ".")):
        rest.insert(0, args.input)  # `slam run key=value` with no INPUT
        args.input = None
    ns, rest = split_trailing(inner, rest, "INPUT")
    for key in ("out", "calib", "focal"):
        if getattr(ns, key) is not None:
            setattr(args, key, getattr(ns, key))
    args.no_progress = bool(args.no_progress or ns.no_progress)
    args.overrides = rest
    return args


def main(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from slam.config import load_config
    from slam.data.detect import open_sequence
    from slam.data.synthetic import sample_path
    from slam.io.outputs import write_outputs
    from slam.system.runner import run_sequence

    args = parse_trailing(args)
    overrides = list(args.overrides)
    if args.calib:
        overrides.append(f"input.calib={args.calib}")
    if args.focal:
        overrides.append(f"input.focal={args.focal}")
    cfg = load_config("run", overrides)
    path = Path(args.input) if args.input else sample_path()
    ic = cfg.input
    seq = open_sequence(path, calib=ic.calib, start=ic.start, end=ic.end, stride=ic.stride,
                        max_frames=ic.max_frames)
    out = Path(args.out) if args.out else Path("runs") / (seq.name or path.stem)
    print(f"slam run: {seq.kind} input {path} ({len(seq)} frames), correspondence={cfg.correspondence.name}, "
          f"output {out}", file=sys.stderr)
    from viewer.live import make_viewer

    viewer = make_viewer(cfg.viewer, default_record=out / "viewer.mp4")
    recon = run_sequence(seq, cfg, progress=not args.no_progress, on_keyframe=viewer.on_keyframe if viewer else None)
    files = write_outputs(recon, out, colmap=bool(cfg.outputs.colmap), fuse=dict(cfg.outputs.fuse),
                          motion_masks=bool(cfg.outputs.motion_masks), motion_thresh=float(cfg.motion.mask_thresh))
    if cfg.depth.video.enabled and not recon.interrupted and len(recon.kf_indices) >= 2:
        recon = _video_depth(seq, recon, cfg, out, files, progress=not args.no_progress)
    st = recon.stats
    fx, fy, cx, cy = recon.input_intrinsics
    how = "given"
    if recon.focal_estimated:
        how = ("estimated, but held in the last bundle adjustment: the motion constrains it weakly"
               if st.get("focal_held")
               else f"estimated, ±{100 * st.get('focal_rel_std', float('nan')):.1f} %")
    focal = f"focal {fx:.1f} px ({how})"
    print(f"{len(recon.timestamps)} frames, {len(recon.kf_indices)} keyframes, {100 * recon.tracked.mean():.0f}% tracked, "
          f"{st['fps']:.1f} frames/s, {st['wall_s']:.1f} s, peak {st['peak_rss_mb']:.0f} MB, {focal}", file=sys.stderr)
    if "message" in st:
        print(f"note: {st['message']}", file=sys.stderr)
    for name, p in files.items():
        print(f"  {name}: {p}", file=sys.stderr)
    if viewer is not None:
        viewer.close()
    if recon.interrupted:
        print("interrupted: the outputs hold what was computed so far", file=sys.stderr)
        return 130
    return 0


def _video_depth(seq, recon, cfg, out, files: dict, *, progress: bool):
    """Run the video-depth stage; replace ``points.ply`` by its fused cloud and record it in the summary.

    Ctrl-C keeps the tracking outputs already written and the depth maps finished so far.
    """
    import json

    from slam.depth.stage import run_video_depth
    from slam.io.outputs import atomic_path, write_json
    from slam.io.ply import write_ply

    try:
        res = run_video_depth(seq, recon, cfg.depth, out, progress=progress)
    except KeyboardInterrupt:
        recon.interrupted = True
        return recon
    xyz, rgb = res["points"]
    with atomic_path(files["summary"].with_name("points.ply")) as tmp:
        write_ply(tmp, xyz, rgb)
    files["points"] = files["summary"].with_name("points.ply")
    files["depth"] = res["depth_dir"]
    summary = json.loads(files["summary"].read_text())
    summary["points"] = int(len(xyz))
    summary["points_from"] = "video_depth"
    summary["video_depth"] = {"frames": res["frames"], "dir": "depth",
                              "wall_s": res["stats"].get("wall_s"),
                              "working_size": res["stats"].get("working_size")}
    write_json(files["summary"], summary)
    return recon
