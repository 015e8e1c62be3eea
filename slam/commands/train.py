"""``slam train [--out DIR] [KEY=VALUE ...]``: train the correspondence network (:mod:`slam.train`)."""
from __future__ import annotations

import argparse

HELP = "train the learned correspondence network (supervised on synthetic worlds, self-supervised, or BA fine-tuning)"


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default: the config's out, runs/train); a rerun there resumes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(p: argparse.ArgumentParser) -> None:
    p.usage = "slam train [--out DIR] [--quiet] [KEY=VALUE ...]"
    _add_options(p)
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="Hydra overrides of configs/train.yaml, e.g. mode=selfsup net=large steps=500 "
                        "time_budget=600 device=cuda")


def main(args: argparse.Namespace) -> int:
    import json
    import sys

    from slam.commands.adapt import split_trailing
    from slam.config import load_config
    from slam.train.trainer import train

    args = split_trailing(args, _add_options, "slam train")
    cfg = load_config("train", args.overrides)
    out = args.out or str(cfg.out)
    command = " ".join(["slam", "train", *sys.argv[2:]]) if sys.argv[1:2] == ["train"] else None
    if command is None:
        command = " ".join(["slam", "train"] + (["--out", out] if args.out else []) + list(args.overrides))
    res = train(cfg, out, command=command, progress=False if args.quiet else None)
    s = res.summary
    final = s.get("final", {})
    print(f"trained {res.steps_this_run} steps (total {res.step}) in {res.elapsed:.0f} s "
          f"({s.get('steps_per_s', 0):.2f} steps/s); final loss {final.get('loss', float('nan')):.4g}; "
          f"wrote {res.out}/checkpoint.pt")
    val = s.get("val")
    if val:
        keys = [k for k in ("net_full_epe", "net_feat_epe", "netba_induced_epe", "dis_full_epe", "dis_feat_epe") if k in val]
        print("held-out EPE (px): " + json.dumps({k: round(val[k], 3) for k in keys}))
    return 0
