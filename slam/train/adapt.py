"""``slam adapt``: fine-tune trained weights on one unlabelled video for a bounded time.

Two phases, sharing one optimiser (AdamW, constant learning rate):

1. self-supervised (:func:`slam.train.unroll.selfsup_loss`) on random frame
   pairs ``(i, i + g)``, ``1 <= g <= pairs.max_gap``, both directions, at the
   processing resolution of ``slam run`` (``image.pixels``), for the share
   ``selfsup_share`` of the budget (0 by default: measured to make tracking
   worse, docs/benchmarks.md);
2. BA fine-tuning (:func:`slam.train.unroll.ba_finetune_loss`) on windows of
   consecutive keyframes of a reconstruction of the same video: the classical
   system (``slam run``, DIS correspondences) provides keyframe poses and
   inverse depths that are held constant; the network's targets and weights
   are fitted to their reprojection.

The classical reconstruction counts against the time budget; when it has
fewer than two keyframes (or fails), phase 1 continues instead.  Phase 1 runs
only when ``selfsup_share`` is above 0 (or as that fallback).  At least one
step of each phase that runs is taken, so a tiny budget may be overrun.

The output is a normal checkpoint (:func:`slam.net.save_checkpoint`) whose
provenance ``extra.note`` reads ``adapted from WEIGHTS on VIDEO``.
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from slam.data.sequence import InputError
from slam.geometry.camera import processing_size
from slam.net.checkpoint import load_checkpoint, save_checkpoint
from slam.train.data import Batch, Clip, collate, graph_edges
from slam.train.trainer import loss_options
from slam.train.unroll import ba_finetune_loss, selfsup_loss


def load_frames(seq, width: int, height: int, max_frames: int | None) -> np.ndarray:
    """(N, H, W, 3) uint8 frames of ``seq`` resized to ``width x height`` (area interpolation)."""
    n = len(seq) if not max_frames else min(len(seq), int(max_frames))
    out = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        im = seq[k].image
        if im.shape[:2] != (height, width):
            im = cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA)
        out[k] = im
    return out


def pair_batch(frames: np.ndarray, pairs: list[tuple[int, int]]) -> Batch:
    """Unlabelled :class:`Batch` of frame pairs; every pair gives edges ``a -> b`` and ``b -> a``."""
    clips = []
    ii, jj = np.array([0, 1]), np.array([1, 0])
    for a, b in pairs:
        clips.append(Clip(images=frames[[a, b]], intrinsics=np.array([1.0, 1.0, 0.0, 0.0]), ii=ii, jj=jj))
    return collate(clips, n_fixed=1)


def keyframe_clips(recon, frames: int, radius: int) -> list[Clip]:
    """Windows of ``frames`` consecutive keyframes of a reconstruction, with its poses and
    inverse depths as the (constant) solution.  Windows overlap by half."""
    n = len(recon.kf_indices)
    if n < 2:
        return []
    frames = min(frames, n)
    ii, jj = graph_edges(frames, radius)
    step = max(1, frames // 2)
    starts = list(range(0, n - frames + 1, step))
    if starts[-1] != n - frames:
        starts.append(n - frames)
    out = []
    for s in starts:
        w = slice(s, s + frames)
        out.append(Clip(images=recon.kf_images[w], intrinsics=np.asarray(recon.intrinsics, np.float64), ii=ii, jj=jj,
                        poses=recon.kf_poses[w], disps=recon.kf_disps[w].astype(np.float32),
                        meta={"keyframes": [int(k) for k in recon.kf_indices[w]]}))
    return out


def reconstruct(seq, cfg: DictConfig, pixels: int):
    """Run the classical system on ``seq`` (``slam run`` with ``cfg.solution.overrides``)."""
    from slam.config import load_config
    from slam.system.runner import run_sequence

    overrides = [f"image.pixels={pixels}", f"device={cfg.device}", *list(cfg.solution.overrides)]
    return run_sequence(seq, load_config("run", overrides), progress=False)


def adapt(video: str | Path, weights: str | Path, out: str | Path, cfg: DictConfig,
          time_s: float | None = None, command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``weights`` on ``video`` and write ``out``; returns a summary dict.

    Raises:
        InputError: unreadable video or weights, too few frames, bad options.
    """
    from slam.data.detect import open_sequence

    t_start = time.perf_counter()
    budget = float(time_s if time_s is not None else cfg.time)
    if budget <= 0:
        raise InputError(f"--time must be positive, got {budget:g}")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise InputError(f"{out} is a folder; give the output weights file, e.g. {out}/adapted.pt")
    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    dev = torch.device(str(cfg.device))
    model, prov = load_checkpoint(weights, map_location=dev)  # InputError on bad weights
    model.train()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    seq = open_sequence(video, stride=int(cfg.input.stride))
    if len(seq) < 2:
        raise InputError(f"{video}: needs at least 2 frames, found {len(seq)}")
    first = seq[0].image
    W, H = processing_size(first.shape[1], first.shape[0], int(cfg.image.pixels))
    frames = load_frames(seq, W, H, cfg.input.max_frames)
    uo = loss_options(cfg.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    rng = np.random.default_rng(int(cfg.seed))
    history: dict[str, list[float]] = {"selfsup": [], "ba": []}
    steps = {"selfsup": 0, "ba": 0}

    def optimise(loss: torch.Tensor) -> bool:
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return False
        loss.backward()
        g = torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.clip))
        if torch.isfinite(g):
            opt.step()
            return True
        return False

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(budget), desc="adapt", unit="s", dynamic_ncols=True, file=sys.stderr)

    def tick(phase: str, loss: float) -> None:
        if bar is not None:
            bar.n = min(int(time.perf_counter() - t_start), int(budget))
            bar.set_postfix(phase=phase, loss=f"{loss:.4g}")
            bar.refresh()

    n = len(frames)
    max_gap = max(1, min(int(cfg.pairs.max_gap), n - 1))

    def selfsup_until(t_stop: float) -> None:
        while time.perf_counter() < t_stop or steps["selfsup"] == 0:
            pairs = []
            for _ in range(int(cfg.pairs.per_step)):
                g = int(rng.integers(1, max_gap + 1))
                a = int(rng.integers(0, n - g))
                pairs.append((a, a + g))
            batch = pair_batch(frames, pairs).to(dev)
            if cfg.channels_last:
                batch.images = batch.images.contiguous(memory_format=torch.channels_last)
            loss, m = selfsup_loss(model, batch, uo)
            optimise(loss)
            steps["selfsup"] += 1
            history["selfsup"].append(m["loss"])
            tick("selfsup", m["loss"])

    # phase 1: self-supervised pairs (none at selfsup_share 0)
    if float(cfg.selfsup_share) > 0:
        selfsup_until(t_start + float(cfg.selfsup_share) * budget)
    # phase 2: BA fine-tuning against the classical reconstruction (phase 1 goes on when there is none)
    note = ""
    t_end = t_start + budget
    if time.perf_counter() < t_end:
        try:
            recon = reconstruct(seq, cfg, int(cfg.image.pixels))
            clips = keyframe_clips(recon, int(cfg.clips.frames), int(cfg.clips.radius))
        except InputError as e:
            clips, note = [], f"BA fine-tuning skipped: reconstruction failed ({e})"
        if not clips and not note:
            note = "BA fine-tuning skipped: the reconstruction has fewer than 2 keyframes"
        k = 0
        while clips and (time.perf_counter() < t_end or steps["ba"] == 0):
            clip = clips[int(rng.integers(0, len(clips)))] if k >= len(clips) else clips[k]
            k += 1
            batch = collate([clip]).to(dev)
            if cfg.channels_last:
                batch.images = batch.images.contiguous(memory_format=torch.channels_last)
            loss, m = ba_finetune_loss(model, batch, uo, solution=(batch.poses, batch.disps))
            optimise(loss)
            steps["ba"] += 1
            history["ba"].append(m["loss"])
            tick("ba", m["loss"])
        if not clips:
            note += "; self-supervised training used the rest of the time"
            selfsup_until(t_end)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t_start

    def first_last(v: list[float]) -> dict[str, float]:
        if not v:
            return {}
        k = max(1, len(v) // 5)
        return {"first": float(np.mean(v[:k])), "last": float(np.mean(v[-k:]))}

    summary = {"video": str(video), "weights": str(weights), "out": str(out), "wall_time_s": round(wall, 1),
               "resolution": [W, H], "frames": n, "steps": steps,
               "selfsup_loss": first_last(history["selfsup"]), "ba_loss": first_last(history["ba"])}
    if note:
        summary["note"] = note
    extra = {"note": f"adapted from {weights} on {video}", "base_provenance": {
        k: v for k, v in prov.items() if k in ("command", "steps", "wall_time_s", "device", "created")},
        "adapt": {k: v for k, v in summary.items() if k not in ("out",)}}
    model = model.to(memory_format=torch.contiguous_format)
    save_checkpoint(out, model, command=command, seed=int(cfg.seed), steps=int(prov.get("steps", 0)) + sum(steps.values()),
                    wall_time_s=float(prov.get("wall_time_s", 0.0)) + wall,
                    device=f"{dev.type} ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
                    half=bool(cfg.half), extra=extra)
    return summary
