"""``slam synth OUT_DIR``: render a synthetic sequence with exact ground truth to disk."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from slam.data.synthetic import FORMATS, MOTION_KINDS, SCENE_KINDS

HELP = "Render a synthetic video or dataset with exact ground truth (poses, depth, intrinsics)."


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` arguments to ``parser``."""
    parser.add_argument("out", metavar="OUT_DIR", help="output folder (created; must be empty unless --force)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical output")
    parser.add_argument("--frames", type=int, default=120, help="number of frames (default 120)")
    parser.add_argument("--size", default="320x240", metavar="WxH", help="image size (default 320x240)")
    parser.add_argument("--scene", default="room", metavar="KIND",
                        help=f"world: {', '.join(SCENE_KINDS)} (default room)")
    parser.add_argument("--motion", default="handheld", metavar="KIND",
                        help=f"camera motion: {', '.join(MOTION_KINDS)} (default handheld)")
    parser.add_argument("--dynamic", action="store_true", help="add rigidly moving objects (masks are written)")
    parser.add_argument("--movers", type=int, default=1, help="number of moving objects with --dynamic (default 1)")
    parser.add_argument("--mover-size", type=float, default=0.3, metavar="FRAC",
                        help="mover size as a fraction of the view width (default 0.3: about 10%% moving pixels "
                             "per mover; 0.5: 25-30%%)")
    parser.add_argument("--focal", type=float, default=None,
                        help="focal length in pixels (default: random in 0.6-1.4 x width)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate; frame k is at k / fps (default 30)")
    parser.add_argument("--format", default="video", metavar="FMT",
                        help=f"layout: {', '.join(FORMATS)} (default video)")
    parser.add_argument("--noise", action="store_true", help="sensor noise, blur and exposure changes")
    parser.add_argument("--low-texture", type=float, default=0.0, metavar="FRAC",
                        help="fraction of surfaces with a flat colour (default 0)")
    parser.add_argument("--supersample", type=int, default=1, metavar="N",
                        help="anti-aliasing: N x N samples per pixel (default 1)")
    parser.add_argument("--depth", action="store_true", help="video format: also write depth/NNNNNN.npy")
    parser.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_size(text: str) -> tuple[int, int]:
    """``"320x240"`` -> ``(320, 240)``; raises InputError otherwise."""
    from slam.data.sequence import InputError

    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise InputError(f"--size must be WIDTHxHEIGHT, e.g. 320x240; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def render_specs(specs: str, root: Path, frames: int, size: str,
                 extra: tuple[str, ...] = ()) -> list[tuple[str, str, str, Path]] | None:
    """Render comma-separated ``scene:motion:seed`` worlds with depth under ``root``
    (``slam synth ROOT/scene-motion-seed --depth --quiet [extra]``, for the benchmark scripts).

    Returns ``[(scene, motion, seed, folder), ...]``, or None when one of them failed
    (``slam synth`` has printed why)."""
    from slam.cli import main as cli

    out = []
    for spec in [t for t in specs.split(",") if t]:
        scene, motion, seed = spec.split(":")
        d = Path(root) / spec.replace(":", "-")
        if cli(["synth", str(d), "--seed", seed, "--frames", str(frames), "--size", size,
                "--scene", scene, "--motion", motion, "--depth", "--quiet", *extra]) != 0:
            return None
        out.append((scene, motion, seed, d))
    return out


def main(args: argparse.Namespace) -> int:
    """Render and write; returns 0."""
    from slam.data.sequence import InputError
    from slam.data.synthetic.world import WorldSpec, build_world
    from slam.data.synthetic.writers import write_sequence

    width, height = parse_size(args.size)
    if args.format not in FORMATS:
        raise InputError(f"unknown format {args.format!r}; choose one of: {', '.join(FORMATS)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise InputError(f"{out} is not empty (use --force to write into it)")
    spec = WorldSpec(seed=args.seed, scene=args.scene, motion=args.motion, frames=args.frames, width=width,
                     height=height, focal=args.focal, fps=args.fps, dynamic=args.dynamic, num_movers=args.movers,
                     mover_size=args.mover_size, noise=args.noise, low_texture=args.low_texture,
                     supersample=args.supersample)
    seq = build_world(spec)
    command = ["slam", "synth", *sys.argv[2:]] if sys.argv[1:2] == ["synth"] else None
    if command is None:
        command = _reconstruct_command(args)
    write_sequence(seq, out, args.format, progress=not args.quiet, depth=args.depth, command=command)
    K = seq.intrinsics
    if not args.quiet:
        print(f"wrote {len(seq)} frames ({args.format}, {K.width}x{K.height}, f={K.fx:.1f}) to {out}")
    return 0


def _reconstruct_command(args: argparse.Namespace) -> list[str]:
    """An equivalent command line (used when not invoked from the ``slam`` executable)."""
    cmd = ["slam", "synth", str(args.out), "--seed", str(args.seed), "--frames", str(args.frames), "--size",
           args.size, "--scene", args.scene, "--motion", args.motion, "--format", args.format, "--fps", f"{args.fps:g}"]
    if args.focal is not None:
        cmd += ["--focal", f"{args.focal:g}"]
    if args.dynamic:
        cmd += ["--dynamic", "--movers", str(args.movers), "--mover-size", f"{args.mover_size:g}"]
    if args.noise:
        cmd.append("--noise")
    if args.low_texture:
        cmd += ["--low-texture", f"{args.low_texture:g}"]
    if args.supersample != 1:
        cmd += ["--supersample", str(args.supersample)]
    if args.depth:
        cmd.append("--depth")
    return cmd
