"""How well correspondence weights fit a video's classical reconstruction, in `slam adapt`'s own terms.

For each checkpoint, every ``--every``-th window of consecutive keyframes of the
classical reconstruction (the windows of `slam adapt`'s BA phase, built by
:func:`slam.train.adapt.keyframe_clips`) is run through
:func:`slam.train.unroll.ba_finetune_loss` without gradients, and the means over
the windows are printed: the loss (mixture NLL), ``ba_res`` (mean distance of the
network's last targets from the reconstruction's reprojection, image pixels at
the processing resolution) and ``weight`` (mean confidence the network gives).

    python tools/bench_adapt_fit.py VIDEO WEIGHTS [WEIGHTS ...] [--every 3] [--set key=value ...]

``--set`` takes overrides of configs/adapt.yaml (its ``clips``, ``loss`` and
``image`` nodes are used).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", help="video file, image folder or dataset sequence")
    ap.add_argument("weights", nargs="+", help="correspondence-network checkpoints")
    ap.add_argument("--every", type=int, default=3, help="use every n-th window")
    ap.add_argument("--set", nargs="*", default=[], help="configs/adapt.yaml overrides")
    args = ap.parse_args()

    from slam.config import load_config
    from slam.data.detect import open_sequence
    from slam.net.checkpoint import load_checkpoint
    from slam.train.adapt import keyframe_clips, reconstruct
    from slam.train.data import collate
    from slam.train.trainer import loss_options
    from slam.train.unroll import ba_finetune_loss

    cfg = load_config("adapt", list(args.set))
    seq = open_sequence(args.video, stride=int(cfg.input.stride))
    recon = reconstruct(seq, cfg, int(cfg.image.pixels))
    clips = keyframe_clips(recon, int(cfg.clips.frames), int(cfg.clips.radius))[:: max(1, args.every)]
    if not clips:
        print(f"{args.video}: the reconstruction has fewer than 2 keyframes", file=sys.stderr)
        return 1
    uo = loss_options(cfg.loss)
    dev = torch.device(str(cfg.device))
    batches = [collate([c]).to(dev) for c in clips]
    print(f"{args.video}: {len(recon.kf_indices)} keyframes, {len(clips)} windows of {cfg.clips.frames}\n")
    print("| weights | loss | ba_res [px] | mean weight |\n|---|---:|---:|---:|")
    for w in args.weights:
        torch.manual_seed(0)  # the same start for every checkpoint should loss.pose_init be `noisy`
        model, _ = load_checkpoint(w, map_location=dev)
        model.eval()
        rows = []
        with torch.no_grad():
            for b in batches:
                _, m = ba_finetune_loss(model, b, uo, solution=(b.poses, b.disps))
                rows.append((m["loss"], m["ba_res"], m["weight"]))
        loss, res, weight = np.mean(rows, axis=0)
        print(f"| {w} | {loss:.3f} | {res:.3f} | {weight:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
