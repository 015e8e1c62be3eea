"""``slam adapt VIDEO --weights IN.pt --out OUT.pt``: fine-tune network weights on one video (:mod:`slam.train.adapt`)."""
from __future__ import annotations

import argparse

HELP = "fine-tune trained network weights on one unlabelled video (self-supervised, then BA fine-tuning)"


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, metavar="IN.pt", help="network checkpoint to start from (required)")
    p.add_argument("--out", default=None, metavar="OUT.pt", help="adapted checkpoint to write (required)")
    p.add_argument("--time", type=float, default=None, metavar="S",
                   help="wall-time budget in seconds (default: the config's time, 300)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register_video_command(p: argparse.ArgumentParser, usage: str, add_options, overrides_help: str) -> None:
    """``VIDEO [options] [KEY=VALUE ...]``: the arguments of a command that works on one video."""
    p.usage = usage
    add_options(p)
    p.add_argument("video", metavar="VIDEO", help="video file, image folder or dataset sequence")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE", help=overrides_help)


def register(p: argparse.ArgumentParser) -> None:
    register_video_command(p, "slam adapt VIDEO --weights IN.pt --out OUT.pt [--time S] [--quiet] [KEY=VALUE ...]",
                           _add_options,
                           "Hydra overrides of configs/adapt.yaml, e.g. image.pixels=19200 selfsup_share=0.3")


def split_trailing(args: argparse.Namespace, add_options, prog: str) -> argparse.Namespace:
    """Options given after the positional arguments arrive in ``args.overrides``: parse them out
    (later values win); what remains must be ``KEY=VALUE`` overrides."""
    from slam.data.sequence import InputError

    inner = argparse.ArgumentParser(prog=prog, add_help=False)
    add_options(inner)
    try:
        ns, rest = inner.parse_known_args(list(args.overrides or []))
    except SystemExit:
        raise InputError("bad options after the positional arguments") from None
    for key, value in vars(ns).items():
        if value not in (None, False):
            setattr(args, key, value)
    bad = [r for r in rest if "=" not in r]
    if bad:
        raise InputError(f"unexpected argument {bad[0]!r} (overrides are KEY=VALUE)")
    args.overrides = rest
    return args


def main(args: argparse.Namespace) -> int:
    import sys

    from slam.config import load_config
    from slam.data.sequence import InputError
    from slam.train.adapt import adapt

    args = split_trailing(args, _add_options, "slam adapt")
    if not args.weights or not args.out:
        raise InputError("--weights IN.pt and --out OUT.pt are required")
    cfg = load_config("adapt", args.overrides)
    command = " ".join(["slam", "adapt", *sys.argv[2:]]) if sys.argv[1:2] == ["adapt"] else None
    s = adapt(args.video, args.weights, args.out, cfg, time_s=args.time, command=command, progress=not args.quiet)
    st = s["steps"]
    print(f"adapted {s['weights']} on {s['video']} in {s['wall_time_s']:.0f} s at {s['resolution'][0]}x"
          f"{s['resolution'][1]}: {st['selfsup']} self-supervised and {st['ba']} BA steps; wrote {s['out']}")
    if s.get("note"):
        print(s["note"])
    return 0
