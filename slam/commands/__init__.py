"""Subcommands of the ``slam`` console command.

Each module here defines ``HELP`` (one line), ``register(parser)`` (adds its
arguments to an ``argparse`` sub-parser) and ``main(args) -> int``.  Modules
import heavy dependencies (torch, open3d) inside ``main`` so that
``slam --help`` stays fast.
"""
