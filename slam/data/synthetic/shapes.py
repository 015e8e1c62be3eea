"""Triangle meshes of the primitive shapes the synthetic worlds are built from.

Every function returns ``(vertices (V, 3) float32, triangles (T, 3) uint32)``
in the shape's *local* frame.  Winding order is not relied upon anywhere: the
renderer flips every normal towards the camera.
"""
from __future__ import annotations

import numpy as np

Mesh = tuple[np.ndarray, np.ndarray]


def _pack(v: np.ndarray, t: np.ndarray) -> Mesh:
    return np.ascontiguousarray(v, dtype=np.float32), np.ascontiguousarray(t, dtype=np.uint32)


def box(size: tuple[float, float, float] | np.ndarray) -> Mesh:
    """Axis-aligned box of edge lengths ``size = (sx, sy, sz)`` centred at the origin (12 triangles)."""
    h = 0.5 * np.asarray(size, dtype=np.float64)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64) * h
    # corner index = 4 * ix + 2 * iy + iz ; two triangles per face
    faces = [(0, 1, 3, 2), (4, 6, 7, 5),   # x = -h, x = +h
             (0, 4, 5, 1), (2, 3, 7, 6),   # y = -h, y = +h
             (0, 2, 6, 4), (1, 5, 7, 3)]   # z = -h, z = +h
    tris = []
    for a, b, c, d in faces:
        tris += [(a, b, c), (a, c, d)]
    return _pack(corners, np.array(tris))


def quad(corner: np.ndarray, edge_u: np.ndarray, edge_v: np.ndarray) -> Mesh:
    """Parallelogram ``corner + s * edge_u + t * edge_v`` for ``s, t`` in [0, 1] (2 triangles)."""
    c = np.asarray(corner, dtype=np.float64)
    u = np.asarray(edge_u, dtype=np.float64)
    v = np.asarray(edge_v, dtype=np.float64)
    verts = np.stack([c, c + u, c + u + v, c + v])
    return _pack(verts, np.array([(0, 1, 2), (0, 2, 3)]))


def sphere(radius: float, n_lat: int = 16, n_lon: int = 32) -> Mesh:
    """UV sphere of ``radius`` centred at the origin (``2 * n_lon * (n_lat - 1)`` triangles).

    The renderer replaces the faceted triangle normals of spheres by the exact
    normal ``q / |q|`` of the local hit point ``q``.
    """
    lat = np.linspace(0.0, np.pi, n_lat + 1)[1:-1]
    lon = np.linspace(0.0, 2.0 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.sin(la) * np.cos(lo), np.sin(la) * np.sin(lo), np.cos(la)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]]) * radius
    top, bottom = 0, len(verts) - 1
    tris = []
    for j in range(n_lon):
        j1 = (j + 1) % n_lon
        tris.append((top, 1 + j, 1 + j1))
        last = 1 + (n_lat - 2) * n_lon
        tris.append((bottom, last + j1, last + j))
        for i in range(n_lat - 2):
            a, b = 1 + i * n_lon + j, 1 + i * n_lon + j1
            c, d = a + n_lon, b + n_lon
            tris += [(a, c, d), (a, d, b)]
    return _pack(verts, np.array(tris))


def cylinder(radius: float, height: float, n: int = 32) -> Mesh:
    """Closed cylinder along the local z axis, centred at the origin (``4 * n`` triangles)."""
    ang = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    ring = np.stack([radius * np.cos(ang), radius * np.sin(ang)], -1)
    z = 0.5 * height
    verts = np.concatenate([
        np.concatenate([ring, np.full((n, 1), -z)], 1),
        np.concatenate([ring, np.full((n, 1), z)], 1),
        [[0.0, 0.0, -z], [0.0, 0.0, z]],
    ])
    cb, ct = 2 * n, 2 * n + 1
    tris = []
    for j in range(n):
        j1 = (j + 1) % n
        tris += [(j, j1, n + j1), (j, n + j1, n + j), (cb, j1, j), (ct, n + j, n + j1)]
    return _pack(verts, np.array(tris))
