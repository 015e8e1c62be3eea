"""Training data: short clips of synthetic worlds with exact labels, and unlabelled clips of videos.

A :class:`Clip` holds N frames of one world at the training resolution
``W x H`` (multiples of 8, feature resolution ``w x h = W/8 x H/8``) and the
labels of its frame graph: every ordered pair ``(i, j)`` with
``1 <= |i - j| <= radius``.

Conventions (as in the rest of the package): images uint8 RGB ``(N, H, W, 3)``;
poses camera-to-world 4x4 (OpenCV axes); pixel ``(u, v)`` centred at ``(u, v)``;
feature pixel ``(u, v)`` covers image pixels ``[8u, 8u + 8) x [8v, 8v + 8)`` and
is centred at image coordinate ``8u + 3.5`` (so feature intrinsics are
``fx / 8, (cx + 0.5) / 8 - 0.5``).

Clips are rendered on the fly by :func:`make_clip` (deterministic in the
clip's world seed and index) and optionally cached as ``.npz`` in a folder
(:class:`ClipStream`).  :func:`collate` turns clips of one world into a
:class:`Batch` of torch tensors: frames of all clips concatenated, one
disconnected frame graph, inverse depths and poses normalised so that the
median inverse depth of each clip is 1.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from slam.corr.base import flow_to_feature
from slam.net.config import STRIDE

#: camera motions used for training (``static`` gives no parallax and no flow)
TRAIN_MOTIONS: tuple[str, ...] = ("handheld", "forward", "orbit", "rotation", "shaky")


@dataclass(frozen=True)
class ClipOptions:
    """How clips are made (mirrored in ``configs/train.yaml``, section ``data``)."""

    frames: int = 4                       #: N frames per clip
    width: int = 160                      #: training resolution (multiple of 8)
    height: int = 128
    radius: int = 2                       #: frame-graph edges join frames at most this far apart (both directions)
    seeds: tuple[int, int] = (1000, 9999)  #: world seeds, inclusive range (evaluation uses 100-199, tests small seeds)
    scenes: tuple[str, ...] = ("room", "street", "table", "clutter")  #: scene kinds drawn uniformly
    motions: tuple[str, ...] = TRAIN_MOTIONS  #: camera motions drawn uniformly
    dynamic_prob: float = 0.3             #: share of worlds with moving objects
    noise_prob: float = 0.3               #: share of worlds with sensor noise, blur and exposure changes
    low_texture_max: float = 0.3          #: low_texture of a world drawn uniformly in [0, this]
    world_frames: int = 150               #: frames rendered per world (clips are cut from them)
    min_flow: float = 2.0                 #: mean flow between consecutive clip frames (image px) drawn
    max_flow: float = 30.0                #:   log-uniformly in [min_flow, max_flow]
    max_spacing: int = 12                 #: largest frame spacing tried to reach that flow
    batch_clips: int = 1                  #: clips per batch (all from one world: shared intrinsics)
    world_reuse: int = 4                  #: consecutive batches cut from the same world

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "scenes", tuple(self.scenes))
        object.__setattr__(self, "motions", tuple(self.motions))
        if self.width % STRIDE or self.height % STRIDE:
            raise ValueError(f"training size {self.width}x{self.height}: sides must be multiples of {STRIDE}")
        if self.frames < 2 or self.radius < 1:
            raise ValueError("clips need >= 2 frames and radius >= 1")
        if self.seeds[1] < self.seeds[0]:
            raise ValueError(f"empty seed range {self.seeds}")

    def key(self) -> str:
        """Short hash of the options that change clip contents (cache key)."""
        d = asdict(self)
        for k in ("batch_clips", "world_reuse"):
            d.pop(k)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Clip:
    """N frames of one world with labels of the clip's frame graph (E edges).

    Attributes:
        images: (N, H, W, 3) uint8 RGB.
        intrinsics: (4,) ``[fx, fy, cx, cy]`` at image resolution.
        ii, jj: (E,) int64 edges (source i, target j), indices into the clip.
        poses: (N, 4, 4) camera-to-world, or None (unlabelled).
        disps: (N, h, w) float32 inverse depth at feature pixel centres (0: unknown).
        target: (E, h, w, 2) float32 ground-truth target coords in frame j (feature px).
        target_valid: (E, h, w) float32 in [0, 1] (1: visible in j, flow agrees across the block).
        flow: (E, H, W, 2) float32 full-resolution flow i -> j (image px).
        flow_valid: (E, H, W) bool.
        dynamic: (N, h, w) float32 share of each feature block on a moving object.
        meta: seed, scene, motion, frame indices, ...
    """

    images: np.ndarray
    intrinsics: np.ndarray
    ii: np.ndarray
    jj: np.ndarray
    poses: np.ndarray | None = None
    disps: np.ndarray | None = None
    target: np.ndarray | None = None
    target_valid: np.ndarray | None = None
    flow: np.ndarray | None = None
    flow_valid: np.ndarray | None = None
    dynamic: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return self.poses is not None

    def save(self, path: Path) -> None:
        """Write as compressed ``.npz`` (atomically)."""
        arrays = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, meta=np.array(json.dumps(self.meta)), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Clip:
        with np.load(path) as z:
            d = {k: z[k] for k in z.files if k != "meta"}
            meta = json.loads(str(z["meta"]))
        return cls(meta=meta, **d)


def graph_edges(n: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j)`` of ``n`` frames with ``1 <= |i - j| <= radius``; (E,), (E,) int64."""
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and abs(i - j) <= radius]
    a = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return a[:, 0].copy(), a[:, 1].copy()


def feature_intrinsics(K: np.ndarray | torch.Tensor, stride: int = STRIDE) -> np.ndarray | torch.Tensor:
    """(4,) image intrinsics -> intrinsics at feature resolution (pixel-centre convention)."""
    fx, fy, cx, cy = K[0], K[1], K[2], K[3]
    s = 1.0 / stride
    vals = [fx * s, fy * s, (cx + 0.5) * s - 0.5, (cy + 0.5) * s - 0.5]
    return torch.stack(vals) if torch.is_tensor(K) else np.array(vals, dtype=np.float64)


def feature_disps(depth: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """(H, W) depth -> (h, w) inverse depth at feature pixel centres (mean of the 2x2 central
    pixels' inverse depths; 0 where any of them has no depth)."""
    H, W = depth.shape
    h, w = H // stride, W // stride
    c = stride // 2
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-9), 0.0)
    taps = np.stack([inv[c - 1 + dy: h * stride: stride, c - 1 + dx: w * stride: stride][:h, :w]
                     for dy in (0, 1) for dx in (0, 1)])
    return np.where((taps > 0).all(0), taps.mean(0), 0.0).astype(np.float32)


def block_mean(x: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """(H, W) -> (h, w) mean over ``stride x stride`` blocks."""
    H, W = x.shape
    h, w = H // stride, W // stride
    return x[: h * stride, : w * stride].reshape(h, stride, w, stride).mean((1, 3)).astype(np.float32)


def _world(seed: int, opts: ClipOptions):
    """The training world of ``seed`` (scene, motion, movers, noise drawn from the seed)."""
    from slam.data.synthetic import make_world

    rng = np.random.default_rng([seed, 0x7A41])
    scene = str(rng.choice(opts.scenes))
    motion = str(rng.choice(opts.motions))
    dynamic = bool(rng.random() < opts.dynamic_prob)
    noise = bool(rng.random() < opts.noise_prob)
    low_texture = float(rng.uniform(0.0, opts.low_texture_max))
    movers = int(rng.integers(1, 3))
    return make_world(seed, scene, motion, opts.world_frames, opts.width, opts.height, dynamic=dynamic,
                      noise=noise, low_texture=low_texture, num_movers=movers,
                      mover_size=float(rng.uniform(0.2, 0.5)))


def _mean_flow(world, i: int, j: int) -> float:
    f, v = world.flow(i, j)
    return float(np.linalg.norm(f[v], axis=-1).mean()) if v.any() else 0.0


def make_clip(world, rng: np.random.Generator, opts: ClipOptions) -> Clip:
    """Cut one labelled clip from ``world`` (a :class:`~slam.data.synthetic.SyntheticSequence`).

    The frame spacing ``s`` is chosen so that the mean flow between the first
    two clip frames is closest to a log-uniform draw in ``[min_flow, max_flow]``.
    """
    n, T = opts.frames, len(world)
    goal = float(np.exp(rng.uniform(np.log(opts.min_flow), np.log(opts.max_flow))))
    max_s = max(1, min(opts.max_spacing, (T - 1) // (n - 1)))
    t0 = int(rng.integers(0, T - (n - 1) * max_s)) if T - (n - 1) * max_s > 0 else 0
    best, best_err = 1, np.inf
    for s in range(1, max_s + 1):
        err = abs(np.log(max(_mean_flow(world, t0, t0 + s), 1e-3) / goal))
        if err < best_err:
            best, best_err = s, err
    idx = [t0 + k * best for k in range(n)]
    ii, jj = graph_edges(n, opts.radius)
    images = np.stack([world.render(k).image for k in idx])
    depths = [world.depth(k) for k in idx]
    flows, fvalid, targets, tvalid = [], [], [], []
    for a, b in zip(ii, jj):
        f, v = world.flow(idx[a], idx[b])
        t, tv = flow_to_feature(f, v, STRIDE, mode="center")
        flows.append(f)
        fvalid.append(v)
        targets.append(t)
        tvalid.append(tv)
    K = world.intrinsics
    meta = {"seed": int(world.spec.seed), "scene": world.spec.scene, "motion": world.spec.motion,
            "dynamic": bool(world.spec.dynamic), "frames": idx, "spacing": best, "goal_flow": goal}
    return Clip(images=images, intrinsics=np.array([K.fx, K.fy, K.cx, K.cy]), ii=ii, jj=jj,
                poses=np.stack([world.gt_poses[k] for k in idx]),
                disps=np.stack([feature_disps(d) for d in depths]),
                target=np.stack(targets), target_valid=np.stack(tvalid),
                flow=np.stack(flows), flow_valid=np.stack(fvalid),
                dynamic=np.stack([block_mean(world.dynamic_mask(k).astype(np.float32)) for k in idx]), meta=meta)


class ClipStream:
    """Deterministic stream of training batches (lists of clips from one world).

    Batch ``b`` comes from world seed ``seeds[0] + (b // world_reuse) mod span``
    shuffled by a fixed permutation; its clips are drawn with an RNG seeded by
    ``(world seed, b)``.  So a resumed run continues with the same batches.

    Args:
        opts: :class:`ClipOptions`.
        cache_dir: optional folder of ``.npz`` clips (read if present, else written).
    """

    def __init__(self, opts: ClipOptions, cache_dir: str | Path | None = None) -> None:
        self.opts = opts
        self.cache = Path(cache_dir) / opts.key() if cache_dir else None
        if self.cache is not None:
            self.cache.mkdir(parents=True, exist_ok=True)
        lo, hi = opts.seeds
        self.span = hi - lo + 1
        self._world_key: int | None = None
        self._world = None

    def world_seed(self, batch: int) -> int:
        """World seed of batch ``batch``."""
        w = batch // max(1, self.opts.world_reuse)
        perm = (w * 7919 + 13) % self.span if self.span > 1 else 0  # a fixed stride through the range
        return self.opts.seeds[0] + perm

    def batch(self, b: int) -> list[Clip]:
        """The clips of batch ``b``."""
        seed = self.world_seed(b)
        clips = []
        for c in range(self.opts.batch_clips):
            path = self.cache / f"b{b:07d}_{c}.npz" if self.cache is not None else None
            if path is not None and path.is_file():
                try:
                    clips.append(Clip.load(path))
                    continue
                except (OSError, ValueError, KeyError):
                    path.unlink(missing_ok=True)
            if self._world_key != seed:
                self._world, self._world_key = _world(seed, self.opts), seed
            clip = make_clip(self._world, np.random.default_rng([seed, b, c]), self.opts)
            if path is not None:
                clip.save(path)
            clips.append(clip)
        return clips


@dataclass
class Batch:
    """Torch view of clips sharing one camera (F frames, E edges at ``h x w``).

    Attributes:
        images: (F, 3, H, W) float32 RGB in [0, 255].
        K: (4,) float intrinsics at feature resolution.
        ii, jj: (E,) long edges into the F frames.
        fixed: (F,) bool gauge (the first ``n_fixed`` frames of every clip).
        clip: (F,) long clip of every frame.
        poses: (F, 7) SE3 world-to-camera data ``[t, q]`` with each clip's
            world scaled so that its median inverse depth is 1; None unlabelled.
        disps: (F, h, w) normalised ground-truth inverse depth (0: unknown).
        target: (E, h, w, 2) ground-truth target coords, ``target_valid`` (E, h, w).
        flow: (E, H, W, 2) full-resolution flow (image px), ``flow_valid`` (E, H, W).
        dynamic: (F, h, w) share of moving pixels.
        scale: (C,) the factor each clip's world was scaled by.
    """

    images: torch.Tensor
    K: torch.Tensor
    ii: torch.Tensor
    jj: torch.Tensor
    fixed: torch.Tensor
    clip: torch.Tensor
    poses: torch.Tensor | None = None
    disps: torch.Tensor | None = None
    target: torch.Tensor | None = None
    target_valid: torch.Tensor | None = None
    flow: torch.Tensor | None = None
    flow_valid: torch.Tensor | None = None
    dynamic: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    @property
    def labelled(self) -> bool:
        """Ground-truth flow labels present (``poses`` alone may be a reconstruction's solution)."""
        return self.target is not None

    @property
    def feature_size(self) -> tuple[int, int]:
        """``(h, w)``."""
        return self.images.shape[-2] // STRIDE, self.images.shape[-1] // STRIDE

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on ``device``."""
        return Batch(**{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in vars(self).items()})


def _c2w_to_w2c_data(T: np.ndarray, scale: float) -> np.ndarray:
    """(N, 4, 4) camera-to-world -> (N, 7) world-to-camera ``[t, q]`` of the world scaled by ``scale``."""
    from scipy.spatial.transform import Rotation

    R = T[:, :3, :3].transpose(0, 2, 1)
    t = -np.einsum("nij,nj->ni", R, T[:, :3, 3]) * scale
    q = Rotation.from_matrix(R).as_quat()  # [x, y, z, w]
    return np.concatenate([t, q], -1)


def collate(clips: list[Clip], n_fixed: int = 2, augment: np.random.Generator | None = None,
            jitter: float = 0.0) -> Batch:
    """Concatenate clips that share intrinsics into one :class:`Batch`.

    Args:
        clips: clips of one camera.  Poses and inverse depths are kept (and
            normalised) when every clip has them (labels, or a reconstruction's
            solution); flow labels when every clip has them too.
        n_fixed: gauge frames per clip (held in BA; their poses are the labels' in training).
        augment: RNG for photometric augmentation (None: off).
        jitter: strength of the augmentation (brightness / contrast / per-channel gain / gamma).
    """
    K = clips[0].intrinsics
    for c in clips[1:]:
        if not np.allclose(c.intrinsics, K):
            raise ValueError("clips of a batch must share intrinsics")
    geometric = all(c.poses is not None and c.disps is not None for c in clips)
    flows = geometric and all(c.target is not None for c in clips)
    imgs, ii, jj, fixed, clip_id = [], [], [], [], []
    off = 0
    for ci, c in enumerate(clips):
        x = c.images.astype(np.float32)
        if augment is not None and jitter > 0:
            gain = 1.0 + jitter * augment.uniform(-1, 1) + 0.25 * jitter * augment.uniform(-1, 1, size=3)
            gamma = float(np.exp(0.5 * jitter * augment.uniform(-1, 1)))
            contrast = 1.0 + jitter * augment.uniform(-1, 1)
            m = x.mean()
            x = np.clip((x - m) * contrast + m, 0, 255) * gain
            x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** gamma
        imgs.append(x.astype(np.float32))
        n = len(c.images)
        ii.append(c.ii + off)
        jj.append(c.jj + off)
        f = np.zeros(n, bool)
        f[:n_fixed] = True
        fixed.append(f)
        clip_id.append(np.full(n, ci))
        off += n
    t = torch.from_numpy
    b = Batch(images=t(np.concatenate(imgs)).permute(0, 3, 1, 2).contiguous(),
              K=t(feature_intrinsics(np.asarray(K, np.float64))).float(),
              ii=t(np.concatenate(ii)), jj=t(np.concatenate(jj)), fixed=t(np.concatenate(fixed)),
              clip=t(np.concatenate(clip_id)))
    if not geometric:
        return b
    scales, poses, disps = [], [], []
    for c in clips:
        d = c.disps[c.disps > 0]
        s = float(np.median(d)) if d.size else 1.0
        scales.append(s)
        poses.append(_c2w_to_w2c_data(c.poses, s))
        disps.append(c.disps / s)
    b.poses = t(np.concatenate(poses)).float()
    b.disps = t(np.concatenate(disps)).float()
    b.scale = torch.tensor(scales)
    if not flows:
        return b
    b.target = t(np.concatenate([c.target for c in clips])).float()
    b.target_valid = t(np.concatenate([c.target_valid for c in clips])).float()
    b.flow = t(np.concatenate([c.flow for c in clips])).float()
    b.flow_valid = t(np.concatenate([c.flow_valid for c in clips]))
    b.dynamic = t(np.concatenate([c.dynamic for c in clips])).float()
    return b
