"""The ``slam`` console command: ``slam <subcommand> [args]``.

User mistakes (:class:`slam.data.sequence.InputError`) are printed as one
line and exit with status 2; Ctrl-C exits with 130 after the subcommand has
saved what it had.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Threads that finish their OpenMP work go to sleep instead of spinning: the system runs
# torch in several Python threads (frontend, backend), and spinning pools starve each
# other on a 2-core CPU (the final BA took 6-38 s instead of ~1 s under load).  Must be
# set before torch starts its OpenMP runtime; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# subcommand name -> module in slam.commands (order = order in --help)
COMMANDS: dict[str, str] = {
    "run": "run",
    "eval": "evaluate",
    "synth": "synth",
    "train": "train",
    "adapt": "adapt",
    "adapt-depth": "adapt_depth",
    "view": "view",
    "ba-demo": "ba_demo",
}


def _available() -> dict[str, object]:
    mods = {}
    for name, mod in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"slam.commands.{mod}")
        except ModuleNotFoundError as e:  # subcommand not built yet
            if e.name != f"slam.commands.{mod}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slam", description="Learned monocular video SLAM: poses, focal length, depth and point clouds from a video.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('slam').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _available().items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.register(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    from slam.data.sequence import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except InputError as e:
        print(f"slam {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
