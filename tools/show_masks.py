#!/usr/bin/env python
"""Overlay a run's motion masks on its input frames: one PNG strip for a README or a report.

``slam run INPUT --out RUN outputs.motion_masks=true`` writes ``RUN/motion_masks/NNNNNN.png``
(255 where a pixel moves, at feature resolution); this tool tints those pixels red on the
input frames (read with the same readers as ``slam run``) and tiles the chosen frames in a row.

    python tools/show_masks.py ../shared/data/visp-cube/cube.mp4 RUN --frames 50 130 170 210 \\
        --out docs/img/cube_motion.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from slam.data.detect import open_sequence
from slam.data.sequence import InputError


def overlay(image: np.ndarray, mask: np.ndarray, width: int, alpha: float = 0.5) -> np.ndarray:
    """(h, width, 3) BGR tile: ``image`` (H, W, 3) RGB resized, moving pixels of ``mask`` tinted red."""
    h = int(round(image.shape[0] * width / image.shape[1]))
    tile = cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)[..., ::-1].astype(np.float32)
    moving = cv2.resize(mask, (width, h), interpolation=cv2.INTER_NEAREST) > 127
    tile[moving] = (1 - alpha) * tile[moving] + alpha * np.array([0, 0, 255], np.float32)
    return np.clip(tile, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="the run's input (video, image folder or sequence)")
    ap.add_argument("run", help="the run's output folder (with motion_masks/)")
    ap.add_argument("--frames", type=int, nargs="+", required=True, help="frame indices to show")
    ap.add_argument("--width", type=int, default=320, help="tile width in pixels")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args(argv)
    masks = Path(args.run) / "motion_masks"
    if not masks.is_dir():
        print(f"error: {masks} does not exist (run with outputs.motion_masks=true)", file=sys.stderr)
        return 2
    want = set(args.frames)
    tiles: dict[int, np.ndarray] = {}
    try:
        for frame in open_sequence(args.input):
            if frame.index in want:
                m = cv2.imread(str(masks / f"{frame.index:06d}.png"), cv2.IMREAD_GRAYSCALE)
                if m is None:
                    raise InputError(f"{masks}: no mask for frame {frame.index}")
                tile = overlay(frame.image, m, args.width)
                cv2.putText(tile, str(frame.index), (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
                tiles[frame.index] = tile
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing = sorted(want - set(tiles))
    if missing:
        print(f"error: {args.input} has no frames {missing}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, np.hstack([tiles[i] for i in args.frames]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
