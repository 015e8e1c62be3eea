"""What the viewer draws, as plain NumPy: no Open3D, no torch.

The render process receives :class:`SceneUpdate` messages and keeps a
:class:`SceneState`; the renderer (:mod:`viewer.render`) turns its dirty slots
into Open3D geometries.  Everything here is testable without OpenGL.

Conventions (as in the rest of the project, see README "Conventions"):

* poses are **camera-to-world** 4x4 float64, OpenCV camera axes (x right,
  y down, z forward); "up" for a camera is its ``-y`` axis;
* keyframe depth is **inverse depth** ``disp`` (h, w) at feature resolution,
  with intrinsics ``K = [fx, fy, cx, cy]`` at that resolution, pixel centres at
  integer coordinates;
* keyframe colours are (h, w, 3) uint8 RGB at the same feature resolution;
* a viewer camera is given as a 4x4 **world-to-camera** extrinsic (OpenCV
  axes), which is what Open3D's ``PinholeCameraParameters.extrinsic`` holds.

Keyframes are identified by their *slot* in :class:`slam.system.store.KeyframeStore`
(``0 .. n-1``); removing a keyframe shifts later slots down, and the sender then
marks those slots changed, so a slot-keyed state stays correct.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Inverse depths at or below this are invalid (no point is drawn).
MIN_DISP: float = 1e-6

#: Frustum colour of a keyframe and of the current (newest) keyframe, RGB in [0, 1].
KEYFRAME_COLOR = np.array([0.35, 0.65, 1.0])
CURRENT_COLOR = np.array([1.0, 0.2, 0.1])
#: Trajectory colour, RGB in [0, 1].
TRAJECTORY_COLOR = np.array([1.0, 0.75, 0.1])
#: Colour of points that have no colour (replay without ``points.ply`` / pixels the fusion rejected).
UNCOLORED = np.array([150, 150, 150], dtype=np.uint8)


@dataclass
class SceneOptions:
    """Drawing options (see ``configs/viewer/false.yaml`` for each one's meaning)."""

    min_confidence: float = 0.5
    filter: bool = True
    max_depth_ratio: float = 4.0
    frustum_scale: float = 0.08
    current_scale: float = 2.0
    show_trajectory: bool = True


@dataclass
class SceneUpdate:
    """One message from the system (or a replay) to the renderer.

    Attributes:
        n: number of keyframes now; slots ``>= n`` disappear.
        poses: (n, 4, 4) camera-to-world poses of every keyframe (always all of them: cheap).
        frame_index: (n,) input-frame index of each slot.
        intrinsics: (4,) ``[fx, fy, cx, cy]`` at the feature (depth) resolution.
        depth: slot -> ``(disp (h, w) float32, confidence (h, w) float32)`` for the slots whose
            depth changed (or that are new / shifted).
        colors: slot -> (h, w, 3) uint8 RGB colours for slots whose image is new to the receiver.
        trajectory: optional (F, 3) camera centres of every frame (replay); None: draw the
            keyframe centres in frame order.
        final: True for the last update of a run (the state after the final refinement).
    """

    n: int
    poses: np.ndarray
    frame_index: np.ndarray
    intrinsics: np.ndarray
    depth: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    colors: dict[int, np.ndarray] = field(default_factory=dict)
    trajectory: np.ndarray | None = None
    final: bool = False


def quat_to_matrix(tq: np.ndarray) -> np.ndarray:
    """(n, 7) ``[tx ty tz qx qy qz qw]`` (pypose / TUM layout) -> (n, 4, 4) float64 transforms.

    The quaternion is normalised first; no SciPy so that the render process stays light.
    """
    tq = np.asarray(tq, dtype=np.float64).reshape(-1, 7)
    t, q = tq[:, :3], tq[:, 3:]
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    x, y, z, w = q.T
    T = np.zeros((tq.shape[0], 4, 4))
    T[:, 0, 0] = 1 - 2 * (y * y + z * z)
    T[:, 0, 1] = 2 * (x * y - z * w)
    T[:, 0, 2] = 2 * (x * z + y * w)
    T[:, 1, 0] = 2 * (x * y + z * w)
    T[:, 1, 1] = 1 - 2 * (x * x + z * z)
    T[:, 1, 2] = 2 * (y * z - x * w)
    T[:, 2, 0] = 2 * (x * z - y * w)
    T[:, 2, 1] = 2 * (y * z + x * w)
    T[:, 2, 2] = 1 - 2 * (x * x + y * y)
    T[:, :3, 3] = t
    T[:, 3, 3] = 1.0
    return T


def lift_keyframe(disp: np.ndarray, conf: np.ndarray, K: np.ndarray, T_wc: np.ndarray,
                  colors: np.ndarray | None, min_confidence: float | None,
                  max_depth_ratio: float | None) -> tuple[np.ndarray, np.ndarray]:
    """World points of one keyframe's depth map.

    Args:
        disp: (h, w) inverse depth.
        conf: (h, w) confidence in [0, 1].
        K: (4,) intrinsics at (h, w).
        T_wc: (4, 4) camera-to-world.
        colors: (h, w, 3) uint8 or None (grey).
        min_confidence: drop pixels below this confidence; None keeps every valid pixel.
        max_depth_ratio: drop pixels deeper than this times the median valid depth of the
            keyframe (far outliers from near-zero inverse depths); None keeps them.
    Returns:
        ``(xyz (m, 3) float64 world, rgb (m, 3) float64 in [0, 1])``.
    """
    disp = np.asarray(disp, dtype=np.float64)
    ok = np.isfinite(disp) & (disp > MIN_DISP)
    if min_confidence is not None:
        ok &= np.asarray(conf) >= min_confidence
    if max_depth_ratio is not None and ok.any():
        ok &= disp >= np.median(disp[ok]) / max_depth_ratio
    v, u = np.nonzero(ok)
    z = 1.0 / disp[v, u]
    P = np.stack([(u - K[2]) / K[0] * z, (v - K[3]) / K[1] * z, z], 1)
    xyz = P @ T_wc[:3, :3].T + T_wc[:3, 3]
    rgb = (colors[v, u] if colors is not None else np.broadcast_to(UNCOLORED, (len(v), 3))).astype(np.float64)
    return xyz, rgb / 255.0


def median_depth(disp: np.ndarray) -> float | None:
    """Median depth (1 / inverse depth) of the valid pixels, None when there are none."""
    d = np.asarray(disp, dtype=np.float64)
    d = d[np.isfinite(d) & (d > MIN_DISP)]
    return float(np.median(1.0 / d)) if d.size else None


def frustum_lines(T_wc: np.ndarray, K: np.ndarray, size: tuple[int, int], depth: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A camera drawn as a pyramid: apex at the centre, image corners at ``depth``.

    Args:
        T_wc: (4, 4) camera-to-world.
        K: (4,) intrinsics of an image of ``size = (w, h)``.
        depth: distance of the drawn image plane.
    Returns:
        ``(points (5, 3), lines (8, 2) int)``: apex first, then the corners clockwise from top-left.
    """
    w, h = size
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    rays = np.stack([(corners[:, 0] - K[2]) / K[0], (corners[:, 1] - K[3]) / K[1], np.ones(4)], 1)
    P = np.vstack([np.zeros(3), rays * depth])
    pts = P @ T_wc[:3, :3].T + T_wc[:3, 3]
    lines = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])
    return pts, lines


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """World-to-camera extrinsic (OpenCV axes) of a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear up in the image (the camera's ``-y``).
    """
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z = z / max(np.linalg.norm(z), 1e-12)
    down = -up
    x = np.cross(down, z)
    if np.linalg.norm(x) < 1e-9:  # looking straight along `up`: pick any perpendicular
        x = np.cross(np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0]), z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    E = np.eye(4)
    E[:3, :3] = np.stack([x, y, z])
    E[:3, 3] = -E[:3, :3] @ eye
    return E


class SceneState:
    """The receiver's copy of the reconstruction, with dirty tracking.

    :meth:`apply` merges a :class:`SceneUpdate`; :meth:`take_dirty` returns which
    keyframe slots need new geometry (new, depth or pose changed, intrinsics changed,
    filter toggled) and which disappeared.
    """

    def __init__(self, options: SceneOptions):
        self.opt = options
        self.n = 0
        self.poses = np.zeros((0, 4, 4))
        self.frame_index = np.zeros(0, dtype=np.int64)
        self.K: np.ndarray | None = None
        self.disp: dict[int, np.ndarray] = {}
        self.conf: dict[int, np.ndarray] = {}
        self.colors: dict[int, np.ndarray] = {}
        self.depth_of: dict[int, float] = {}  # slot -> median depth (cached)
        self.trajectory_override: np.ndarray | None = None
        self.final = False
        self.updates = 0
        self._dirty: set[int] = set()
        self._removed: set[int] = set()

    # ------------------------------------------------------------------ input
    def apply(self, u: SceneUpdate) -> None:
        """Merge one update (see :class:`SceneUpdate`)."""
        n = int(u.n)
        poses = np.asarray(u.poses, dtype=np.float64).reshape(n, 4, 4)
        K = np.asarray(u.intrinsics, dtype=np.float64)
        if self.K is None or not np.allclose(K, self.K, rtol=1e-7, atol=0):
            self._dirty |= set(range(n))  # every point moves with the focal length
        self.K = K
        m = min(n, self.n)
        moved = np.flatnonzero(np.abs(poses[:m] - self.poses[:m]).reshape(m, -1).max(1) > 1e-9) if m else []
        self._dirty |= {int(k) for k in moved} | set(range(self.n, n))
        for k in range(n, self.n):
            self._removed.add(k)
            self._dirty.discard(k)
            for d in (self.disp, self.conf, self.colors, self.depth_of):
                d.pop(k, None)
        for k, (disp, conf) in u.depth.items():
            if k < n:
                self.disp[k], self.conf[k] = np.asarray(disp, np.float32), np.asarray(conf, np.float32)
                self.depth_of.pop(k, None)
                self._dirty.add(k)
        for k, rgb in u.colors.items():
            if k < n:
                self.colors[k] = np.asarray(rgb, np.uint8)
                self._dirty.add(k)
        self._removed -= set(range(n))
        self.n, self.poses, self.frame_index = n, poses, np.asarray(u.frame_index, dtype=np.int64).reshape(n)
        if u.trajectory is not None:
            self.trajectory_override = np.asarray(u.trajectory, dtype=np.float64).reshape(-1, 3)
        self.final = self.final or bool(u.final)
        self.updates += 1

    def set_filter(self, on: bool) -> None:
        """Switch the confidence filter; every keyframe's points change."""
        if on != self.opt.filter:
            self.opt.filter = on
            self._dirty |= set(range(self.n))

    def take_dirty(self) -> tuple[set[int], set[int]]:
        """``(slots needing new points, slots that disappeared)``; resets both."""
        dirty, removed = {k for k in self._dirty if k < self.n}, self._removed
        self._dirty, self._removed = set(), set()
        return dirty, removed

    # ------------------------------------------------------------------ geometry
    def keyframe_points(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """World points and colours of slot ``k`` under the current filter (may be empty)."""
        if k not in self.disp or self.K is None:
            return np.zeros((0, 3)), np.zeros((0, 3))
        thr = self.opt.min_confidence if self.opt.filter else None
        ratio = self.opt.max_depth_ratio if self.opt.filter else None
        return lift_keyframe(self.disp[k], self.conf[k], self.K, self.poses[k], self.colors.get(k), thr, ratio)

    def scene_depth(self) -> float:
        """Typical depth of the scene: median over keyframes of their median depth (1.0 if unknown)."""
        vals = []
        for k in range(self.n):
            if k in self.disp and k not in self.depth_of:
                self.depth_of[k] = median_depth(self.disp[k]) or np.nan
            if np.isfinite(self.depth_of.get(k, np.nan)):
                vals.append(self.depth_of[k])
        return float(np.median(vals)) if vals else 1.0

    def feature_size(self) -> tuple[int, int]:
        """``(w, h)`` of the depth maps (a 4:3 guess before any depth arrived)."""
        for d in self.disp.values():
            return d.shape[1], d.shape[0]
        return 40, 30

    def frusta(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All keyframe frusta as one line set: ``(points, lines, line colours)``.

        The newest keyframe (the current camera) is drawn ``current_scale`` times larger in red.
        """
        if self.n == 0 or self.K is None:
            return np.zeros((0, 3)), np.zeros((0, 2), np.int64), np.zeros((0, 3))
        depth = self.opt.frustum_scale * self.scene_depth()
        pts, lines, cols = [], [], []
        for k in range(self.n):
            cur = k == self.n - 1
            p, ln = frustum_lines(self.poses[k], self.K, self.feature_size(),
                                  depth * (self.opt.current_scale if cur else 1.0))
            lines.append(ln + 5 * k)
            pts.append(p)
            cols.append(np.tile(CURRENT_COLOR if cur else KEYFRAME_COLOR, (len(ln), 1)))
        return np.vstack(pts), np.vstack(lines), np.vstack(cols)

    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """The camera path as a polyline ``(points (m, 3), lines (m-1, 2))``: every frame when
        given (replay), else the keyframe centres in input-frame order."""
        if self.trajectory_override is not None:
            P = self.trajectory_override
        else:
            P = self.poses[np.argsort(self.frame_index, kind="stable"), :3, 3]
        if len(P) < 2:
            return np.zeros((0, 3)), np.zeros((0, 2), np.int64)
        idx = np.arange(len(P) - 1)
        return P, np.stack([idx, idx + 1], 1)

    # ------------------------------------------------------------------ viewpoints
    def up_direction(self) -> np.ndarray:
        """World "up": the mean of the keyframes' ``-y`` axes (OpenCV cameras), normalised."""
        if self.n == 0:
            return np.array([0.0, -1.0, 0.0])
        up = -self.poses[:, :3, 1].mean(0)
        nrm = np.linalg.norm(up)
        return up / nrm if nrm > 1e-9 else -self.poses[-1, :3, 1]

    def follow_view(self, distance: float, height: float) -> np.ndarray:
        """Extrinsic of a camera behind and above the newest keyframe, looking ahead of it.

        ``distance`` and ``height`` are in units of :meth:`scene_depth`.
        """
        if self.n == 0:
            return look_at(np.array([0.0, 0.0, -1.0]), np.zeros(3), np.array([0.0, -1.0, 0.0]))
        T = self.poses[-1]
        s = self.scene_depth()
        C, fwd, up = T[:3, 3], T[:3, 2], -T[:3, 1]
        eye = C - distance * s * fwd + height * s * up
        return look_at(eye, C + 0.5 * s * fwd, up)

    def overview_view(self, points: np.ndarray, fov_deg: float, aspect: float, elevation_deg: float
                      ) -> tuple[np.ndarray, float]:
        """Extrinsic of a camera that frames ``points`` and every keyframe from behind and above.

        The viewing direction is the keyframes' mean forward direction tilted down by
        ``elevation_deg`` (``aspect`` = width / height).  The target is centred on the
        2nd-98th percentile box of the points as seen from that direction, and the distance
        is the smallest that keeps 98 % of the points and every camera centre in the frame.
        Returns ``(extrinsic, distance to the target)``.
        """
        C = self.poses[:, :3, 3] if self.n else np.zeros((1, 3))
        P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        up = self.up_direction()
        fwd = self.poses[:, :3, 2].mean(0) if self.n else np.array([0.0, 0.0, 1.0])
        fwd = fwd - up * (fwd @ up)
        if np.linalg.norm(fwd) < 1e-6 and self.n:  # cameras looking all around (orbit): the newest one's
            fwd = self.poses[-1, :3, 2] - up * (self.poses[-1, :3, 2] @ up)
        if np.linalg.norm(fwd) < 1e-6:
            fwd = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])
        fwd = fwd / np.linalg.norm(fwd)
        el = np.radians(elevation_deg)
        d = np.cos(el) * fwd - np.sin(el) * up          # viewing direction
        x = np.cross(-up, d)
        x = x / max(np.linalg.norm(x), 1e-12)
        y = np.cross(d, x)                               # image down
        ty = np.tan(np.radians(fov_deg) / 2.0)
        tx = ty * aspect
        allp = np.vstack([P, C])

        def extent(vals: np.ndarray) -> tuple[float, float]:
            """2nd-98th percentile of the points' values (the first len(P)), widened to every camera's."""
            vp, vc = vals[:len(P)], vals[len(P):]
            lo, hi = np.percentile(vp, [2, 98]) if len(P) > 50 else ((vp.min(), vp.max()) if len(P) else (np.inf, -np.inf))
            return min(lo, vc.min()), max(hi, vc.max())

        centre = allp.mean(0)
        (a0, a1), (b0, b1) = extent((allp - centre) @ x), extent((allp - centre) @ y)
        target = centre + 0.5 * (a0 + a1) * x + 0.5 * (b0 + b1) * y

        def needed(Q: np.ndarray) -> np.ndarray:
            rel = Q - target
            return np.maximum(np.abs(rel @ x) / tx, np.abs(rel @ y) / ty) - rel @ d

        def fit() -> float:
            dist = needed(C).max()
            if len(P):
                dist = max(dist, np.percentile(needed(P), 98) if len(P) > 50 else needed(P).max())
            return 1.05 * max(dist, 0.5 * self.scene_depth())

        dist = fit()
        for _ in range(3):  # perspective: re-centre the image extent of what is seen, then refit
            rel = allp - (target - dist * d)
            z = np.maximum(rel @ d, 1e-9)
            (u0, u1), (v0, v1) = extent((rel @ x) / z), extent((rel @ y) / z)
            target = target + dist * (0.5 * (u0 + u1) * x + 0.5 * (v0 + v1) * y)
            dist = fit()
        return look_at(target - dist * d, target, up), float(dist)
