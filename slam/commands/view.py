"""``slam view DIR [--record PATH] [KEY=VALUE ...]``: show a finished run's reconstruction.

Reads ``DIR/keyframes.npz``, ``DIR/points.ply`` and ``DIR/trajectory.txt`` (written by
``slam run``, :mod:`slam.io.outputs`) and draws the coloured keyframe points, the
keyframe frusta (the last one red) and the camera path (:mod:`viewer`).

* With a display and no ``--record``: an interactive window (keys: F follow, C filter,
  V overview, + / - point size, Q close).
* ``--record PATH``: ``*.png`` -> one still of the whole reconstruction; ``*.mp4`` -> a
  replay video in which the map grows keyframe by keyframe; anything else -> that replay
  as a folder of PNG frames.
* No display and no ``--record``: a still at ``DIR/view.png``.
"""
from __future__ import annotations

import argparse

HELP = "show a finished run's reconstruction (window, or render a PNG / replay video)"


def register(p: argparse.ArgumentParser) -> None:
    p.usage = "slam view DIR [--record PATH] [KEY=VALUE ...]"
    p.add_argument("dir", metavar="DIR", help="output folder of `slam run`")
    p.add_argument("--record", default=None, metavar="PATH",
                   help="render to PATH instead of a window: *.png a still, *.mp4 a replay video, else PNG frames")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="overrides of configs/view.yaml, e.g. viewer.point_size=4 viewer.follow=true")


def parse_trailing(args: argparse.Namespace) -> argparse.Namespace:
    """``--record`` given after DIR arrives in ``args.overrides``: parse it out again."""
    from slam.commands import split_trailing

    inner = argparse.ArgumentParser(prog="slam view", add_help=False)
    inner.add_argument("--record", default=None)
    ns, rest = split_trailing(inner, args.overrides or [], "DIR")
    if ns.record is not None:
        args.record = ns.record
    args.overrides = rest
    return args


def main(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from slam.config import load_config
    from slam.data.sequence import InputError
    from viewer.render import RenderUnavailable, make_renderer, open_sink
    from viewer.replay import load_run
    from viewer.settings import ViewerSettings

    args = parse_trailing(args)
    cfg = load_config("view", list(args.overrides))
    try:
        s = ViewerSettings.from_config(cfg.viewer)
    except ValueError as e:
        raise InputError(f"bad viewer setting: {e}") from None
    folder = Path(args.dir)
    run = load_run(folder)
    if len(run.poses) == 0:
        raise InputError(f"{folder}: the run has no keyframes")
    record = args.record or s.record
    interactive = record is None and not s.offscreen()
    if record is None and not interactive:
        record = str(folder / "view.png")
    try:
        r = make_renderer(s, interactive)
    except RenderUnavailable as e:
        raise InputError(f"cannot render (no usable OpenGL/EGL): {e}") from None
    try:
        if interactive:
            r.apply(run.update())
            r.render()
            print("slam view: close the window (or press Q) to exit; keys: F follow, C filter, V overview, "
                  "+/- point size", file=sys.stderr)
            while r.poll():
                import time

                time.sleep(1.0 / 60.0)
            return 0
        sink = open_sink(record, (s.width, s.height), s.record_fps)
        K = len(run.poses)
        if Path(record).suffix.lower() == ".png":
            r.apply(run.update())
            sink.write(r.render(capture=True))
        else:
            steps = np.unique(np.linspace(1, K, min(K, max(int(cfg.replay.max_frames), 1))).round().astype(int))
            done = 0
            for upto in steps:
                r.apply(run.update(int(upto), start=done, final=int(upto) == K))
                done = int(upto)
                frame = r.render(capture=True)
                sink.write(frame)
            for _ in range(round(float(cfg.replay.hold_s) * s.record_fps)):
                sink.write(frame)
        sink.close()
    finally:
        r.close()
    print(f"slam view: wrote {record} ({sink.frames} frame(s); {K} keyframes, {run.matched} points)", file=sys.stderr)
    return 0
