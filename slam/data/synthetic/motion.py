"""Camera trajectories: continuous functions of time, validated against the scene.

A :class:`Trajectory` gives OpenCV-convention camera-to-world poses (x right,
y down, z forward) at any times ``t`` (seconds), so ground truth can be
sampled at any rate.  Orientation comes from a look-at point, then a small
rotational jitter in the camera frame; the world is z up.

Every generated trajectory is checked: the camera centre stays inside the
scene's free box and at least ``margin`` metres from every surface at every
frame, and a coarse grid of view rays must mostly hit (textured) geometry at a
reasonable distance.  Generation retries with fresh random draws and falls
back to the best candidate.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation

from slam.data.synthetic import MOTION_KINDS
from slam.data.synthetic.scenes import StaticScene
from slam.geometry.camera import Intrinsics

UP = np.array([0.0, 0.0, 1.0])  # world up


@dataclass(frozen=True)
class MotionParams:
    """Tunables of the camera motions (speeds in m/s are multiplied by the scene's scale).

    Jitters are ``(position RMS m, rotation RMS deg, lowest Hz, highest Hz)`` of smooth
    sums of sinusoids added to the path.
    """

    margin: float = 0.3                 # minimum distance (m) from the camera centre to any surface
    attempts: int = 60                  # random draws before falling back to the best candidate
    handheld_speed: float = 0.35        # m/s: mean speed along the handheld spline
    waypoint_interval: float = 1.5      # seconds between spline waypoints
    start_clearance: float = 0.2        # extra clearance (x scale) of spline starts beyond the margin
    waypoint_candidates: int = 16       # random step directions tried per waypoint (the clearest wins)
    waypoint_climb: float = 0.2         # vertical part of a waypoint step, relative to its length
    look_distance: tuple[float, float] = (1.2, 6.0)  # distance range to look-at targets (x scale)
    max_turn_rate: float = 25.0         # deg/s: largest view change between spline waypoints
    target_switch: float = 0.7          # probability of looking at another target at a waypoint
    target_jitter: float = 0.05         # m (x scale): random offset of look-at points
    handheld_jitter: tuple[float, float, float, float] = (0.004, 0.5, 0.3, 2.0)  # hand tremor
    forward_speed: float = 0.6          # m/s: walking indoors; x3 (driving slowly) in the street
    forward_look: float = 4.0           # look-ahead distance (x scale)
    forward_sway: tuple[float, float] = (0.03, 3.0)  # lateral sway (m) and yaw sway (deg)
    forward_sway_rate: tuple[float, float] = (0.2, 0.6)  # Hz of the sway
    forward_pitch: tuple[float, float] = (-0.15, 0.05)   # slope of the view direction (negative: down)
    forward_jitter: tuple[float, float, float, float] = (0.003, 0.3, 0.5, 2.0)  # walking shake
    orbit_rate: float = 0.3             # rad/s around the centre
    orbit_extra_radius: tuple[float, float] = (0.6, 1.6)  # radius beyond the object's own radius (x scale)
    orbit_height: tuple[float, float] = (0.4, 1.0)        # camera height above the centre (x scale)
    orbit_jitter: tuple[float, float, float, float] = (0.003, 0.3, 0.3, 1.5)    # hand tremor
    rotation_rate: float = 0.5          # rad/s of the pan
    rotation_max_sweep: float = 150.0   # degrees of the total pan
    rotation_pitch: float = 6.0         # degrees amplitude of the pitch wobble
    rotation_roll: float = 2.0          # degrees amplitude of the roll wobble
    rotation_wobble_rate: tuple[float, float] = (0.2, 0.8)  # Hz of the pitch and roll wobbles
    rotation_max_pitch: float = 28.0    # degrees: largest mean pitch of the pan
    rotation_clearance: float = 0.5     # extra clearance (x scale) of the rotation centre
    static_clearance: float = 0.3       # extra clearance (x scale) of the static camera
    free_point_candidates: int = 64     # random points drawn when looking for a clear spot
    static_jitter: tuple[float, float, float, float] = (0.002, 0.1, 0.2, 1.0)   # the only motion of `static`
    shaky_speed: float = 0.7            # m/s: mean speed of `shaky` (a handheld spline)
    shaky_jitter: tuple[float, float, float, float] = (0.015, 2.5, 2.0, 7.0)   # strong, fast shake
    view_grid: tuple[int, int] = (12, 9)  # coarse rays per frame for the view check
    min_hit_fraction: float = 0.6       # of the view rays hitting geometry (indoor)
    min_hit_fraction_sky: float = 0.4   # same outdoors
    min_textured_fraction: float = 0.3  # of the hits on textured surfaces (when the scene has any)
    max_view_checks: int = 200          # frames checked (evenly spread) for the view condition


@dataclass
class SmoothNoise:
    """Sum of sinusoids: a smooth, deterministic (N, D) signal with RMS about ``amplitude`` per channel."""

    amplitude: np.ndarray   # (D,)
    freq: np.ndarray        # (K, D) Hz
    phase: np.ndarray       # (K, D) rad

    @staticmethod
    def make(rng: np.random.Generator, amplitude, freq_range: tuple[float, float], dims: int = 3,
             k: int = 4) -> SmoothNoise:
        amp = np.broadcast_to(np.asarray(amplitude, float), (dims,)).copy()
        return SmoothNoise(amp, rng.uniform(*freq_range, (k, dims)), rng.uniform(0, 2 * np.pi, (k, dims)))

    def __call__(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, float)[:, None, None]
        s = np.sin(2 * np.pi * self.freq[None] * t + self.phase[None]).sum(1)
        return s * self.amplitude[None] * np.sqrt(2.0 / self.freq.shape[0])


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, 3, 3) camera-to-world rotations looking from ``position`` to ``target`` (N, 3), z up, no roll."""
    f = target - position
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    r = np.cross(f, UP)
    nr = np.linalg.norm(r, axis=-1, keepdims=True)
    r = np.where(nr > 1e-6, r / np.maximum(nr, 1e-12), np.array([1.0, 0.0, 0.0]))
    d = np.cross(f, r)
    return np.stack([r, d, f], -1)


@dataclass
class Trajectory:
    """Continuous camera path: ``position(t)``, ``target(t)`` and optional jitters.

    ``pos_jitter`` is added to the position in world metres; ``rot_jitter``
    gives rotation-vector angles (radians) about the camera's own axes.
    """

    position: Callable[[np.ndarray], np.ndarray]
    target: Callable[[np.ndarray], np.ndarray]
    pos_jitter: SmoothNoise | None = None
    rot_jitter: SmoothNoise | None = None
    kind: str = ""

    def poses(self, t: np.ndarray) -> np.ndarray:
        """(N, 4, 4) float64 camera-to-world poses (OpenCV camera axes) at times ``t`` (N,)."""
        t = np.atleast_1d(np.asarray(t, float))
        p = self.position(t)
        R = look_at(p, self.target(t))
        if self.pos_jitter is not None:
            p = p + self.pos_jitter(t)
        if self.rot_jitter is not None:
            R = R @ Rotation.from_rotvec(self.rot_jitter(t)).as_matrix()
        T = np.tile(np.eye(4), (len(t), 1, 1))
        T[:, :3, :3] = R
        T[:, :3, 3] = p
        return T


def _jitter(rng: np.random.Generator, spec: tuple[float, float, float, float]) -> tuple[SmoothNoise, SmoothNoise]:
    pos, rot_deg, f0, f1 = spec
    return SmoothNoise.make(rng, pos, (f0, f1)), SmoothNoise.make(rng, np.deg2rad(rot_deg), (f0, f1))


class _Generator:
    """Draws candidate trajectories of each kind for one scene."""

    def __init__(self, scene: StaticScene, rng: np.random.Generator, p: MotionParams, duration: float) -> None:
        self.scene, self.rng, self.p, self.T = scene, rng, p, max(duration, 1e-3)

    # --------------------------------------------------------------- helpers
    def free_point(self, clearance: float) -> np.ndarray:
        """A random point of the free box at least ``clearance`` from every surface (best effort)."""
        s, rng = self.scene, self.rng
        cand = rng.uniform(s.free_lo, s.free_hi, (self.p.free_point_candidates, 3))
        d = s.raycaster.distance(cand)
        ok = np.nonzero(d >= clearance)[0]
        return cand[ok[0]] if len(ok) else cand[int(np.argmax(d))]

    def target_for(self, position: np.ndarray) -> np.ndarray:
        """A look-at target at a comfortable distance from ``position``."""
        s, rng = self.scene, self.rng
        lo, hi = (x * s.scale for x in self.p.look_distance)
        dist = np.linalg.norm(s.targets - position, axis=1)
        ok = np.nonzero((dist >= lo) & (dist <= hi))[0]
        if len(ok) == 0:
            ok = np.argsort(-dist)[:3]
        return s.targets[int(rng.choice(ok))] + rng.normal(0, 2 * self.p.target_jitter * s.scale, 3)

    def spline_path(self, speed: float) -> tuple[Callable, Callable]:
        """Cubic spline through random waypoints at ``speed`` and a spline of look-at targets."""
        s, rng, p = self.scene, self.rng, self.p
        n = max(2, int(np.ceil(self.T / p.waypoint_interval)) + 1)
        step = speed * s.scale * self.T / (n - 1)
        pts = [self.free_point(p.margin + p.start_clearance * s.scale)]
        m = p.waypoint_candidates
        for _ in range(n - 1):
            ang = rng.uniform(0, 2 * np.pi, m)
            dirs = np.stack([np.cos(ang), np.sin(ang), rng.uniform(-p.waypoint_climb, p.waypoint_climb, m)], 1)
            cand = pts[-1] + step * dirs
            inside = np.all((cand >= s.free_lo) & (cand <= s.free_hi), axis=1)
            d = s.raycaster.distance(cand) - (~inside) * 1e3
            pts.append(cand[int(np.argmax(d))])
        pts_a = np.array(pts)
        targets = [self.target_for(pts_a[0])]
        dt = self.T / (n - 1)
        max_turn = np.deg2rad(p.max_turn_rate) * dt  # rad the view may turn between waypoints
        for q_prev, q in zip(pts_a[:-1], pts_a[1:]):
            prev = targets[-1] - q_prev
            dist = np.linalg.norm(prev)
            cand = s.targets - q
            cdist = np.linalg.norm(cand, axis=1)
            cos = (cand @ prev) / np.maximum(cdist * dist, 1e-9)
            lo, hi = (x * s.scale for x in p.look_distance)
            ok = np.nonzero((cos >= np.cos(max_turn)) & (cdist >= lo) & (cdist <= hi))[0]
            if len(ok) and rng.random() < p.target_switch:
                targets.append(s.targets[int(rng.choice(ok))] + rng.normal(0, p.target_jitter * s.scale, 3))
            else:  # keep looking the same way, drifting a little
                targets.append(q + prev + rng.normal(0, p.target_jitter * s.scale * min(dt, 1.0), 3))
        tk = np.linspace(0.0, self.T, n)
        return CubicSpline(tk, pts_a, bc_type="natural"), CubicSpline(tk, np.array(targets), bc_type="natural")

    # ------------------------------------------------------------- the kinds
    def handheld(self) -> Trajectory:
        pos, tgt = self.spline_path(self.p.handheld_speed)
        return Trajectory(pos, tgt, *_jitter(self.rng, self.p.handheld_jitter), kind="handheld")

    def shaky(self) -> Trajectory:
        pos, tgt = self.spline_path(self.p.shaky_speed)
        return Trajectory(pos, tgt, *_jitter(self.rng, self.p.shaky_jitter), kind="shaky")

    def forward(self) -> Trajectory:
        s, rng, p = self.scene, self.rng, self.p
        a, b = s.lanes[int(rng.integers(len(s.lanes)))]
        lane = np.linalg.norm(b - a)
        d = (b - a) / lane
        usable = max(lane - 2 * p.margin, 0.0)
        length = min(p.forward_speed * s.scale * self.T, 0.9 * usable)
        s0 = p.margin + rng.uniform(0, max(usable - length, 0.0))
        side = np.cross(UP, d)
        side /= max(np.linalg.norm(side), 1e-9)
        sway = SmoothNoise.make(rng, [p.forward_sway[0] * s.scale, np.deg2rad(p.forward_sway[1])],
                                p.forward_sway_rate, 2, 2)
        pitch = rng.uniform(*p.forward_pitch)
        T = self.T

        def position(t):
            w = sway(t)
            return a + d * (s0 + length * t / T)[:, None] + side * w[:, :1]

        def target(t):
            yaw = sway(t)[:, 1:2]
            look = d * np.cos(yaw) + side * np.sin(yaw) + UP * pitch
            return position(t) + p.forward_look * s.scale * look

        return Trajectory(position, target, *_jitter(rng, p.forward_jitter), kind="forward")

    def orbit(self) -> Trajectory:
        s, rng, p = self.scene, self.rng, self.p
        centres = s.orbit_centres or [(c, 0.0) for c in s.targets]
        c, r0 = centres[int(rng.integers(len(centres)))]
        radius = r0 + p.margin + rng.uniform(*p.orbit_extra_radius) * s.scale
        height = rng.uniform(*p.orbit_height) * s.scale
        z = float(np.clip(c[2] + height, s.free_lo[2], s.free_hi[2]))
        sweep = min(p.orbit_rate * self.T, 2 * np.pi) * rng.choice([-1.0, 1.0])
        th0 = rng.uniform(0, 2 * np.pi)
        T = self.T
        look = c + rng.normal(0, p.target_jitter * s.scale, 3)

        def position(t):
            th = th0 + sweep * t / T
            return np.stack([c[0] + radius * np.cos(th), c[1] + radius * np.sin(th), np.full_like(th, z)], 1)

        return Trajectory(position, lambda t: np.broadcast_to(look, (len(t), 3)),
                          *_jitter(rng, p.orbit_jitter), kind="orbit")

    def rotation(self) -> Trajectory:
        s, rng, p = self.scene, self.rng, self.p
        c = self.free_point(p.margin + p.rotation_clearance * s.scale)
        v = self.target_for(c) - c
        yaw0 = np.arctan2(v[1], v[0])
        max_pitch = np.deg2rad(p.rotation_max_pitch)
        pitch0 = float(np.clip(np.arctan2(v[2], np.hypot(v[0], v[1])), -max_pitch, max_pitch))
        sweep = min(p.rotation_rate * self.T, np.deg2rad(p.rotation_max_sweep)) * rng.choice([-1.0, 1.0])
        wobble = SmoothNoise.make(rng, np.deg2rad(p.rotation_pitch), p.rotation_wobble_rate, 1, 2)
        roll = SmoothNoise.make(rng, [0.0, 0.0, np.deg2rad(p.rotation_roll)], p.rotation_wobble_rate, 3, 2)
        T = self.T

        def target(t):
            yaw = yaw0 - 0.5 * sweep * np.cos(np.pi * t / T)  # eased pan from yaw0 - sweep/2 to yaw0 + sweep/2
            pitch = pitch0 + wobble(t)[:, 0]
            return c + np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], 1)

        return Trajectory(lambda t: np.broadcast_to(c, (len(t), 3)).copy(), target, None, roll, kind="rotation")

    def static(self) -> Trajectory:
        c = self.free_point(self.p.margin + self.p.static_clearance * self.scene.scale)
        look = self.target_for(c)
        return Trajectory(lambda t: np.broadcast_to(c, (len(t), 3)).copy(),
                          lambda t: np.broadcast_to(look, (len(t), 3)), *_jitter(self.rng, self.p.static_jitter),
                          kind="static")


def view_score(scene: StaticScene, poses: np.ndarray, intrinsics: Intrinsics, p: MotionParams) -> float:
    """Fraction of frames that satisfy the clearance and view conditions (1.0 = all good)."""
    P = poses[:, :3, 3]
    inside = np.all((P >= scene.free_lo - 1e-6) & (P <= scene.free_hi + 1e-6), axis=1)
    clear = scene.raycaster.distance(P) >= p.margin
    ok = inside & clear
    idx = np.unique(np.linspace(0, len(poses) - 1, min(len(poses), p.max_view_checks)).round().astype(int))
    gw, gh = p.view_grid
    u, v = np.meshgrid(np.linspace(0, intrinsics.width - 1, gw), np.linspace(0, intrinsics.height - 1, gh))
    dc = np.stack([(u.ravel() - intrinsics.cx) / intrinsics.fx, (v.ravel() - intrinsics.cy) / intrinsics.fy,
                   np.ones(u.size)], 1)
    R = poses[idx, :3, :3]
    dirs = np.einsum("nij,mj->nmi", R, dc).reshape(-1, 3)
    orig = np.repeat(P[idx], len(dc), axis=0)
    h = scene.raycaster.cast(orig, dirs)
    t = h.t.reshape(len(idx), -1)
    g = h.geometry.reshape(len(idx), -1)
    hit = np.isfinite(t)
    need = p.min_hit_fraction_sky if scene.has_sky else p.min_hit_fraction
    view_ok = hit.mean(1) >= need
    view_ok &= np.where(hit, t, np.inf).min(1) >= 0.5 * p.margin
    textured = np.array([s.texture >= 0 for s in scene.surfaces] + [False])
    if textured.any():
        frac = (textured[g] & hit).sum(1) / np.maximum(hit.sum(1), 1)
        view_ok &= frac >= p.min_textured_fraction
    ok[idx] &= view_ok
    return float(ok.mean())


def make_trajectory(kind: str, scene: StaticScene, times: np.ndarray, intrinsics: Intrinsics,
                    rng: np.random.Generator, params: MotionParams = MotionParams()) -> Trajectory:
    """A validated camera trajectory of ``kind`` (one of :data:`MOTION_KINDS`).

    ``times`` (N,) are the frame times in seconds, starting at 0; the
    trajectory is built on ``[0, times[-1]]`` and checked at these times.
    """
    if kind not in MOTION_KINDS:
        raise ValueError(f"unknown motion kind {kind!r}; choose one of {', '.join(MOTION_KINDS)}")
    times = np.asarray(times, float)
    gen = _Generator(scene, rng, params, float(times[-1]) if len(times) > 1 else 0.0)
    best, best_score = None, -1.0
    for _ in range(params.attempts):
        traj = getattr(gen, kind)()
        score = view_score(scene, traj.poses(times), intrinsics, params)
        if score > best_score:
            best, best_score = traj, score
        if score >= 1.0:
            break
    assert best is not None
    return best
