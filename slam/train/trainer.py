"""``slam train``: the training loop, its schedule, logs, plots and resumable state.

Outputs in the run folder ``OUT``:

* ``checkpoint.pt``: the network (:func:`slam.net.save_checkpoint`, loadable
  by :func:`slam.net.load_checkpoint`), written every ``log.checkpoint_every``
  steps and at the end;
* ``train_state.pt``: optimiser state, step, cumulative wall time, RNG state
  and the configuration (``torch.load(weights_only=True)``-safe); with
  ``resume=true`` a new run in the same folder continues from it;
* ``metrics.csv``: one row per ``log.every`` steps (means over the window);
* ``summary.json``: configuration, steps, wall time, speed, final losses,
  held-out evaluation (:mod:`slam.train.evaluate`);
* ``loss.png``: the loss curve (and its terms).

Determinism: batch ``b`` of the data stream, its augmentation and the noisy
pose initialisation depend only on ``(seed, b)``, so a resumed run sees the
same data it would have seen without the interruption.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from slam.data.sequence import InputError
from slam.net.checkpoint import load_checkpoint, save_checkpoint
from slam.net.config import NetConfig
from slam.net.model import CorrNet
from slam.train.data import ClipOptions, ClipStream, collate
from slam.train.evaluate import evaluate_flow
from slam.train.unroll import (
    UnrollOptions,
    ba_finetune_loss,
    flow_loss,
    selfsup_loss,
    supervised_loss,
)

MODES = ("supervised", "flow", "selfsup", "ba")
STATE_FORMAT = "slam.train_state"


# ----------------------------------------------------------------------------- schedule
def lr_at(progress: float, lr: float, schedule: str, warmup: float, final_ratio: float) -> float:
    """Learning rate at ``progress`` in [0, 1].

    ``onecycle``: linear warm-up from ``lr * final_ratio`` over ``warmup``, then
    linear decay to ``lr * final_ratio``; ``cosine``: the same warm-up, cosine
    decay; ``constant``: ``lr``.
    """
    p = min(max(progress, 0.0), 1.0)
    lo = lr * final_ratio
    if schedule == "constant":
        return lr
    if schedule not in ("onecycle", "cosine"):
        raise InputError(f"unknown schedule {schedule!r}; expected onecycle, cosine or constant")
    if warmup > 0 and p < warmup:
        return lo + (lr - lo) * p / warmup
    q = (p - warmup) / max(1.0 - warmup, 1e-9)
    if schedule == "onecycle":
        return lr + (lo - lr) * q
    return lo + 0.5 * (lr - lo) * (1.0 + math.cos(math.pi * q))


def progress_of(step: int, steps: int, elapsed: float, time_budget: float | None, clock: str) -> float:
    """Schedule progress from steps and/or time (``clock``: steps | time | auto = the larger)."""
    ps = step / max(steps, 1)
    pt = elapsed / time_budget if time_budget else 0.0
    if clock == "steps" or not time_budget:
        return ps
    if clock == "time":
        return pt
    return max(ps, pt)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


# ----------------------------------------------------------------------------- logging
class MetricLog:
    """Running means of metrics, flushed as CSV rows; the whole history is kept for the plot."""

    def __init__(self, path: Path, fields: list[str] | None = None) -> None:
        self.path = path
        self.window: dict[str, list[float]] = {}
        self.rows: list[dict[str, float]] = []
        self.fields = fields
        if path.is_file():
            with path.open() as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or []) or fields
                for row in reader:
                    self.rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.window.setdefault(k, []).append(float(v))

    def flush(self, **extra: float) -> dict[str, float] | None:
        """Write one row of window means plus ``extra`` columns; None when the window is empty."""
        if not self.window:
            return None
        row = {**extra, **{k: float(np.mean(v)) for k, v in self.window.items()}}
        self.window = {}
        if self.fields is None:
            self.fields = list(row)
        new = [k for k in row if k not in self.fields]
        if new:  # a column appeared (e.g. a metric of a later phase): rewrite the file with it
            self.fields += new
            self.rows.append(row)
            self._rewrite()
            return row
        self.rows.append(row)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, restval="", extrasaction="ignore")
            if not exists:
                w.writeheader()
            w.writerow(row)
        return row

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, restval="", extrasaction="ignore")
            w.writeheader()
            for r in self.rows:
                w.writerow(r)

    def truncate(self, step: int) -> None:
        """Drop rows after ``step`` (a resumed run restarts from its last checkpoint)."""
        keep = [r for r in self.rows if r.get("step", 0) <= step]
        if len(keep) != len(self.rows):
            self.rows = keep
            self._rewrite()


def plot_losses(rows: list[dict[str, float]], path: Path, title: str = "",
                terms: tuple[str, ...] = ()) -> None:
    """Loss curve (log scale) and optional terms vs step, saved as PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "loss" in r and "step" in r]
    fig, axes = plt.subplots(1, 2 if terms else 1, figsize=(11 if terms else 6, 4), squeeze=False)
    ax = axes[0, 0]
    if rows:
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["loss"] for r in rows], lw=1, label="loss")
        if len(rows) >= 8:  # smoothed
            k = max(3, len(rows) // 20)
            sm = np.convolve([r["loss"] for r in rows], np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], sm, lw=2, label=f"mean of {k}")
        ax.set_yscale("log")
        switch = [b["step"] for a, b in itertools.pairwise(rows)
                  if a.get("phase_flow", 0.0) >= 0.5 > b.get("phase_flow", 0.0)]
        for x in switch[:1]:  # supervised mode: end of the flow-only warm-up
            ax.axvline(x, color="grey", ls="--", lw=1, label="flow-only -> with BA")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if terms:
        ax2 = axes[0, 1]
        for t in terms:
            pts = [(r["step"], r[t]) for r in rows if t in r and r[t] > 0]
            if pts:
                ax2.plot(*zip(*pts), lw=1, label=t)
        ax2.set_yscale("log")
        ax2.set_xlabel("step")
        ax2.set_title("terms (last iteration)")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- state
def save_state(path: Path, step: int, elapsed: float, opt: torch.optim.Optimizer, cfg: dict[str, Any],
               extra: dict[str, Any] | None = None) -> None:
    """Write the resumable training state atomically (next to the checkpoint)."""
    payload = {"format": STATE_FORMAT, "step": int(step), "elapsed": float(elapsed),
               "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
               "config": json.dumps(cfg), "extra": json.dumps(extra or {})}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state (InputError when unreadable or of another format)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"training state {path}: unreadable ({type(e).__name__}); delete it or set resume=false") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise InputError(f"training state {path}: not a slam training state")
    return data


# ----------------------------------------------------------------------------- helpers
def build_model(cfg: DictConfig, device: torch.device) -> tuple[CorrNet, str | None]:
    """A fresh network of the configured preset, or the ``init`` checkpoint's weights."""
    net_cfg = NetConfig.from_dict(OmegaConf.to_container(cfg.net, resolve=True))
    if cfg.get("init"):
        model, _ = load_checkpoint(cfg.init, net_cfg, map_location=device)
        return model.train(), str(cfg.init)
    torch.manual_seed(int(cfg.seed))
    return CorrNet(net_cfg).to(device).train(), None


def clip_options(data: DictConfig, seeds: tuple[int, int] | None = None) -> ClipOptions:
    """:class:`ClipOptions` from the ``data`` node (cache / augmentation keys skipped)."""
    d = {k: v for k, v in OmegaConf.to_container(data, resolve=True).items()
         if k not in ("cache_dir", "augment")}
    if seeds is not None:
        d["seeds"] = seeds
    try:
        return ClipOptions(**d)
    except (TypeError, ValueError) as e:
        raise InputError(f"bad data options: {e}") from None


def loss_options(cfg: DictConfig) -> UnrollOptions:
    try:
        return UnrollOptions.from_config(OmegaConf.to_container(cfg, resolve=True))
    except (TypeError, ValueError) as e:
        raise InputError(f"bad loss options: {e}") from None


def check_val_seeds(cfg: DictConfig, opts: ClipOptions) -> tuple[int, int]:
    """``val.seeds`` as a range; InputError when it overlaps the training seeds."""
    lo, hi = (int(s) for s in cfg.val.seeds)
    tlo, thi = opts.seeds
    if not (hi < tlo or lo > thi):
        raise InputError(f"val.seeds {lo}-{hi} overlap the training seeds {tlo}-{thi}")
    return lo, hi


def val_clips(cfg: DictConfig, opts: ClipOptions) -> list:
    """The held-out clips (``val.seeds``, disjoint from ``data.seeds``)."""
    lo, hi = check_val_seeds(cfg, opts)
    if int(cfg.val.clips) <= 0:
        return []
    vopts = clip_options(cfg.data, (lo, hi))
    from dataclasses import replace

    vopts = replace(vopts, batch_clips=1, world_reuse=1)
    stream = ClipStream(vopts)
    return [stream.batch(b)[0] for b in range(int(cfg.val.clips))]


def loss_fn(mode: str) -> Callable:
    """``f(model, batch, options, generator, progress) -> (loss, metrics)`` of a mode."""
    if mode == "supervised":
        def sup(model, batch, uo, gen, progress=1.0):
            if progress < uo.flow_warmup:
                loss, m = flow_loss(model, batch, uo)
                m["phase_flow"] = 1.0
                return loss, m
            loss, m = supervised_loss(model, batch, uo, gen)
            m["phase_flow"] = 0.0
            return loss, m
        return sup
    if mode == "flow":
        return lambda model, batch, uo, gen, progress=1.0: flow_loss(model, batch, uo)
    if mode == "selfsup":
        return lambda model, batch, uo, gen, progress=1.0: selfsup_loss(model, batch, uo)
    if mode == "ba":
        return lambda model, batch, uo, gen, progress=1.0: ba_finetune_loss(model, batch, uo)
    raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")


@dataclass
class TrainResult:
    """What :func:`train` returns (also written to ``summary.json``)."""

    out: Path
    step: int
    elapsed: float
    steps_this_run: int
    summary: dict = field(default_factory=dict)


def _device(cfg: DictConfig) -> torch.device:
    try:
        dev = torch.device(str(cfg.device))
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise InputError(f"device {cfg.device!r} unusable: {str(e).splitlines()[0]}") from None
    return dev


def train(cfg: DictConfig, out: str | Path, command: str | None = None, progress: bool | None = None) -> TrainResult:
    """Train per ``configs/train.yaml``; see the module docstring for the outputs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mode = str(cfg.mode)
    fn = loss_fn(mode)
    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    dev = _device(cfg)
    copts = clip_options(cfg.data)
    uopts = loss_options(cfg.loss)
    check_val_seeds(cfg, copts)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    command = command or " ".join(["slam", "train", *sys.argv[2:]] if sys.argv[1:2] == ["train"] else sys.argv)
    state_path, ckpt_path = out / "train_state.pt", out / "checkpoint.pt"
    step, elapsed = 0, 0.0
    resumed = bool(cfg.resume) and state_path.is_file() and ckpt_path.is_file()
    if resumed:
        state = load_state(state_path)
        model, _ = load_checkpoint(ckpt_path, NetConfig.from_dict(OmegaConf.to_container(cfg.net, resolve=True)),
                                   map_location=dev)
        model.train()
        init_from = json.loads(state.get("extra", "{}")).get("init")
    else:
        model, init_from = build_model(cfg, dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    oc = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=float(oc.lr), weight_decay=float(oc.weight_decay))
    if resumed:
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        torch.set_rng_state(state["torch_rng"])
    log = MetricLog(out / "metrics.csv")
    if resumed:
        log.truncate(step)
    elif log.rows:  # a fresh run in a folder with an old log
        (out / "metrics.csv").unlink()
        log = MetricLog(out / "metrics.csv")
    stream = ClipStream(copts, cfg.data.get("cache_dir"))
    steps, budget = int(cfg.steps), (float(cfg.time_budget) if cfg.time_budget else None)
    half = bool(cfg.log.half)
    extra_prov = {"mode": mode, "train_seeds": list(copts.seeds), "resolution": [copts.width, copts.height],
                  "clip_frames": copts.frames, "iters": uopts.iters, "init": init_from}

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, model, command=command, seed=int(cfg.seed), steps=step, wall_time_s=elapsed,
                        device=f"{dev.type} ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
                        half=half, extra=extra_prov)
        save_state(state_path, step, elapsed, opt, cfg_dict, {"init": init_from})

    show = bool(cfg.log.progress) if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, desc=f"train {mode}", unit="step", dynamic_ncols=True, file=sys.stderr)
    start_step, t_run = step, time.perf_counter()
    last_ckpt = step
    log_every, ck_every = max(1, int(cfg.log.every)), max(1, int(cfg.log.checkpoint_every))
    interrupted = False
    try:
        while step < steps and (budget is None or elapsed < budget):
            t0 = time.perf_counter()
            clips = stream.batch(step)
            aug = np.random.default_rng([int(cfg.seed), step, 0xA06]) if cfg.data.augment > 0 else None
            batch = collate(clips, augment=aug, jitter=float(cfg.data.augment)).to(dev)
            if cfg.channels_last:
                batch.images = batch.images.contiguous(memory_format=torch.channels_last)
            gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + step)
            prog = progress_of(step, steps, elapsed, budget, str(oc.clock))
            lr = lr_at(prog, float(oc.lr), str(oc.schedule), float(oc.warmup), float(oc.final_ratio))
            set_lr(opt, lr)
            loss, metrics = fn(model, batch, uopts, gen, prog)
            opt.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                metrics["skipped"] = 1.0
            else:
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(oc.clip))
                if torch.isfinite(gnorm):
                    opt.step()
                    metrics["grad_norm"] = float(gnorm)
                else:
                    metrics["skipped"] = 1.0
            step += 1
            dt = time.perf_counter() - t0
            elapsed += dt
            metrics["step_s"] = dt
            log.add(metrics)
            if step % log_every == 0 or step == steps:
                row = log.flush(step=step, wall_s=round(elapsed, 2), lr=lr)
                if bar is not None and row:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", s_per_step=f"{row['step_s']:.2f}")
            if bar is not None:
                bar.update(1)
            if step - last_ckpt >= ck_every:
                checkpoint()
                last_ckpt = step
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    log.flush(step=step, wall_s=round(elapsed, 2), lr=lr_at(progress_of(step, steps, elapsed, budget, str(oc.clock)),
                                                           float(oc.lr), str(oc.schedule), float(oc.warmup),
                                                           float(oc.final_ratio)))
    checkpoint()
    run_steps = step - start_step
    run_wall = time.perf_counter() - t_run
    terms = tuple(k for k in ("geo", "flow", "res", "target", "conf", "motion", "up", "photo", "cycle", "smooth",
                              "ba_res") if any(k in r for r in log.rows))
    plot_losses(log.rows, out / "loss.png", f"slam train mode={mode} ({cfg.net.name})", terms)
    summary: dict[str, Any] = {
        "mode": mode, "step": step, "steps_this_run": run_steps, "wall_time_s": round(elapsed, 1),
        "steps_per_s": (run_steps / run_wall) if run_wall > 0 else 0.0,
        "resumed": resumed, "interrupted": interrupted, "command": command,
        "device": f"{dev.type}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
        "params": model.num_parameters(), "checkpoint": str(ckpt_path),
    }
    tail = log.rows[-max(1, min(10, len(log.rows) // 5 or 1)):]
    summary["final"] = {k: float(np.mean([r[k] for r in tail if k in r])) for k in tail[-1]} if tail else {}
    if not interrupted and int(cfg.val.clips) > 0:
        summary["val"] = evaluate_flow(model, val_clips(cfg, copts), uopts, str(cfg.val.dis_preset), dev)
    summary["config"] = cfg_dict
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if interrupted:
        raise KeyboardInterrupt
    return TrainResult(out, step, elapsed, run_steps, summary)
