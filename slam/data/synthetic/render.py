"""Ray-cast renderer: depth, object labels and Lambertian-shaded RGB.

Per frame: one Embree ray cast against the static scene, plus one per visible
mover restricted to the pixels of its projected bounding sphere (rays are moved
into the mover's frame, so its BVH is built once).

Shading is vectorised NumPy over a per-triangle table precomputed once (movers'
rows are updated per frame): the texture coordinate is an affine function of
the world hit point (planar projection along the dominant axis of the
triangle's normal in its surface's local frame, divided by the tile size in
metres), the mip level follows the pixel footprint, and the radiance is
``albedo * (ambient + key * max(n.l, 0) + fill * max(-n.l, 0))`` with a
directional key light, an opposite fill light and the normal facing the
camera.  Spheres and cylinder sides use exact normals.  Shading does not depend
on the viewpoint, so a static point has the same colour in every frame
(brightness constancy) unless exposure changes are enabled.

Camera rays have camera-frame direction ``((u - cx) / fx, (v - cy) / fy, 1)``
through pixel centres, so the hit distance is the depth ``z``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slam.data.synthetic.dynamic import Mover
from slam.data.synthetic.scenes import SHAPE_CYLINDER, SHAPE_FLAT, StaticScene, Surface
from slam.data.synthetic.sensor import Sensor
from slam.data.synthetic.textures import TextureBank
from slam.geometry.camera import Intrinsics

# texture (u, v) axes of the planar projection along local axis 0, 1, 2
_U_AXIS = np.array([1, 0, 0])
_V_AXIS = np.array([2, 2, 1])

LABEL_NONE = -1    # label of pixels that hit nothing (sky)
LABEL_STATIC = 0   # label of static geometry; mover k has label k + 1

# columns of the per-triangle table
_A = slice(0, 8)        # texture coordinate (u, v) = A[:, :3] @ p + A[:, 3], rows u then v
_N = slice(8, 11)       # unit world normal
_NDL = 11               # n . light
_LOGTEX = 12            # log2(texels per metre / (focal * supersample))
_COL = slice(13, 16)    # colour (tint or flat colour)
_TEX = 16               # texture index, -1 for a flat colour
_SMOOTH = 17            # shape code of exact normals (0: triangle normal)
_CENTRE = slice(18, 21)  # sphere / cylinder centre (world)
_AXIS = slice(21, 24)   # cylinder axis (world)
_WIDTH = 24


@dataclass(frozen=True)
class RenderParams:
    """Lighting and sampling tunables."""

    light_dir: tuple[float, float, float] = (0.45, 0.3, 1.0)  # towards the key light (world, normalised on use)
    ambient: float = 0.4       # light reaching every surface
    key: float = 0.55          # directional key light intensity
    fill: float = 0.2          # intensity of the fill light opposite the key light
    sky_horizon: tuple[float, float, float] = (0.78, 0.84, 0.92)  # sky colour at the horizon
    sky_zenith: tuple[float, float, float] = (0.32, 0.52, 0.85)   # sky colour straight up
    supersample: int = 1       # sub-pixel samples per axis for anti-aliasing (1 = off)
    mip_bias: float = 0.5      # added to the mip level (positive = blurrier, like real optics; 0.5 limits aliasing)
    min_cos: float = 0.15      # clamp of |cos(incidence)| in the texture footprint (grazing angles blur)
    nthreads: int = 0          # ray-casting threads (0: all cores)


@dataclass
class RenderResult:
    """One rendered frame.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        depth: (H, W) float32 depth z in metres; 0 where nothing was hit.
        label: (H, W) int16: -1 nothing hit, 0 static geometry, k + 1 mover k.
    """

    image: np.ndarray
    depth: np.ndarray
    label: np.ndarray

    @property
    def dynamic_mask(self) -> np.ndarray:
        """(H, W) bool: pixels showing a moving object."""
        return self.label > LABEL_STATIC


def _where(mask: np.ndarray) -> np.ndarray | None:
    """Indices where ``mask`` is True, or None when it is True everywhere (no gather needed)."""
    return None if mask.all() else np.nonzero(mask)[0]


def _sub(a: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    return a if idx is None else a[idx]


def rotate(v: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``v @ R.T`` for many (M, 3) vectors; much faster than BLAS for this shape."""
    R = R.astype(v.dtype, copy=False)
    return v[:, 0:1] * R[:, 0] + v[:, 1:2] * R[:, 1] + v[:, 2:3] * R[:, 2]


def _pixel_rays(K: Intrinsics, ss: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-frame ray directions (z = 1) and pixel coordinates of an ``ss x ss`` sub-pixel grid.

    Returns ``(dirs (M, 3), u (M,), v (M,))`` with ``M = H*ss * W*ss`` in row-major order of the
    sub-sample grid, so that a reshape to (H, ss, W, ss) groups the sub-samples of each pixel.
    """
    off = (np.arange(ss) + 0.5) / ss - 0.5
    u = (np.arange(K.width)[:, None] + off[None]).ravel()
    v = (np.arange(K.height)[:, None] + off[None]).ravel()
    uu, vv = np.meshgrid(u, v)
    d = np.stack([(uu - K.cx) / K.fx, (vv - K.cy) / K.fy, np.ones_like(uu)], -1).reshape(-1, 3)
    return d.astype(np.float32), uu.ravel().astype(np.float32), vv.ravel().astype(np.float32)


def triangle_table(s: Surface, bank_size: int, focal: float, light: np.ndarray) -> np.ndarray:
    """(T, _WIDTH) float32 shading table of the triangles of ``s`` (in the frame of its vertices)."""
    V = s.vertices.astype(np.float64)
    tri = s.triangles.astype(np.int64)
    n = np.cross(V[tri[:, 1]] - V[tri[:, 0]], V[tri[:, 2]] - V[tri[:, 0]])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(norm > 1e-12, n / np.maximum(norm, 1e-300), np.array([0.0, 0.0, 1.0]))
    R = np.asarray(s.rotation, np.float64)        # local from world
    o = np.asarray(s.origin, np.float64)
    n_l = n @ R.T
    axis = np.argmax(np.abs(n_l), axis=1)
    ru, rv = R[_U_AXIS[axis]], R[_V_AXIS[axis]]   # (T, 3) world directions of texture u and v
    out = np.zeros((len(tri), _WIDTH), np.float64)
    out[:, 0:3], out[:, 3] = ru / s.tile, -(ru @ o) / s.tile
    out[:, 4:7], out[:, 7] = rv / s.tile, -(rv @ o) / s.tile
    out[:, _N] = n
    out[:, _NDL] = n @ light
    out[:, _LOGTEX] = np.log2(bank_size / (s.tile * focal))
    out[:, _COL] = s.colour
    out[:, _TEX] = s.texture
    smooth = np.full(len(tri), s.shape, np.float64)
    if s.shape == SHAPE_CYLINDER:
        smooth[np.abs(n_l[:, 2]) > 0.9] = SHAPE_FLAT  # caps
    out[:, _SMOOTH] = smooth
    out[:, _CENTRE] = o
    out[:, _AXIS] = R[2]
    return out.astype(np.float32)


def move_table(local: np.ndarray, T_wo: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Shading table of triangles given in object coordinates, for object pose ``T_wo`` (4, 4)."""
    R = T_wo[:3, :3].astype(np.float32)
    t = T_wo[:3, 3].astype(np.float32)
    out = local.copy()
    for rows in (slice(0, 3), slice(4, 7)):
        a = rotate(local[:, rows], R)                # coefficients on world points: a_l . R^T (p - t)
        out[:, rows] = a
        out[:, rows.stop] = local[:, rows.stop] - np.einsum("ij,j->i", a, t)
    out[:, _N] = rotate(local[:, _N], R)
    out[:, _NDL] = np.einsum("ij,j->i", out[:, _N], light)
    out[:, _CENTRE] = rotate(local[:, _CENTRE], R) + t
    out[:, _AXIS] = rotate(local[:, _AXIS], R)
    return out


class Renderer:
    """Renders a static scene plus movers through a pinhole camera."""

    def __init__(self, scene: StaticScene, bank: TextureBank, intrinsics: Intrinsics, movers: list[Mover],
                 params: RenderParams, sensor: Sensor) -> None:
        self.scene, self.bank, self.K, self.movers = scene, bank, intrinsics, movers
        self.p, self.sensor = params, sensor
        self.scene.raycaster.nthreads = params.nthreads
        for m in movers:
            m.raycaster.nthreads = params.nthreads
        ss = max(1, int(params.supersample))
        self.ss = ss
        self.dirs, self.u, self.v = _pixel_rays(intrinsics, ss)
        self.dir_norm2 = (self.dirs.astype(np.float32) ** 2).sum(1)
        if ss > 1:  # depth and labels come from rays through the pixel centres
            self.centre_dirs, self.centre_u, self.centre_v = _pixel_rays(intrinsics, 1)
        light = np.asarray(params.light_dir, np.float64)
        self.light = (light / np.linalg.norm(light)).astype(np.float32)
        f = intrinsics.fx * ss
        tables = [triangle_table(s, bank.size, f, self.light) for s in scene.surfaces]
        self.mover_tables = [triangle_table(m.surface, bank.size, f, self.light) for m in movers]
        counts = [len(t) for t in tables + self.mover_tables]
        self.offset = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # first triangle of each geometry
        self.table = np.concatenate(tables + self.mover_tables)
        self.n_static = len(scene.surfaces)
        self.n_static_tri = int(self.offset[self.n_static])
        self.sky = (np.asarray(params.sky_horizon, np.float32), np.asarray(params.sky_zenith, np.float32))

    # ---------------------------------------------------------------- casting
    def _sphere_pixels(self, c: np.ndarray, r: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Indices of the rays (pixel coordinates ``u, v``) that may hit a sphere of radius ``r``
        centred at camera-frame point ``c`` (exact bounding box of its projection, plus a pixel)."""
        K = self.K

        def extent(a: float, z: float, f: float, cc: float) -> tuple[float, float]:
            rho = np.hypot(a, z)
            if rho <= r:
                return -np.inf, np.inf
            centre, half = np.arctan2(a, z), np.arcsin(r / rho)
            lo = -np.inf if centre - half <= -np.pi / 2 else f * np.tan(centre - half) + cc
            hi = np.inf if centre + half >= np.pi / 2 else f * np.tan(centre + half) + cc
            return lo - 1.0, hi + 1.0

        u0, u1 = extent(float(c[0]), float(c[2]), K.fx, K.cx)
        v0, v1 = extent(float(c[1]), float(c[2]), K.fy, K.cy)
        return np.nonzero((u >= u0) & (u <= u1) & (v >= v0) & (v <= v1))[0]

    def _trace(self, T_wc: np.ndarray, mover_poses: np.ndarray | None, dirs_c: np.ndarray, u: np.ndarray,
               v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Closest hits of camera rays ``dirs_c`` (M, 3).

        Returns ``(t (M,), geometry (M,), triangle (M,) global row of the table, world dirs (M, 3))``.
        """
        R = T_wc[:3, :3].astype(np.float32)
        o = T_wc[:3, 3].astype(np.float32)
        d = rotate(dirs_c, R)
        h = self.scene.raycaster.cast(o, d)
        t, g = h.t, h.geometry
        tri = np.where(g >= 0, self.offset[np.maximum(g, 0)] + h.primitive, -1)
        for k, m in enumerate(self.movers):
            Two = mover_poses[k]
            Rm = Two[:3, :3].astype(np.float32)
            tm = Two[:3, 3].astype(np.float32)
            c = R.T @ (tm - o)  # mover centre in the camera frame
            if c[2] < -m.radius:
                continue
            sel = self._sphere_pixels(c, m.radius, u, v)
            if len(sel) == 0:
                continue
            hm = m.raycaster.cast(Rm.T @ (o - tm), rotate(d[sel], Rm.T))
            closer = hm.t < t[sel]
            idx = sel[closer]
            t[idx] = hm.t[closer]
            g[idx] = self.n_static + k
            tri[idx] = self.offset[self.n_static + k] + hm.primitive[closer]
        return t, g, tri, d

    # ---------------------------------------------------------------- shading
    def _shade(self, T_wc: np.ndarray, table: np.ndarray, t: np.ndarray, tri: np.ndarray, d: np.ndarray,
               dn2: np.ndarray) -> np.ndarray:
        """(M, 3) float32 linear colours of rays with world directions ``d`` hitting triangles ``tri``."""
        out = np.empty((len(t), 3), np.float32)
        is_hit = tri >= 0
        hit = _where(is_hit)
        if hit is not None:
            miss = np.nonzero(~is_hit)[0]
            if self.scene.has_sky:
                e = np.clip(d[miss, 2] / np.sqrt(dn2[miss]), 0, 1)[:, None]
                out[miss] = self.sky[0] * (1 - e) + self.sky[1] * e
            else:
                out[miss] = 0.0
            if len(hit) == 0:
                return out
        rec = np.take(table, _sub(tri, hit), axis=0)
        th = _sub(t, hit)
        dh = _sub(d, hit)
        dn2h = _sub(dn2, hit)
        p = th[:, None] * dh
        p += T_wc[:3, 3].astype(np.float32)
        n = rec[:, _N]
        ndl = rec[:, _NDL]
        smooth = np.nonzero(rec[:, _SMOOTH] > 0)[0]
        if len(smooth):  # exact normals of spheres and cylinder sides
            rs = rec[smooth]
            q = p[smooth] - rs[:, _CENTRE]
            cyl = rs[:, _SMOOTH] == SHAPE_CYLINDER
            q[cyl] -= (q[cyl] * rs[cyl, _AXIS]).sum(1, keepdims=True) * rs[cyl, _AXIS]
            q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            n = n.copy()
            n[smooth] = q
            ndl = ndl.copy()
            ndl[smooth] = np.einsum("ij,j->i", q, self.light)
        nd = np.einsum("ij,ij->i", n, dh)
        ndl = np.where(nd > 0, -ndl, ndl)  # normal facing the camera
        shade = self.p.ambient + self.p.key * np.maximum(ndl, 0) + self.p.fill * np.maximum(-ndl, 0)
        albedo = rec[:, _COL]
        tex = rec[:, _TEX]
        sel = _where(tex >= 0)
        if sel is None or len(sel):
            rt, ps = _sub(rec, sel), _sub(p, sel)
            uu = np.einsum("ij,ij->i", rt[:, 0:3], ps) + rt[:, 3]
            vv = np.einsum("ij,ij->i", rt[:, 4:7], ps) + rt[:, 7]
            dn2s = _sub(dn2h, sel)
            footprint = _sub(th, sel) * dn2s / np.maximum(np.abs(_sub(nd, sel)), self.p.min_cos * np.sqrt(dn2s))
            level = np.log2(np.maximum(footprint, 1e-12))
            level += rt[:, _LOGTEX] + (self.p.mip_bias + 0.5)
            texel = self.bank.sample(rt[:, _TEX].astype(np.int64), uu, vv, np.maximum(level, 0).astype(np.int64))
            if sel is None:
                albedo = albedo * texel
            else:
                albedo = albedo.copy()
                albedo[sel] *= texel
        albedo *= shade[:, None]
        if hit is None:
            return albedo
        out[hit] = albedo
        return out

    # ------------------------------------------------------------------ frame
    def render(self, T_wc: np.ndarray, mover_poses: np.ndarray | None, index: int, time: float) -> RenderResult:
        """Render camera-to-world pose ``T_wc`` (4, 4) with movers at ``mover_poses`` (M, 4, 4).

        ``index`` and ``time`` select the sensor noise and exposure of the frame.
        """
        H, W, ss = self.K.height, self.K.width, self.ss
        table = self.table
        if self.movers:
            mover_poses = np.asarray(mover_poses, np.float64)
            table = table.copy()
            for k, local in enumerate(self.mover_tables):
                a, b = self.offset[self.n_static + k], self.offset[self.n_static + k + 1]
                table[a:b] = move_table(local, mover_poses[k], self.light)
        t, g, tri, d = self._trace(T_wc, mover_poses, self.dirs, self.u, self.v)
        colour = self._shade(T_wc, table, t, tri, d, self.dir_norm2)
        if ss > 1:
            colour = colour.reshape(H, ss, W, ss, 3).mean(axis=(1, 3))
            t, g, _, _ = self._trace(T_wc, mover_poses, self.centre_dirs, self.centre_u, self.centre_v)
        image = self.sensor.apply(colour.reshape(H, W, 3), index, time)
        depth = np.where(g >= 0, t, 0.0).astype(np.float32).reshape(H, W)
        label = np.where(g < 0, LABEL_NONE, np.where(g >= self.n_static, g - self.n_static + 1, LABEL_STATIC))
        return RenderResult(image=image, depth=depth, label=label.astype(np.int16).reshape(H, W))
