"""Self-supervised adaptation of the monocular depth network to one video.

The camera poses and intrinsics of a reconstruction of the video (``slam run``,
any correspondence source) are held fixed; the network
(:class:`slam.depth.monodepth.MonoDepthNet`) is trained so that its inverse
depth of a target frame ``t`` re-synthesises ``t`` from its neighbours
``t - g`` and ``t + g`` (view synthesis, as Monodepth2 with known poses):

* the prediction ``d`` (up to scale) is brought to the run's scale per image,
  ``d * exp(c_t) m_t / median(d)``, where ``m_t`` is the median inverse depth
  of the keyframe nearest to ``t`` (not differentiated) and ``c_t`` a per-frame
  log-scale correction learned with the network (the two medians need not
  describe the same pixels: sky, blank walls);
* pixel ``p`` of ``t`` goes to ``K T_st (K^-1 p / d(p))`` in source ``s``, with
  ``T_st = T_s^-1 T_t`` (camera-to-world poses; pixel centres at integer
  coordinates), and ``s`` is sampled there bilinearly;
* photometric error ``alpha (1 - SSIM) / 2 + (1 - alpha) |.|``
  (:func:`slam.train.losses.photometric_error`), the minimum over the
  sources per pixel; pixels whose error without warping is already lower
  (a static camera, objects moving with it) are left out (auto-masking), as
  are pixels that leave every source;
* plus an edge-aware smoothness of the mean-normalised inverse depth.

No label is used: the video and its own reconstruction are the supervision.
"""
from __future__ import annotations

import contextlib
import platform
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pypose as pp
import torch

from slam.depth.monodepth import MonoDepthNet, load_monodepth, save_monodepth
from slam.geometry.projective import pixel_grid, project_edges
from slam.train.losses import photometric_error, smoothness, warp

#: seconds of training granted when the reconstruction used up the whole ``--time`` budget
MIN_TRAIN_S = 1.0
#: photometric error given to pixels no source reaches (far above any real error, which is <= 1)
_NO_WARP = 1e3


@dataclass
class SelfSupOptions:
    """Tunables (mirrored, with comments, in ``configs/adapt_depth.yaml``)."""

    size: tuple[int, int] = (128, 96)  # (W, H) training size, recorded in the checkpoint: the network prior then feeds this size
    batch: int = 4                     # target frames per step
    max_gap: int = 4                   # sources are g = 1..max_gap frames before and after the target
    lr: float = 1.0e-4                 # AdamW learning rate (constant)
    weight_decay: float = 1.0e-5       # AdamW weight decay
    clip: float = 1.0                  # gradient-norm clipping
    alpha: float = 0.85                # SSIM share of the photometric error
    smooth: float = 1.0e-3             # weight of the edge-aware smoothness
    automask: bool = True              # leave out pixels the unwarped source already explains better
    min_disp_ratio: float = 0.01       # added to the scaled inverse depths, as a fraction of the run's median (keeps them > 0)
    scale_lr: float = 1.0e-2           # learning rate of a per-frame log-scale correction of the median scale (0: none)
    check_samples: int = 16            # fixed samples whose loss is measured before and after (summary's check_before/after)

    def __post_init__(self) -> None:
        try:
            self.size = (int(self.size[0]), int(self.size[1]))
            self.batch, self.max_gap, self.check_samples = int(self.batch), int(self.max_gap), int(self.check_samples)
            for name in ("lr", "weight_decay", "clip", "alpha", "smooth", "min_disp_ratio", "scale_lr"):
                setattr(self, name, float(getattr(self, name)))
        except (TypeError, ValueError, IndexError) as e:
            raise ValueError(f"train: {e}") from None
        if min(self.size) < 16 or self.size[0] % 16 or self.size[1] % 16 or self.batch < 1 or self.max_gap < 1 or not self.lr > 0 or not 0 <= self.alpha <= 1 or self.check_samples < 1:
            raise ValueError("train: need sides that are multiples of 16, batch >= 1, max_gap >= 1, lr > 0, "
                             "0 <= alpha <= 1 and check_samples >= 1")


def scale_intrinsics(K: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """``[fx, fy, cx, cy]`` of an image of size ``src`` (W, H) resized to ``dst``
    (:meth:`slam.geometry.camera.Intrinsics.scaled`, pixel-centre convention)."""
    from slam.geometry.camera import Intrinsics

    k = Intrinsics(float(K[0]), float(K[1]), float(K[2]), float(K[3]), int(src[0]), int(src[1])).scaled(*dst)
    return np.array([k.fx, k.fy, k.cx, k.cy], np.float64)


def reproject(disp: torch.Tensor, K: torch.Tensor, T_st: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the pixels of a target image land in a source image
    (:func:`slam.geometry.projective.project_edges`, the target camera as the world).

    Args:
        disp: (B, H, W) target inverse depth (> 0).
        K: (4,) ``[fx, fy, cx, cy]`` of both images.
        T_st: (B, 4, 4) target-camera -> source-camera transform.
    Returns:
        ``(flow (B, 2, H, W) in source pixels minus the target pixel, valid (B, H, W) bool)``;
        valid: in front of the source camera (``project_edges``' depth-ratio rule).
    """
    B, H, W = disp.shape
    T = torch.cat([torch.eye(4, dtype=T_st.dtype, device=T_st.device).expand(B, 4, 4), T_st])
    G = pp.mat2SE3(T.to(disp), check=False)  # world-to-camera: targets at the origin, then their sources
    disps = torch.cat([disp, torch.ones_like(disp)])  # the sources' depths are not used
    ii = torch.arange(B, device=disp.device)
    pr = project_edges(G, disps, K.to(disp), ii, ii + B)
    flow = (pr.coords - pixel_grid(H, W, disp.device, disp.dtype)).permute(0, 3, 1, 2)
    return flow, pr.valid


def view_synthesis_loss(disp_raw: torch.Tensor, target: torch.Tensor, sources: torch.Tensor, T_st: torch.Tensor,
                        K: torch.Tensor, run_scale: torch.Tensor, opt: SelfSupOptions
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """The self-supervised loss of one batch (see the module docstring).

    Args:
        disp_raw: (B, H, W) the network's inverse depth of the targets.
        target: (B, 3, H, W) target images in [0, 1].
        sources: (B, S, 3, H, W) source images; T_st: (B, S, 4, 4) target -> source camera.
        K: (4,) intrinsics at (W, H); run_scale: (B,) median run inverse depth near each target.
    Returns:
        ``(loss, {"photo", "smooth", "masked"})``; ``masked`` is the share of pixels used.
    """
    B, S = sources.shape[:2]
    med = disp_raw.detach().flatten(1).median(1).values.clamp(min=1e-6)
    disp = disp_raw * (run_scale.to(disp_raw) / med)[:, None, None]
    disp = disp.clamp(min=1e-9) + opt.min_disp_ratio * run_scale.to(disp_raw)[:, None, None]
    warped_err, ident_err = [], []
    big = torch.tensor(_NO_WARP, dtype=target.dtype, device=target.device)
    for s in range(S):
        flow, front = reproject(disp, K, T_st[:, s])
        img, inside = warp(sources[:, s], flow)
        e = photometric_error(target, img, opt.alpha)
        warped_err.append(torch.where(front & inside, e, big))
        ident_err.append(photometric_error(target, sources[:, s], opt.alpha))
    we = torch.stack(warped_err, 1).min(1).values
    use = we < big
    if opt.automask:
        use = use & (we < torch.stack(ident_err, 1).min(1).values)
    m = use.float()
    photo = (we * m).sum() / m.sum().clamp(min=1)
    nd = disp_raw / disp_raw.detach().flatten(1).mean(1).clamp(min=1e-6)[:, None, None]
    sm = smoothness(nd[:, None], target)
    loss = photo + opt.smooth * sm
    return loss, {"photo": float(photo.detach()), "smooth": float(sm.detach()), "masked": float(m.mean())}


class VideoSamples:
    """Training samples of one video and its reconstruction.

    Args:
        frames: (F, H, W, 3) uint8 frames at the training size.
        poses: (F, 4, 4) camera-to-world poses of those frames.
        K: (4,) intrinsics at the training size.
        run_scale: (F,) median inverse depth of each frame's nearest keyframe (the run's scale).
        max_gap: sources are 1..max_gap frames away.
        usable: (F,) bool, frames whose pose came from tracking (None: all); only they are
            targets or sources.
    Raises:
        ValueError: no usable frame has a usable neighbour within ``max_gap``.
    """

    def __init__(self, frames: np.ndarray, poses: np.ndarray, K: np.ndarray, run_scale: np.ndarray,
                 max_gap: int, usable: np.ndarray | None = None) -> None:
        n = len(frames)
        self.images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        self.poses = torch.from_numpy(np.asarray(poses, np.float64))
        self.K = torch.from_numpy(np.asarray(K, np.float64)).float()
        self.scale = torch.from_numpy(np.asarray(run_scale, np.float64)).float()
        self.max_gap = max(1, min(int(max_gap), n - 1)) if n > 1 else 1
        self.usable = np.ones(n, bool) if usable is None else np.asarray(usable, bool)[:n]
        idx = np.flatnonzero(self.usable)
        self.targets = np.array([t for t in idx if np.any((np.abs(idx - t) <= self.max_gap) & (idx != t))], np.int64)
        if len(self.targets) == 0:
            raise ValueError("self-supervision needs two tracked frames at most max_gap apart")

    def __len__(self) -> int:
        return len(self.images)

    def _source(self, t: int, g: int, side: int) -> int | None:
        """The usable frame ``t + side * g``, else the nearest usable one on that side within ``max_gap``."""
        for d in [g, *range(1, self.max_gap + 1)]:
            k = t + side * d
            if 0 <= k < len(self) and self.usable[k]:
                return k
        return None

    def batch(self, targets: np.ndarray, gaps: np.ndarray) -> tuple[torch.Tensor, ...]:
        """``(target (B, 3, H, W), sources (B, 2, 3, H, W), T_st (B, 2, 4, 4), run_scale (B,))`` for
        targets ``t`` with sources ``t - g`` and ``t + g`` (an unusable source becomes the nearest usable
        frame on its side; a side without one repeats the other)."""
        src = []
        for t, g in zip(targets.tolist(), gaps.tolist()):
            a, b = self._source(t, g, -1), self._source(t, g, 1)
            a = a if a is not None else b
            b = b if b is not None else a
            src.append((a, b))
        src_idx = torch.tensor(src, dtype=torch.long)
        tgt = torch.as_tensor(targets, dtype=torch.long)
        P_t = self.poses[tgt]
        P_s = self.poses[src_idx]
        T_st = torch.linalg.inv(P_s) @ P_t[:, None]
        return self.images[tgt], self.images[src_idx], T_st.float(), self.scale[tgt]

    def draw(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Random targets (among :attr:`targets`) and gaps ``1..max_gap``."""
        return self.targets[rng.integers(0, len(self.targets), size)], rng.integers(1, self.max_gap + 1, size)


def run_scales(kf_indices: np.ndarray, kf_disps: np.ndarray, frame_ids: np.ndarray) -> np.ndarray:
    """(F,) median inverse depth of the keyframe nearest (in frame index) to each frame."""
    med = np.array([float(np.median(d[d > 0])) if (d > 0).any() else 1.0 for d in kf_disps])
    nearest = np.abs(frame_ids[:, None] - kf_indices[None, :]).argmin(1)
    return med[nearest]


def adapt_depth(model: MonoDepthNet, samples: VideoSamples, opt: SelfSupOptions, *, time_s: float | None,
                steps: int | None, seed: int, progress: bool = False) -> dict[str, Any]:
    """Train ``model`` in place on ``samples`` for ``time_s`` seconds and/or ``steps`` steps
    (whichever ends first; at least one step; Ctrl-C ends it early, ``interrupted`` True).

    ``opt.check_samples`` fixed samples (drawn with ``seed``) measure the photometric loss before and
    after, in evaluation mode.  Returns a summary: steps, wall time, loss history
    (one value per step), and ``check_before`` / ``check_after``.
    """
    if time_s is None and steps is None:
        raise ValueError("give a time budget or a number of steps")
    rng = np.random.default_rng(seed)
    ct, cg = samples.draw(np.random.default_rng(seed + 1), opt.check_samples)
    dev = next(model.parameters()).device

    # per-frame correction of the median scale, learned with the network (the median of a map
    # with sky or blank walls need not match the keyframe's)
    log_s = torch.zeros(len(samples), device=dev, requires_grad=opt.scale_lr > 0)

    def load(t: np.ndarray, g: np.ndarray) -> tuple[torch.Tensor, ...]:
        tgt, src, T, sc = (x.to(dev) for x in samples.batch(t, g))
        return tgt, src, T, sc * torch.exp(log_s[torch.as_tensor(t, device=dev)])

    def check_loss() -> float:
        model.eval()
        with torch.no_grad():
            tgt, src, T, sc = load(ct, cg)
            loss, m = view_synthesis_loss(model(tgt), tgt, src, T, samples.K.to(dev), sc, opt)
        model.train()
        return m["photo"]

    before = check_loss()
    groups = [{"params": list(model.parameters())}]
    if opt.scale_lr > 0:
        groups.append({"params": [log_s], "lr": opt.scale_lr, "weight_decay": 0.0})
    optim = torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay)
    t0 = time.perf_counter()
    history: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(steps) if steps else int(time_s), desc="adapt depth", unit="step" if steps else "s",
                   dynamic_ncols=True, file=sys.stderr)
    model.train()
    k, interrupted = 0, False
    with _ctrl_c_as_flag() as stop:
        try:
            while not stop.is_set():
                elapsed = time.perf_counter() - t0
                if k > 0 and ((time_s is not None and elapsed >= time_s) or (steps is not None and k >= steps)):
                    break
                tgt, src, T, sc = load(*samples.draw(rng, opt.batch))
                loss, m = view_synthesis_loss(model(tgt), tgt, src, T, samples.K.to(dev), sc, opt)
                optim.zero_grad(set_to_none=True)
                if torch.isfinite(loss):
                    loss.backward()
                    g = torch.nn.utils.clip_grad_norm_(model.parameters(), opt.clip)
                    if torch.isfinite(g):
                        optim.step()
                history.append(float(loss.detach()))
                k += 1
                if bar is not None:
                    bar.n = k if steps else min(int(time.perf_counter() - t0), int(time_s))
                    bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
                    bar.refresh()
        except KeyboardInterrupt:  # raised by something other than the signal (e.g. a test)
            stop.set()
        interrupted = stop.is_set()
        if bar is not None:
            bar.close()
        model.eval()
        after = check_loss()
    return {"steps": k, "wall_time_s": round(time.perf_counter() - t0, 1), "loss": history,
            "check_before": before, "check_after": after, "interrupted": interrupted}


@contextlib.contextmanager
def _ctrl_c_as_flag():
    """Within the block, Ctrl-C (SIGINT) sets the yielded event instead of raising, so that an
    optimiser step (parameter by parameter on a CPU) is never cut in half; the previous handler
    comes back afterwards.  Outside the main thread the signal cannot be caught: the event is
    then only set by the caller."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def adapt_on_video(video: str | Path, out: str | Path, cfg: Any, *, weights: str | Path | None = None,
                   time_s: float | None = None, command: str | None = None, progress: bool = True
                   ) -> dict[str, Any]:
    """``slam adapt-depth``: reconstruct ``video`` (``slam run``, ``cfg.solution``), adapt the depth
    network (default: the shipped weights) to it and write the checkpoint ``out``.

    Raises:
        InputError: unreadable video or weights, too few frames or keyframes, bad options.
    """
    from slam.config import load_config
    from slam.data.detect import open_sequence
    from slam.data.sequence import InputError
    from slam.depth.options import options_from, to_plain
    from slam.system.runner import run_sequence
    from slam.train.adapt import load_frames

    t_start = time.perf_counter()
    c = to_plain(cfg)
    try:  # every option a user can get wrong: one line, not a traceback
        budget = float(time_s if time_s is not None else c["time"])
        steps = int(c["steps"]) if c.get("steps") is not None else None
        seed = int(c["seed"])
        threads = int(c.get("threads") or 0)
        dev = torch.device(str(c.get("device") or "cpu"))
        stride = int(c["input"]["stride"])
        mf = c["input"].get("max_frames")
        max_frames = int(mf) if mf else None
        run_overrides = [str(o) for o in (c["solution"].get("overrides") or [])]
        opt = options_from(SelfSupOptions, c.get("train"), "train")
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise InputError(f"bad configuration: {e}") from None
    if budget <= 0:
        raise InputError(f"--time must be positive, got {budget:g}")
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a folder; give the output weights file, e.g. {out}/monodepth_adapted.pt")
    try:  # find an unwritable output now, not after the work
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent):
            pass
    except OSError as e:
        raise InputError(f"{out}: cannot write there ({e.strerror or e})") from None
    if threads > 0:
        torch.set_num_threads(threads)
    model = load_monodepth(weights, dev)  # InputError on bad weights
    seq = open_sequence(video, stride=stride, max_frames=max_frames)
    n = len(seq)
    if n < 2:
        raise InputError(f"{video}: needs at least 2 frames, found {n}")
    recon = run_sequence(seq, load_config("run", run_overrides), progress=progress)
    if recon.interrupted:  # Ctrl-C while reconstructing: nothing learned yet, nothing to keep
        raise KeyboardInterrupt
    if len(recon.kf_indices) < 2:
        raise InputError(f"{video}: the camera barely moves (one keyframe): nothing to learn depth from")
    W, H = opt.size
    frames = load_frames(seq, W, H, n)
    K = scale_intrinsics(np.asarray(recon.intrinsics), recon.image_size, (W, H))
    ids = np.arange(n)
    try:  # only frames that tracking posed supervise
        samples = VideoSamples(frames, recon.poses[:n], K, run_scales(recon.kf_indices, recon.kf_disps, ids),
                               opt.max_gap, usable=recon.tracked[:n])
    except ValueError as e:
        raise InputError(f"{video}: {e}") from None
    t_recon = time.perf_counter() - t_start
    left = max(budget - t_recon, MIN_TRAIN_S)
    res = adapt_depth(model, samples, opt, time_s=left, steps=steps, seed=seed, progress=progress)
    wall = time.perf_counter() - t_start
    summary = {"video": str(video), "weights": str(weights or "shipped"), "out": str(out), "frames": n,
               "keyframes": int(len(recon.kf_indices)), "size": [W, H], "steps": res["steps"],
               "reconstruction_s": round(t_recon, 1), "wall_time_s": round(wall, 1),
               "photo_before": res["check_before"], "photo_after": res["check_after"],
               "interrupted": bool(res["interrupted"])}
    device = f"{dev.type} ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    save_monodepth(out, model.cpu(), {"command": command, "seed": seed, "steps": res["steps"],
                                      "wall_time_s": round(wall, 1), "device": device,
                                      "data": f"self-supervised on {video} (poses of its own slam run)",
                                      "adapted_from": str(weights or "weights/monodepth_small.pt"),
                                      "train_size": [W, H],
                                      "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    return summary
