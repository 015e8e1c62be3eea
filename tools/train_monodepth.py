#!/usr/bin/env python3
"""Train the project's monocular depth network (slam.depth.monodepth) on synthetic worlds.

Data: ``--worlds`` procedural worlds (``slam.data.synthetic.make_world``, seeds
``--seed-base`` + i, scenes and motions drawn in turn, never the seeds of the
benchmarks or tests), ``--frames-per-world`` frames each at ``--size``, with
exact depth; rendered once at the start and kept in memory.  The last
``--val-worlds`` worlds are held out.  Augmentation: horizontal flips and a
random brightness/contrast change.  Loss: ``slam.depth.monodepth.ssi_loss``.
Adam with a cosine learning-rate decay over ``--time`` seconds (or ``--steps``).

Writes ``--out`` (the checkpoint, with its provenance: command, seed, steps, wall
time, device, data) and, next to it, ``<stem>_metrics.csv`` and a loss-curve
``<stem>_loss.png``; prints the held-out abs-rel / delta<1.25 (after per-image
median scaling of depth) of the network against a constant (flat) prediction.

Usage:  python tools/train_monodepth.py --out weights/monodepth_small.pt [--time 1500] [--seed 0]
        python tools/train_monodepth.py --out weights/monodepth_small.pt --eval-only weights/monodepth_small.pt
"""
from __future__ import annotations

import argparse
import csv
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENES = ("room", "street", "table", "clutter")
MOTIONS = ("handheld", "forward", "orbit", "rotation", "shaky")


def render_data(n_worlds: int, frames: int, size: tuple[int, int], seed_base: int,
                first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 images and (N, H, W) float32 depths of worlds ``first .. n_worlds - 1``."""
    from slam.data.synthetic import make_world

    W, H = size
    imgs, deps = [], []
    for i in range(first, n_worlds):
        w = make_world(seed=seed_base + i, scene=SCENES[i % len(SCENES)], motion=MOTIONS[(i // 4) % len(MOTIONS)],
                       frames=max(frames * 5, 10), width=W, height=H, dynamic=(i % 3 == 0),
                       low_texture=0.2 * (i % 2))
        for k in np.linspace(0, len(w) - 1, frames).astype(int):
            r = w.render(int(k))
            imgs.append(r.image)
            deps.append(r.depth)
    return np.stack(imgs), np.stack(deps).astype(np.float32)


def evaluate(model, imgs: np.ndarray, deps: np.ndarray) -> dict:
    """Held-out abs-rel / delta<1.25 of the network and of a flat prediction.

    The network's inverse depth is known up to scale and shift: each image's is
    aligned to the ground-truth inverse depth by least squares (as the system
    aligns it to its own depths), inverted, clipped to the image's ground-truth
    depth range (the usual cap of affine-invariant evaluations: an inverse
    depth aligned to ~0 is "very far", not an error of 1e6) and scored with
    per-image median scaling."""
    from slam.depth.align import align_scale_shift
    from slam.depth.metrics import depth_metrics

    pred = []
    with torch.no_grad():
        for im, d in zip(imgs, deps):
            inv = model.predict(im)
            ok = d > 0
            s, t = align_scale_shift(inv[ok], 1.0 / d[ok], None, {"loss": "l2"})
            a = s * inv + t
            pred.append(np.clip(1.0 / np.maximum(a, 1e-9), d[ok].min(), d[ok].max()))
    net = depth_metrics(np.stack(pred), deps)
    flat = depth_metrics(np.ones_like(deps), deps)
    return {"abs_rel": net["abs_rel"], "d125": net["delta_1.25"], "flat_abs_rel": flat["abs_rel"],
            "flat_d125": flat["delta_1.25"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    ap.add_argument("--time", type=float, default=1500.0, help="training time budget in seconds")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worlds", type=int, default=240)
    ap.add_argument("--val-worlds", type=int, default=24)
    ap.add_argument("--frames-per-world", type=int, default=6)
    ap.add_argument("--seed-base", type=int, default=30000)
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--width", type=int, default=16, help="channels of the first stage")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-only", default=None, metavar="CKPT",
                    help="re-evaluate a checkpoint on its held-out worlds and store the result in its provenance")
    args = ap.parse_args()

    from slam.depth.monodepth import MonoDepthNet, load_monodepth, save_monodepth, ssi_loss

    W, H = (int(v) for v in args.size.lower().split("x"))
    if args.eval_only:
        model = load_monodepth(args.eval_only)
        va_i, va_d = render_data(args.worlds, args.frames_per_world, (W, H), args.seed_base,
                                 first=args.worlds - args.val_worlds)
        ev = evaluate(model, va_i, va_d)
        ck = torch.load(args.eval_only, map_location="cpu", weights_only=True)
        prov = dict(ck["provenance"])
        prov["held_out"] = {k: round(float(v), 4) for k, v in ev.items()}
        prov["held_out_by"] = "python " + " ".join(sys.argv)
        save_monodepth(args.eval_only, model, prov)
        print(f"held-out abs_rel {ev['abs_rel']:.3f} d<1.25 {ev['d125']:.3f} "
              f"(flat: {ev['flat_abs_rel']:.3f} / {ev['flat_d125']:.3f}); updated {args.eval_only}")
        return 0

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    imgs, deps = render_data(args.worlds, args.frames_per_world, (W, H), args.seed_base)
    n_val = args.val_worlds * args.frames_per_world
    tr_i, tr_d, va_i, va_d = imgs[:-n_val], deps[:-n_val], imgs[-n_val:], deps[-n_val:]
    print(f"data: {len(tr_i)} train / {len(va_i)} held-out images {W}x{H} in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    model = MonoDepthNet(args.width)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    x_all = torch.from_numpy(tr_i).permute(0, 3, 1, 2).float() / 255.0
    inv_all = torch.from_numpy(np.where(tr_d > 0, 1.0 / np.maximum(tr_d, 1e-6), 0.0).astype(np.float32))
    out = Path(args.out)
    rows, step, t_train = [], 0, time.perf_counter()
    while True:
        el = time.perf_counter() - t_train
        if (args.steps and step >= args.steps) or (not args.steps and el >= args.time):
            break
        frac = step / args.steps if args.steps else el / args.time
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        idx = torch.from_numpy(rng.integers(0, len(x_all), args.batch))
        x, inv = x_all[idx], inv_all[idx]
        if rng.random() < 0.5:
            x, inv = x.flip(-1), inv.flip(-1)
        gain = torch.from_numpy(rng.uniform(0.7, 1.3, (args.batch, 1, 1, 1)).astype(np.float32))
        bias = torch.from_numpy(rng.uniform(-0.1, 0.1, (args.batch, 1, 1, 1)).astype(np.float32))
        x = ((x - 0.5) * gain + 0.5 + bias).clamp(0, 1)
        loss = ssi_loss(model(x), inv, torch.ones_like(inv, dtype=torch.bool))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            rows.append({"step": step, "time_s": round(time.perf_counter() - t_train, 1), "loss": loss.item()})
            print(f"step {step} loss {loss.item():.4f} {rows[-1]['time_s']} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t_train
    ev = evaluate(model, va_i, va_d)
    prov = {"command": "python " + " ".join(sys.argv), "seed": args.seed, "steps": step, "train_s": round(wall, 1),
            "device": f"cpu ({platform.processor() or platform.machine()}, {args.threads} threads)",
            "data": f"{args.worlds - args.val_worlds} synthetic worlds (seeds {args.seed_base}.."
                    f"{args.seed_base + args.worlds - args.val_worlds - 1}) x {args.frames_per_world} frames {W}x{H}",
            "held_out": {k: round(float(v), 4) for k, v in ev.items()}, "date": time.strftime("%Y-%m-%d")}
    save_monodepth(out, model, prov)
    with open(out.with_name(out.stem + "_metrics.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["step", "time_s", "loss"])
        wr.writeheader()
        wr.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
        ax.set_xlabel("step")
        ax.set_ylabel("scale-shift-invariant loss")
        ax.set_yscale("log")
        fig.tight_layout()
        fig.savefig(out.with_name(out.stem + "_loss.png"), dpi=80)
    except ImportError:
        pass
    print(f"{step} steps in {wall:.0f} s; held-out abs_rel {ev['abs_rel']:.3f} d<1.25 {ev['d125']:.3f} "
          f"(flat: {ev['flat_abs_rel']:.3f} / {ev['flat_d125']:.3f}); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
