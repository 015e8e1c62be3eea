"""Subcommands of the ``slam`` console command.

Each module here defines ``HELP`` (one line), ``register(parser)`` (adds its
arguments to an ``argparse`` sub-parser) and ``main(args) -> int``.  Modules
import heavy dependencies (torch, open3d) inside ``main`` so that
``slam --help`` stays fast.
"""
from __future__ import annotations

import argparse


def split_trailing(inner: argparse.ArgumentParser, items: list[str], after: str) -> tuple[argparse.Namespace, list[str]]:
    """Options given after a positional argument arrive in its ``REMAINDER`` list:
    parse them with ``inner`` and return them with the remaining ``KEY=VALUE``
    overrides.  Raises :class:`InputError` (one line) for anything else."""
    from slam.data.sequence import InputError

    try:
        ns, rest = inner.parse_known_args(list(items))
    except SystemExit:
        raise InputError(f"bad options after {after}") from None
    bad = [r for r in rest if r.startswith("-") or "=" not in r]
    if bad:
        raise InputError(f"unexpected argument {bad[0]!r} (overrides are KEY=VALUE)")
    return ns, rest
