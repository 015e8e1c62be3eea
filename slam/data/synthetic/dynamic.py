"""Rigidly moving objects ("movers") for dynamic scenes.

A mover is a textured box or sphere with a world-from-object pose per frame
``T_wo`` (4x4).  Its trajectory is anchored to a temporally smoothed copy of
the camera path so that it stays in view: it travels at a distance in front of
the camera (a fraction of the free depth along the view axis) while swinging
sideways and bobbing, and spins about the world up axis.  Because the anchor is
smoothed, the mover's image motion differs from the static background's.

Its size is a fraction of the view width at its median distance, so the share
of moving pixels is controlled by :attr:`DynamicParams.size` and
:attr:`DynamicParams.num_movers` (the moving share of the image grows as about ``1.2 * size**2`` per
mover: ``size=0.3`` gives about 10%, ``size=0.5`` 25-30%).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from slam.data.synthetic import shapes
from slam.data.synthetic.raycast import Raycaster
from slam.data.synthetic.scenes import SHAPE_FLAT, SHAPE_SPHERE, StaticScene, Surface
from slam.data.synthetic.textures import TextureBank
from slam.geometry.camera import Intrinsics

UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class DynamicParams:
    """Tunables of the movers."""

    num_movers: int = 1                      # number of moving objects
    size: float = 0.3                        # object size as a fraction of the view width at its distance
    kinds: tuple[str, ...] = ("box", "sphere")  # shapes to draw from
    depth_fraction: tuple[float, float] = (0.35, 0.6)  # distance as a fraction of the free depth ahead
    distance: tuple[float, float] = (0.8, 4.0)        # clamp of the distance (m, x scene scale)
    lateral: float = 0.4                     # sideways swing amplitude, fraction of the half view width
    lateral_rate: tuple[float, float] = (0.4, 1.0)    # rad/s of the sideways swing
    bob: float = 0.15                        # vertical bob amplitude, fraction of the half view height
    bob_rate: float = 0.7                    # bob frequency relative to the sideways swing
    box_aspect: tuple[float, float] = (0.7, 1.0)      # box edges relative to the size
    spin_rate: tuple[float, float] = (0.3, 1.2)       # rad/s about the up axis
    smooth: float = 1.0                      # seconds, std of the Gaussian smoothing of the camera anchor
    margin: float = 0.3                      # minimum gap (m) between the object and the camera centre
    texture_tiles: tuple[float, float] = (0.5, 1.0)   # texture tile as a fraction of the object size


@dataclass
class Mover:
    """One moving object.

    Attributes:
        surface: mesh and material in object coordinates (texture frame = object frame).
        radius: bounding-sphere radius (m) around the object origin.
        poses: (N, 4, 4) world-from-object transforms ``T_wo`` at the frames.
        raycaster: BVH of the mesh in object coordinates (rays are moved into the object frame).
    """

    surface: Surface
    radius: float
    poses: np.ndarray
    raycaster: Raycaster = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.raycaster is None:
            self.raycaster = Raycaster()
            self.raycaster.add(self.surface.vertices, self.surface.triangles)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter1d(x, sigma, axis=0, mode="nearest") if sigma > 0 and len(x) > 1 else x


def make_movers(scene: StaticScene, bank: TextureBank, camera_poses: np.ndarray, times: np.ndarray,
                intrinsics: Intrinsics, rng: np.random.Generator,
                params: DynamicParams = DynamicParams()) -> list[Mover]:
    """Movers that stay in front of the camera path ``camera_poses`` (N, 4, 4) at ``times`` (N,)."""
    n = len(camera_poses)
    fps = (n - 1) / max(times[-1] - times[0], 1e-9) if n > 1 else 30.0
    sig = params.smooth * fps
    P = _smooth(camera_poses[:, :3, 3], sig)
    F = _smooth(camera_poses[:, :3, 2], sig)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    Rt = np.cross(F, UP)
    Rt /= np.maximum(np.linalg.norm(Rt, axis=1, keepdims=True), 1e-9)
    Dn = np.cross(F, Rt)  # image "down" of the anchor
    free = scene.raycaster.cast(P, F).t
    dmax = params.distance[1] * scene.scale
    free = np.where(np.isfinite(free), free, dmax / params.depth_fraction[0])
    tan_w = 0.5 * intrinsics.width / intrinsics.fx   # tan of half the horizontal field of view
    tan_h = 0.5 * intrinsics.height / intrinsics.fy
    movers = []
    for k in range(params.num_movers):
        frac = rng.uniform(*params.depth_fraction)
        d = np.clip(frac * free, params.distance[0] * scene.scale, dmax)
        d = _smooth(d, sig)
        size = params.size * 2.0 * tan_w * float(np.median(d))
        kind = params.kinds[int(rng.integers(len(params.kinds)))]
        if kind == "sphere":
            mesh, radius, shape = shapes.sphere(size / 2), size / 2, SHAPE_SPHERE
        else:
            dims = size * rng.uniform(*params.box_aspect, 3)
            mesh, radius, shape = shapes.box(dims), 0.5 * float(np.linalg.norm(dims)), SHAPE_FLAT
        d = np.maximum(d, radius + params.margin)
        phase = 2 * np.pi * (k / max(params.num_movers, 1)) + rng.uniform(0, 0.5)  # movers spread out
        w = rng.uniform(*params.lateral_rate)
        t = times - times[0]
        side = params.lateral * d * tan_w * np.sin(w * t + phase)
        bob = params.bob * d * tan_h * np.sin(params.bob_rate * w * t + rng.uniform(0, 2 * np.pi))
        centre = P + d[:, None] * F + side[:, None] * Rt + bob[:, None] * Dn
        # keep clear of the (unsmoothed) camera centre
        gap = np.linalg.norm(centre - camera_poses[:, :3, 3], axis=1)
        push = np.maximum(radius + params.margin - gap, 0.0)
        centre = centre + push[:, None] * F
        spin = rng.uniform(*params.spin_rate) * rng.choice([-1.0, 1.0])
        if kind == "sphere":
            R0 = Rotation.random(random_state=rng)
        else:
            R0 = Rotation.from_euler("z", rng.uniform(0, 2 * np.pi))
        R = (Rotation.from_rotvec(np.outer(spin * t, UP)) * R0).as_matrix()
        T = np.tile(np.eye(4), (n, 1, 1))
        T[:, :3, :3] = R
        T[:, :3, 3] = centre
        tex = bank.pick(rng, "noise", "patches", "checker", "stripes", "photo")
        surf = Surface(vertices=mesh[0], triangles=mesh[1], texture=tex, colour=np.ones(3, np.float32),
                       tile=size * rng.uniform(*params.texture_tiles), shape=shape, name=f"mover{k}")
        movers.append(Mover(surf, radius, T))
    return movers
