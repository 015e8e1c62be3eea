"""Static worlds: rooms, streets, tables, clutter.

World frame: metres, **z up**, the floor (ground) at ``z = 0``.

Every surface carries its own *local frame* (rotation + origin) used for
texture lookup: the texture coordinate of a hit point ``q`` (local) is its
planar projection along the dominant axis of the local normal, divided by the
surface's tile size in metres.  Textures thus have a metric scale and follow
the surface, independent of triangle UVs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from slam.data.synthetic import SCENE_KINDS, shapes
from slam.data.synthetic.raycast import Raycaster
from slam.data.synthetic.textures import TextureBank

# Surface.shape codes: how the renderer computes the shading normal.
SHAPE_FLAT = 0       # triangle normal
SHAPE_SPHERE = 1     # exact sphere normal q / |q| (local frame centred on the sphere)
SHAPE_CYLINDER = 2   # exact side normal (qx, qy, 0) / r; caps keep the triangle normal

PROCEDURAL = ("noise", "stripes", "checker", "bricks", "patches", "material")  # texture kinds of objects
WALLS = ("noise", "bricks", "patches", "material", "stripes")  # large surfaces: no repetitive checkers


@dataclass
class Surface:
    """One textured mesh.

    Attributes:
        vertices: (V, 3) float32 world coordinates (local coordinates for movers).
        triangles: (T, 3) uint32 vertex indices.
        texture: texture index in the world's :class:`TextureBank`, or -1 for a flat colour.
        colour: (3,) float32 RGB multiplied with the texture, or the flat colour.
        tile: metres covered by one texture tile.
        rotation: (3, 3) local-from-world rotation ``R_lw`` of the texture frame.
        origin: (3,) texture-frame origin in world coordinates.
        shape: one of the SHAPE_* codes.
        name: for debugging.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    texture: int
    colour: np.ndarray
    tile: float
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    shape: int = SHAPE_FLAT
    name: str = ""


@dataclass(frozen=True)
class SceneParams:
    """Tunables of the scene generators (sizes in metres)."""

    low_texture: float = 0.0            # probability that a surface is a flat colour (no texture)
    flat_colour: tuple[float, float] = (0.2, 0.85)     # RGB range of flat colours
    tint: tuple[float, float] = (0.85, 1.1)            # brightness factor applied to textures
    room_size: tuple[tuple[float, float], ...] = ((5.0, 8.0), (4.0, 6.0), (2.6, 3.2))  # x, y, z ranges of `room`
    room_furniture: tuple[int, int] = (5, 9)           # number of furniture boxes in `room`
    furniture_size: tuple[tuple[float, float], ...] = ((0.4, 1.6), (0.4, 1.0), (0.4, 2.0))  # box edge ranges
    furniture_at_wall: float = 0.75                    # share of furniture placed against a wall
    posters: tuple[int, int] = (2, 5)                  # photographs hung on the walls
    poster_size: tuple[float, float] = (0.6, 1.3)      # poster edge range
    wall_tile: tuple[float, float] = (0.8, 2.0)        # texture tile size on walls, floors, ceilings
    object_tile: tuple[float, float] = (0.3, 1.0)      # texture tile size on furniture
    street_length: float = 90.0                        # length of the street canyon (x)
    street_width: tuple[float, float] = (9.0, 15.0)    # distance between the two rows of buildings
    building_width: tuple[float, float] = (6.0, 16.0)  # building extent along the street
    building_depth: tuple[float, float] = (8.0, 14.0)  # building extent across the street
    building_height: tuple[float, float] = (6.0, 24.0)
    building_gap: tuple[float, float] = (0.5, 5.0)     # alley width between buildings
    facade_tile: tuple[float, float] = (2.0, 5.0)      # texture tile size on facades and the ground
    street_props: tuple[int, int] = (6, 12)            # parked boxes ("cars") and poles
    car_share: float = 0.6                             # share of the props that are cars (else poles)
    car_size: tuple[tuple[float, float], ...] = ((3.5, 4.8), (1.6, 2.0), (1.3, 1.8))
    car_tile: tuple[float, float] = (1.0, 2.5)
    pole_height: tuple[float, float] = (3.0, 5.0)
    pole_radius: tuple[float, float] = (0.08, 0.2)
    sidewalk: float = 2.5                              # sidewalk width on each side of the road
    billboard_chance: float = 0.5                      # probability of a photograph on a facade
    billboard_size: tuple[float, float] = (2.0, 4.0)
    table_room_size: tuple[tuple[float, float], ...] = ((5.5, 7.5), (5.0, 6.5), (2.6, 3.0))
    table_top: tuple[tuple[float, float], ...] = ((1.2, 2.0), (0.8, 1.2))  # table top x, y ranges
    table_height: float = 0.75
    table_thickness: float = 0.04                      # of the table top
    table_leg: float = 0.05                            # leg width
    table_yaw: float = 0.3                             # rad, largest table rotation
    table_furniture: int = 3                           # boxes along the walls of `table`
    table_objects: tuple[int, int] = (6, 11)           # objects standing on the table
    table_object_size: tuple[float, float] = (0.08, 0.32)
    table_object_tile: tuple[float, float] = (0.12, 0.4)
    clutter_room_size: tuple[tuple[float, float], ...] = ((8.0, 11.0), (8.0, 11.0), (3.5, 4.5))
    clutter_objects: tuple[int, int] = (22, 36)        # random primitives in `clutter`
    clutter_size: tuple[float, float] = (0.25, 1.1)
    clutter_on_floor: float = 0.4                      # share of clutter objects standing on the floor
    clutter_free_margin: float = 0.6                   # camera keeps this far from the floor and ceiling
    camera_height: tuple[float, float] = (1.1, 1.8)    # eye height range indoors
    street_camera_height: tuple[float, float] = (1.4, 2.2)


@dataclass
class StaticScene:
    """A generated static world.

    Attributes:
        kind: one of SCENE_KINDS.
        surfaces: the meshes; their index is the geometry id in :attr:`raycaster`.
        free_lo, free_hi: (3,) axis-aligned box the camera centre must stay in.
        targets: (K, 3) points worth looking at (textured objects, posters, facades).
        lanes: straight paths ``(start, end)`` for the ``forward`` motion.
        orbit_centres: ``(centre (3,), min_radius)`` candidates for the ``orbit`` motion.
        has_sky: rays may miss all geometry (outdoor).
        scale: typical distance scale (1 indoors); multiplies speeds and radii.
        raycaster: the BVH of ``surfaces``.
    """

    kind: str
    surfaces: list[Surface]
    free_lo: np.ndarray
    free_hi: np.ndarray
    targets: np.ndarray
    lanes: list[tuple[np.ndarray, np.ndarray]]
    orbit_centres: list[tuple[np.ndarray, float]]
    has_sky: bool
    scale: float
    raycaster: Raycaster = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.raycaster is None:
            self.raycaster = Raycaster()
            for s in self.surfaces:
                self.raycaster.add(s.vertices, s.triangles)


def _u(rng: np.random.Generator, rng_pair: tuple[float, float]) -> float:
    return float(rng.uniform(*rng_pair))


class _Builder:
    """Collects surfaces with materials drawn from the texture bank."""

    def __init__(self, rng: np.random.Generator, bank: TextureBank, params: SceneParams) -> None:
        self.rng, self.bank, self.p = rng, bank, params
        self.surfaces: list[Surface] = []
        self.used = np.zeros(len(bank), np.int64)  # times each texture was used, to spread the choice

    def pick(self, kinds: tuple[str, ...]) -> int:
        """A least-used texture among ``kinds`` (random among ties)."""
        ids = np.asarray(self.bank.ids(*kinds) or range(len(self.bank)))
        least = ids[self.used[ids] == self.used[ids].min()]
        k = int(self.rng.choice(least))
        self.used[k] += 1
        return k

    def material(self, kinds: tuple[str, ...], tile: tuple[float, float]) -> tuple[int, np.ndarray, float]:
        """(texture, colour, tile) - a flat colour with probability ``low_texture``."""
        rng = self.rng
        if rng.random() < self.p.low_texture:
            return -1, rng.uniform(*self.p.flat_colour, 3).astype(np.float32), 1.0
        tint = np.full(3, rng.uniform(*self.p.tint), np.float32)
        return self.pick(kinds), tint, _u(rng, tile)

    def add(self, mesh: shapes.Mesh, R_wl: np.ndarray, t: np.ndarray, kinds: tuple[str, ...],
            tile: tuple[float, float], shape: int = SHAPE_FLAT, name: str = "") -> Surface:
        """Add ``mesh`` (local coordinates) placed at rotation ``R_wl`` and translation ``t``."""
        v, tri = mesh
        R = np.asarray(R_wl, np.float64)
        t = np.asarray(t, np.float64)
        tex, colour, tile_m = self.material(kinds, tile)
        s = Surface(vertices=(v.astype(np.float64) @ R.T + t).astype(np.float32), triangles=tri, texture=tex,
                    colour=colour, tile=tile_m, rotation=R.T.copy(), origin=t.copy(), shape=shape, name=name)
        self.surfaces.append(s)
        return s

    def quad(self, corner, edge_u, edge_v, kinds, tile, name="") -> Surface:
        """Planar quad; its texture frame has x along ``edge_u``, y along ``edge_v``, origin at ``corner``."""
        eu, ev = np.asarray(edge_u, float), np.asarray(edge_v, float)
        ex, ey = eu / np.linalg.norm(eu), ev / np.linalg.norm(ev)
        R_wl = np.stack([ex, ey, np.cross(ex, ey)], 1)
        mesh = shapes.quad(np.zeros(3), [np.linalg.norm(eu), 0, 0], [0, np.linalg.norm(ev), 0])
        return self.add(mesh, R_wl, corner, kinds, tile, name=name)

    def poster(self, centre, right, down, size: float, name="poster") -> Surface:
        """A photograph of ``size`` metres, upright, one tile exactly."""
        right, down = np.asarray(right, float), np.asarray(down, float)
        corner = np.asarray(centre, float) - 0.5 * size * (right + down)
        s = self.quad(corner, right * size, down * size, ("photo",), (size, size), name=name)
        if s.texture >= 0:
            s.tile = size
        return s

    def box(self, size, centre, yaw: float = 0.0, kinds=PROCEDURAL, tile=None, name="box", R=None) -> Surface:
        R_wl = Rotation.from_euler("z", yaw).as_matrix() if R is None else R
        return self.add(shapes.box(size), R_wl, centre, kinds, tile or self.p.object_tile, name=name)

    def sphere(self, radius, centre, kinds=PROCEDURAL, tile=None, name="sphere") -> Surface:
        R_wl = Rotation.random(random_state=self.rng).as_matrix()
        return self.add(shapes.sphere(radius), R_wl, centre, kinds, tile or self.p.object_tile, SHAPE_SPHERE, name)

    def cylinder(self, radius, height, centre, R=None, kinds=PROCEDURAL, tile=None, name="cylinder") -> Surface:
        R_wl = np.eye(3) if R is None else R
        return self.add(shapes.cylinder(radius, height), R_wl, centre, kinds, tile or self.p.object_tile,
                        SHAPE_CYLINDER, name)

    def room_shell(self, L: float, W: float, H: float) -> None:
        """Floor, ceiling and four walls of the box [0, L] x [0, W] x [0, H]."""
        wt = self.p.wall_tile
        self.quad([0, 0, 0], [L, 0, 0], [0, W, 0], PROCEDURAL, wt, "floor")
        self.quad([0, 0, H], [L, 0, 0], [0, W, 0], WALLS, wt, "ceiling")
        self.quad([0, 0, 0], [L, 0, 0], [0, 0, H], WALLS, wt, "wall_y0")
        self.quad([0, W, 0], [L, 0, 0], [0, 0, H], WALLS, wt, "wall_y1")
        self.quad([0, 0, 0], [0, W, 0], [0, 0, H], WALLS, wt, "wall_x0")
        self.quad([L, 0, 0], [0, W, 0], [0, 0, H], WALLS, wt, "wall_x1")

    def wall_posters(self, L: float, W: float, H: float, n: int) -> list[np.ndarray]:
        """Hang up to ``n`` non-overlapping photographs on random walls; returns their centres."""
        rng, centres = self.rng, []
        hung: list[tuple[int, float, float, float]] = []  # (wall, position along it, height, size)
        for _ in range(n * 10):
            if len(hung) >= n:
                break
            eps = 0.01 + 0.004 * len(hung)  # metres in front of the wall
            size = _u(rng, self.p.poster_size)
            z = rng.uniform(1.0 + size / 2, max(1.0 + size / 2, H - 0.2 - size / 2))
            wall = int(rng.integers(4))
            extent = L if wall < 2 else W
            if extent < size + 0.4:
                continue
            a = rng.uniform(size / 2 + 0.2, extent - size / 2 - 0.2)
            if any(w == wall and abs(a - a2) < (size + s2) / 2 + 0.05 and abs(z - z2) < (size + s2) / 2 + 0.05
                   for w, a2, z2, s2 in hung):
                continue
            hung.append((wall, a, z, size))
            if wall < 2:
                c = np.array([a, eps if wall == 0 else W - eps, z])
                right = [-1, 0, 0] if wall == 0 else [1, 0, 0]  # as seen from inside the room
            else:
                c = np.array([eps if wall == 2 else L - eps, a, z])
                right = [0, 1, 0] if wall == 2 else [0, -1, 0]
            self.poster(c, right, [0, 0, -1], size)
            centres.append(c)
        return centres

    def furniture(self, L: float, W: float, n: int,
                  keep_out: list[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, float]]:
        """Place up to ``n`` boxes on the floor, mostly along the walls, without overlaps.

        Returns ``(centre, footprint radius)`` of each box."""
        rng, p = self.rng, self.p
        placed = list(keep_out)
        centres = []
        for _ in range(n * 20):
            if len(centres) >= n:
                break
            sx, sy, sz = (_u(rng, r) for r in p.furniture_size)
            rad = 0.5 * np.hypot(sx, sy)
            if rng.random() < p.furniture_at_wall:
                side = int(rng.integers(4))
                if side < 2:
                    xy = [rng.uniform(rad, L - rad), (sy / 2 + 0.02) if side == 0 else W - sy / 2 - 0.02]
                    yaw = 0.0
                else:
                    xy = [(sy / 2 + 0.02) if side == 2 else L - sy / 2 - 0.02, rng.uniform(rad, W - rad)]
                    yaw = np.pi / 2
                yaw += rng.normal(0, 0.05)
            else:
                xy = [rng.uniform(rad + 1.0, L - rad - 1.0), rng.uniform(rad + 1.0, W - rad - 1.0)]
                yaw = rng.uniform(0, np.pi)
            xy = np.asarray(xy, float)
            if any(np.linalg.norm(xy - c[:2]) < rad + r for c, r in placed):
                continue
            c = np.array([xy[0], xy[1], sz / 2])
            self.box((sx, sy, sz), c, yaw, name="furniture")
            placed.append((c, rad))
            centres.append((c, rad))
        return centres


def _room_lanes(L: float, W: float, z: tuple[float, float],
                rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Straight walks across the middle of an L x W room at heights in ``z``."""
    lanes = []
    for _ in range(6):
        y = rng.uniform(0.3 * W, 0.7 * W)
        x = rng.uniform(0.3 * L, 0.7 * L)
        h = rng.uniform(*z)
        lanes += [(np.array([0.0, y, h]), np.array([L, y, h])), (np.array([L, y, h]), np.array([0.0, y, h])),
                  (np.array([x, 0.0, h]), np.array([x, W, h])), (np.array([x, W, h]), np.array([x, 0.0, h]))]
    return lanes


def make_room(rng: np.random.Generator, bank: TextureBank, p: SceneParams) -> StaticScene:
    """An indoor room with furniture boxes and posters."""
    b = _Builder(rng, bank, p)
    L, W, H = (_u(rng, r) for r in p.room_size)
    b.room_shell(L, W, H)
    posters = b.wall_posters(L, W, H, int(rng.integers(*p.posters, endpoint=True)))
    furn = b.furniture(L, W, int(rng.integers(*p.room_furniture, endpoint=True)),
                       keep_out=[(np.array([L / 2, W / 2, 0]), 0.8)])
    targets = np.array(posters + [c for c, _ in furn] + [[L / 2, 0, 1.4], [L / 2, W, 1.4], [0, W / 2, 1.4],
                                                         [L, W / 2, 1.4]])
    orbit = [(c, r) for c, r in furn] + [(np.array([L / 2, W / 2, 0.8]), 0.0)]
    return StaticScene("room", b.surfaces, np.array([0, 0, p.camera_height[0]]), np.array([L, W, p.camera_height[1]]),
                       targets, _room_lanes(L, W, p.camera_height, rng), orbit, False, 1.0)


def make_street(rng: np.random.Generator, bank: TextureBank, p: SceneParams) -> StaticScene:
    """An outdoor street canyon: ground, two rows of buildings, parked boxes, poles and sky."""
    b = _Builder(rng, bank, p)
    Ls = p.street_length
    Ws = _u(rng, p.street_width)
    pad = 40.0  # ground and buildings extend beyond the street's ends
    ft = p.facade_tile
    b.quad([-pad, -3 * Ws, 0], [Ls + 2 * pad, 0, 0], [0, 6 * Ws, 0], ("noise", "material", "patches"), ft, "ground")
    b.quad([-pad, -Ws / 2 + p.sidewalk, 0.003], [Ls + 2 * pad, 0, 0], [0, Ws - 2 * p.sidewalk, 0],
           ("noise", "material", "stripes"), ft, "road")  # 3 mm above the ground: no z-fighting
    targets = []
    for side in (-1, 1):
        x = -pad
        while x < Ls + pad:
            bw, bd, bh = _u(rng, p.building_width), _u(rng, p.building_depth), _u(rng, p.building_height)
            y = side * (Ws / 2 + bd / 2)
            b.box((bw, bd, bh), [x + bw / 2, y, bh / 2], 0.0, ("bricks", "material", "patches", "stripes", "noise",
                                                               "checker"), ft, name="building")
            if rng.random() < p.billboard_chance and bw > p.billboard_size[0] + 1.0:
                size = rng.uniform(p.billboard_size[0], min(p.billboard_size[1], bw - 0.5))
                c = np.array([x + bw / 2, side * (Ws / 2 - 0.02), rng.uniform(size / 2 + 1.0, 6.0)])
                b.poster(c, [side, 0, 0], [0, 0, -1], size, "billboard")  # upright seen from the street
                targets.append(c)
            for _ in range(2):
                targets.append(np.array([x + bw * rng.uniform(0.2, 0.8), side * Ws / 2, rng.uniform(1.5, 6.0)]))
            x += bw + _u(rng, p.building_gap)
    orbit = []
    for _ in range(int(rng.integers(*p.street_props, endpoint=True))):
        side = rng.choice([-1, 1])
        x = rng.uniform(0, Ls)
        if rng.random() < p.car_share:  # parked along the sidewalk
            size = tuple(_u(rng, r) for r in p.car_size)
            c = np.array([x, side * (Ws / 2 - p.sidewalk - size[1] / 2 - 0.3), size[2] / 2])
            b.box(size, c, rng.normal(0, 0.05), ("noise", "patches", "stripes", "checker"), p.car_tile, name="car")
            orbit.append((c, 0.5 * float(np.hypot(size[0], size[1]))))
        else:  # pole
            h = _u(rng, p.pole_height)
            c = np.array([x, side * (Ws / 2 - p.sidewalk / 2), h / 2])
            b.cylinder(_u(rng, p.pole_radius), h, c, tile=(0.5, 1.0), name="pole")
    for x in np.linspace(0, Ls, 12):  # look down the canyon
        targets.append(np.array([x, rng.uniform(-Ws / 4, Ws / 4), rng.uniform(2.0, 5.0)]))
    lanes = []
    for _ in range(6):
        y = rng.uniform(-Ws / 4, Ws / 4)
        h = rng.uniform(*p.street_camera_height)
        lanes += [(np.array([0.0, y, h]), np.array([Ls, y, h])), (np.array([Ls, y, h]), np.array([0.0, y, h]))]
    return StaticScene("street", b.surfaces, np.array([0.0, -Ws / 2 + 1.0, p.street_camera_height[0]]),
                       np.array([Ls, Ws / 2 - 1.0, p.street_camera_height[1]]), np.array(targets), lanes, orbit,
                       True, 3.0)


def make_table(rng: np.random.Generator, bank: TextureBank, p: SceneParams) -> StaticScene:
    """Objects standing on a table in the middle of a room."""
    b = _Builder(rng, bank, p)
    L, W, H = (_u(rng, r) for r in p.table_room_size)
    b.room_shell(L, W, H)
    b.wall_posters(L, W, H, int(rng.integers(*p.posters, endpoint=True)))
    tx, ty = (_u(rng, r) for r in p.table_top)
    yaw = rng.uniform(-p.table_yaw, p.table_yaw)
    R = Rotation.from_euler("z", yaw).as_matrix()
    c = np.array([L / 2 + rng.uniform(-0.3, 0.3), W / 2 + rng.uniform(-0.3, 0.3), p.table_height])
    top, lw = p.table_thickness, p.table_leg
    b.box((tx, ty, top), c - [0, 0, top / 2], yaw, PROCEDURAL, (0.5, 1.2), name="table_top")
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = c + R @ np.array([sx * (tx / 2 - lw), sy * (ty / 2 - lw), 0]) - [0, 0, (p.table_height + top) / 2]
            b.box((lw, lw, p.table_height - top), leg, yaw, name="table_leg")
    targets, placed = [], []
    n_objects = int(rng.integers(*p.table_objects, endpoint=True))
    for _ in range(n_objects * 20):
        if len(targets) >= n_objects:
            break
        s = _u(rng, p.table_object_size)
        xy = np.array([rng.uniform(-tx / 2 + s, tx / 2 - s), rng.uniform(-ty / 2 + s, ty / 2 - s)])
        if any(np.linalg.norm(xy - q) < (s + r) * 0.75 for q, r in placed):
            continue
        placed.append((xy, s))
        kind = rng.choice(["box", "box", "sphere", "cylinder"])
        kinds = ("photo", "noise", "patches", "stripes", "checker", "material")
        tile = p.table_object_tile
        base = c + R @ np.array([xy[0], xy[1], 0.0])
        if kind == "box":
            size = (s, rng.uniform(0.4, 1.0) * s, rng.uniform(0.5, 2.0) * s)
            o = base + [0, 0, size[2] / 2]
            b.box(size, o, yaw + rng.uniform(-0.6, 0.6), kinds, tile, name="object")
        elif kind == "sphere":
            o = base + [0, 0, s / 2]
            b.sphere(s / 2, o, kinds, tile, name="object")
        else:
            h = rng.uniform(0.6, 2.0) * s
            o = base + [0, 0, h / 2]
            b.cylinder(s / 2, h, o, kinds=kinds, tile=tile, name="object")
        targets.append(o)
    b.furniture(L, W, p.table_furniture, keep_out=[(c, 0.5 * np.hypot(tx, ty) + 1.0)])
    targets_arr = np.array(targets + [c] * 3)  # look at the table
    lanes = []
    for _ in range(12):  # walk towards the table from near a wall
        ang = rng.uniform(0, 2 * np.pi)
        h = rng.uniform(1.2, 1.6)
        d = np.array([np.cos(ang), np.sin(ang), 0.0])
        with np.errstate(divide="ignore"):
            to_wall = np.min(np.where(d[:2] > 0, (np.array([L, W]) - c[:2]) / d[:2],
                                      np.where(d[:2] < 0, -c[:2] / d[:2], np.inf)))
        start = c + d * (to_wall - 0.4)
        end = c + d * (0.5 * np.hypot(tx, ty) + 0.4)
        start[2] = end[2] = h
        if np.dot(start - end, d) > 0.5:
            lanes.append((start, end))
    return StaticScene("table", b.surfaces, np.array([0, 0, 1.0]), np.array([L, W, 1.9]), targets_arr, lanes,
                       [(c, 0.5 * np.hypot(tx, ty))], False, 1.0)


def make_clutter(rng: np.random.Generator, bank: TextureBank, p: SceneParams) -> StaticScene:
    """Random boxes, spheres and cylinders (some floating) inside a large room."""
    b = _Builder(rng, bank, p)
    L, W, H = (_u(rng, r) for r in p.clutter_room_size)
    b.room_shell(L, W, H)
    b.wall_posters(L, W, H, int(rng.integers(*p.posters, endpoint=True)))
    centres = []
    for _ in range(int(rng.integers(*p.clutter_objects, endpoint=True))):
        s = _u(rng, p.clutter_size)
        c = np.array([rng.uniform(s, L - s), rng.uniform(s, W - s), rng.uniform(s / 2, H - s)])
        if rng.random() < p.clutter_on_floor:
            c[2] = s / 2
        kind = rng.choice(["box", "sphere", "cylinder"])
        R = Rotation.random(random_state=rng).as_matrix()
        if kind == "box":
            b.box(rng.uniform(0.5, 1.0, 3) * s, c, R=R, name="clutter")
        elif kind == "sphere":
            b.sphere(s / 2, c, name="clutter")
        else:
            b.cylinder(s / 3, s, c, R=R, name="clutter")
        centres.append(c)
    orbit = [(c, 0.6 * p.clutter_size[1]) for c in centres]
    m = p.clutter_free_margin
    return StaticScene("clutter", b.surfaces, np.array([0, 0, m]), np.array([L, W, H - m]), np.array(centres),
                       _room_lanes(L, W, (1.0, H - 1.0), rng), orbit, False, 1.0)


BUILDERS = {"room": make_room, "street": make_street, "table": make_table, "clutter": make_clutter}


def make_scene(kind: str, rng: np.random.Generator, bank: TextureBank,
               params: SceneParams = SceneParams()) -> StaticScene:
    """Generate a static world of ``kind`` (one of :data:`SCENE_KINDS`), deterministic in ``rng``."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown scene kind {kind!r}; choose one of {', '.join(SCENE_KINDS)}")
    return BUILDERS[kind](rng, bank, params)
