"""Synthetic worlds as in-memory :class:`~slam.data.sequence.Sequence` s.

:func:`make_world` builds a textured scene, a camera trajectory, optional
movers and a renderer, all deterministic in the seed; frames are rendered on
demand (and cached), so long sequences need little memory.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from slam.data.sequence import Frame, InputError, Sequence
from slam.data.synthetic.dynamic import DynamicParams, Mover, make_movers
from slam.data.synthetic.flow import FlowParams, ground_truth_flow
from slam.data.synthetic.motion import MOTION_KINDS, MotionParams, Trajectory, make_trajectory
from slam.data.synthetic.render import Renderer, RenderParams, RenderResult
from slam.data.synthetic.scenes import SCENE_KINDS, SceneParams, StaticScene, make_scene
from slam.data.synthetic.sensor import Sensor, SensorParams
from slam.data.synthetic.textures import TextureBank, TextureParams, make_texture_bank
from slam.geometry.camera import Intrinsics

MIN_SIZE = 16        # smallest image side accepted (pixels)
MAX_SIZE = 8192      # largest image side accepted (pixels)


@dataclass(frozen=True)
class WorldSpec:
    """The user-facing parameters of a world (what ``synth.json`` records)."""

    seed: int = 0
    scene: str = "room"            # one of SCENE_KINDS
    motion: str = "handheld"       # one of MOTION_KINDS
    frames: int = 60
    width: int = 320
    height: int = 240
    focal: float | None = None     # pixels (fx = fy); None: random in focal_range x width
    fps: float = 30.0              # frame k is at time k / fps
    dynamic: bool = False          # add moving objects
    num_movers: int = 1            # moving objects when dynamic
    mover_size: float = 0.3        # mover size, fraction of the view width at its distance (0.5: >= 20% moving)
    noise: bool = False            # sensor noise, blur and exposure changes (SensorParams.realistic)
    low_texture: float = 0.0       # fraction of surfaces with a flat colour instead of a texture
    supersample: int = 1           # anti-aliasing sub-samples per pixel axis


@dataclass(frozen=True)
class WorldParams:
    """Advanced knobs; the defaults are what ``slam synth`` uses."""

    textures: TextureParams = field(default_factory=TextureParams)
    scene: SceneParams = field(default_factory=SceneParams)       # low_texture is taken from WorldSpec
    motion: MotionParams = field(default_factory=MotionParams)
    dynamic: DynamicParams = field(default_factory=DynamicParams)  # num_movers, size taken from WorldSpec
    render: RenderParams = field(default_factory=RenderParams)    # supersample taken from WorldSpec
    sensor: SensorParams | None = None    # None: off, or SensorParams.realistic() when WorldSpec.noise
    flow: FlowParams = field(default_factory=FlowParams)
    focal_range: tuple[float, float] = (0.6, 1.4)  # random focal length as a multiple of the width
    principal_jitter: float = 0.02        # principal point offset from the centre, fraction of the size
    cache_size: int = 64                  # rendered frames kept in memory


def validate(spec: WorldSpec) -> None:
    """Raise :class:`InputError` (one line) for parameters that cannot make a world."""
    if spec.scene not in SCENE_KINDS:
        raise InputError(f"unknown scene {spec.scene!r}; choose one of: {', '.join(SCENE_KINDS)}")
    if spec.motion not in MOTION_KINDS:
        raise InputError(f"unknown motion {spec.motion!r}; choose one of: {', '.join(MOTION_KINDS)}")
    if not (MIN_SIZE <= spec.width <= MAX_SIZE and MIN_SIZE <= spec.height <= MAX_SIZE):
        raise InputError(f"image size {spec.width}x{spec.height} out of range: each side must be in "
                         f"[{MIN_SIZE}, {MAX_SIZE}] pixels")
    if spec.frames < 1:
        raise InputError(f"frames must be >= 1, got {spec.frames}")
    if spec.focal is not None and not (np.isfinite(spec.focal) and spec.focal > 0):
        raise InputError(f"focal must be a positive number of pixels, got {spec.focal}")
    if not (np.isfinite(spec.fps) and spec.fps > 0):
        raise InputError(f"fps must be positive, got {spec.fps}")
    if not 0.0 <= spec.low_texture <= 1.0:
        raise InputError(f"low_texture must be in [0, 1], got {spec.low_texture}")
    if spec.num_movers < 0 or spec.mover_size <= 0:
        raise InputError("num_movers must be >= 0 and mover_size > 0")
    if not 1 <= spec.supersample <= 8:
        raise InputError(f"supersample must be in [1, 8], got {spec.supersample}")


def random_intrinsics(rng: np.random.Generator, width: int, height: int, focal: float | None,
                      params: WorldParams) -> Intrinsics:
    """Square pixels, focal ``focal`` (or random), principal point near the image centre."""
    f = float(focal) if focal is not None else float(rng.uniform(*params.focal_range) * width)
    j = params.principal_jitter
    cx = (width - 1) / 2.0 + rng.uniform(-j, j) * width
    cy = (height - 1) / 2.0 + rng.uniform(-j, j) * height
    return Intrinsics(f, f, cx, cy, int(width), int(height))


class SyntheticSequence(Sequence):
    """A rendered synthetic world with full ground truth (``kind == "synthetic"``).

    Frames are rendered on first access and kept in an LRU cache.  Besides
    the :class:`Sequence` interface (frames carry image, pose and depth) it
    gives dynamic masks, mover poses and exact optical flow between any two
    frames (an "oracle" correspondence).

    Attributes:
        spec: the :class:`WorldSpec` it was made from.
        params: the :class:`WorldParams` it was made with.
        scene: the static world; ``movers``: the moving objects.
        trajectory: continuous camera path (``trajectory.poses(t)`` for any times).
    """

    def __init__(self, spec: WorldSpec, params: WorldParams, scene: StaticScene, bank: TextureBank,
                 intrinsics: Intrinsics, trajectory: Trajectory, times: np.ndarray, poses: np.ndarray,
                 movers: list[Mover], renderer: Renderer) -> None:
        name = f"synth-{spec.scene}-{spec.motion}-s{spec.seed}" + ("-dyn" if spec.dynamic else "")
        super().__init__(path=Path("synthetic") / name, name=name, intrinsics=intrinsics, timestamps=times,
                         gt_poses=poses, kind="synthetic")
        self.spec, self.params, self.scene, self.bank = spec, params, scene, bank
        self.trajectory, self.movers, self.renderer = trajectory, movers, renderer
        self._cache: OrderedDict[int, RenderResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self.timestamps)

    # -------------------------------------------------------------- rendering
    def render(self, k: int) -> RenderResult:
        """Image, depth and labels of frame ``k`` (cached)."""
        k = int(k)
        if not 0 <= k < len(self):
            raise IndexError(k)
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        r = self.renderer.render(self.gt_poses[k], self.object_poses(k), k, float(self.timestamps[k]))
        self._cache[k] = r
        while len(self._cache) > max(self.params.cache_size, 2):
            self._cache.popitem(last=False)
        return r

    def _load(self, k: int) -> Frame:
        r = self.render(k)
        return Frame(index=k, timestamp=float(self.timestamps[k]), image=r.image, intrinsics=self.intrinsics,
                     pose=self.gt_poses[k].copy(), depth=r.depth, source=f"{self.name}#{k}")

    # ----------------------------------------------------------- ground truth
    def depth(self, k: int) -> np.ndarray:
        """(H, W) float32 depth z (m) of frame ``k``; 0 where nothing was hit."""
        return self.render(k).depth

    def labels(self, k: int) -> np.ndarray:
        """(H, W) int16 labels of frame ``k``: -1 nothing hit, 0 static, ``m + 1`` mover m."""
        return self.render(k).label

    def dynamic_mask(self, k: int) -> np.ndarray:
        """(H, W) bool: pixels of frame ``k`` showing a moving object."""
        return self.render(k).dynamic_mask

    def object_poses(self, k: int) -> np.ndarray:
        """(M, 4, 4) world-from-object poses of the movers at frame ``k`` (M may be 0)."""
        if not self.movers:
            return np.zeros((0, 4, 4))
        return np.stack([m.poses[k] for m in self.movers])

    def flow(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact optical flow from frame ``i`` to frame ``j``.

        Returns:
            ``(flow (H, W, 2) float32, valid (H, W) bool)``; pixel ``(u, v)`` of frame i moves to
            ``(u, v) + flow[v, u]`` in frame j.  ``valid`` is False where the point is occluded in j,
            leaves the image, or nothing was hit (sky).  Moving objects use their own motion.
        """
        ri, rj = self.render(i), self.render(j)
        return ground_truth_flow(self.intrinsics, self.gt_poses[i], self.gt_poses[j], ri.depth, ri.label,
                                 rj.depth, rj.label, self.object_poses(i), self.object_poses(j), self.params.flow)

    def poses_at(self, times: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses of the continuous trajectory at any ``times`` (s)."""
        return self.trajectory.poses(np.asarray(times, float))

    def description(self) -> dict:
        """JSON-able generation parameters (the spec plus the intrinsics actually used)."""
        K = self.intrinsics
        d = asdict(self.spec)
        d["intrinsics"] = {"fx": K.fx, "fy": K.fy, "cx": K.cx, "cy": K.cy, "width": K.width, "height": K.height}
        return d


def make_world(seed: int = 0, scene: str = "room", motion: str = "handheld", frames: int = 60, width: int = 320,
               height: int = 240, focal: float | None = None, dynamic: bool = False, *, fps: float = 30.0,
               noise: bool = False, low_texture: float = 0.0, num_movers: int = 1, mover_size: float = 0.3,
               supersample: int = 1, params: WorldParams | None = None) -> SyntheticSequence:
    """Build a synthetic world; the same arguments always give identical arrays.

    Args:
        seed: random seed of everything (scene, textures, intrinsics, motion, movers, noise).
        scene: one of ``room``, ``street``, ``table``, ``clutter``.
        motion: one of ``handheld``, ``forward``, ``orbit``, ``rotation``, ``static``, ``shaky``.
        frames: number of frames N; frame k is at time ``k / fps``.
        width, height: image size in pixels.
        focal: focal length in pixels (fx = fy), or None for random in 0.6-1.4 x width.
        dynamic: add ``num_movers`` moving objects of relative size ``mover_size`` (fraction of the view
            width at the mover's distance: 0.3 gives about 10% moving pixels per mover, 0.5 over 20%).
        noise: enable sensor noise, blur and exposure changes.
        low_texture: fraction of surfaces with a flat colour (1.0: untextured world).
        supersample: anti-aliasing sub-samples per pixel axis.
        params: advanced knobs (:class:`WorldParams`).
    Raises:
        InputError: invalid parameters.
    """
    spec = WorldSpec(seed=int(seed), scene=scene, motion=motion, frames=int(frames), width=int(width),
                     height=int(height), focal=None if focal is None else float(focal), fps=float(fps),
                     dynamic=bool(dynamic), num_movers=int(num_movers), mover_size=float(mover_size),
                     noise=bool(noise), low_texture=float(low_texture), supersample=int(supersample))
    return build_world(spec, params or WorldParams())


def build_world(spec: WorldSpec, params: WorldParams = WorldParams()) -> SyntheticSequence:
    """:func:`make_world` from a :class:`WorldSpec`."""
    validate(spec)
    if spec.seed < 0:
        raise InputError(f"seed must be >= 0, got {spec.seed}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(6)]
    rng_tex, rng_scene, rng_cam, rng_motion, rng_dyn, _ = streams
    bank = make_texture_bank(rng_tex, params.textures)
    scene = make_scene(spec.scene, rng_scene, bank, replace(params.scene, low_texture=spec.low_texture))
    K = random_intrinsics(rng_cam, spec.width, spec.height, spec.focal, params)
    times = np.arange(spec.frames, dtype=np.float64) / spec.fps
    traj = make_trajectory(spec.motion, scene, times, K, rng_motion, params.motion)
    poses = traj.poses(times)
    movers: list[Mover] = []
    if spec.dynamic and spec.num_movers > 0:
        dyn = replace(params.dynamic, num_movers=spec.num_movers, size=spec.mover_size)
        movers = make_movers(scene, bank, poses, times, K, rng_dyn, dyn)
    sensor_params = params.sensor or (SensorParams.realistic() if spec.noise else SensorParams())
    renderer = Renderer(scene, bank, K, movers, replace(params.render, supersample=spec.supersample),
                        Sensor(sensor_params, spec.seed))
    return SyntheticSequence(spec, params, scene, bank, K, traj, times, poses, movers, renderer)
