"""``slam adapt-depth VIDEO --out OUT.pt``: adapt the monocular depth network to one video
(:mod:`slam.depth.selfsup`)."""
from __future__ import annotations

import argparse

HELP = "adapt the monocular depth network to one unlabelled video (view synthesis with the run's own poses)"


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="OUT.pt", help="adapted checkpoint to write (required)")
    p.add_argument("--weights", default=None, metavar="IN.pt",
                   help="depth checkpoint to start from (default: the shipped weights/monodepth_small.pt)")
    p.add_argument("--time", type=float, default=None, metavar="S",
                   help="wall-time budget in seconds, the reconstruction included (default: the config's, 180)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(p: argparse.ArgumentParser) -> None:
    from slam.commands.adapt import register_video_command

    register_video_command(p, "slam adapt-depth VIDEO --out OUT.pt [--weights IN.pt] [--time S] [--quiet] "
                           "[KEY=VALUE ...]", _add_options,
                           "Hydra overrides of configs/adapt_depth.yaml, e.g. train.max_gap=6 steps=500")


def main(args: argparse.Namespace) -> int:
    import sys

    from slam.commands.adapt import split_trailing
    from slam.config import load_config
    from slam.data.sequence import InputError
    from slam.depth.selfsup import adapt_on_video

    args = split_trailing(args, _add_options, "slam adapt-depth")
    if not args.out:
        raise InputError("--out OUT.pt is required")
    cfg = load_config("adapt_depth", args.overrides)
    command = " ".join(["slam", "adapt-depth", *sys.argv[2:]]) if sys.argv[1:2] == ["adapt-depth"] else None
    s = adapt_on_video(args.video, args.out, cfg, weights=args.weights, time_s=args.time, command=command,
                       progress=not args.quiet)
    print(f"adapted the depth network on {s['video']} ({s['frames']} frames, {s['keyframes']} keyframes) in "
          f"{s['wall_time_s']:.0f} s: {s['steps']} steps at {s['size'][0]}x{s['size'][1]}, photometric loss "
          f"{s['photo_before']:.4f} -> {s['photo_after']:.4f}; wrote {s['out']}")
    if s["interrupted"]:
        print("interrupted (Ctrl-C): the weights hold what was learned until then")
    print(f"use it with: slam run {s['video']} depth.prior.kind=network depth.prior.network.weights={s['out']}")
    return 0
