"""Thin wrapper around Open3D's ``RaycastingScene`` (Embree BVH, multi-threaded).

Rays are given as origins and directions; the hit distance ``t`` is in units
of the direction's length, so directions with camera-frame ``z = 1`` give the
depth ``z`` directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

INVALID_ID = o3d.t.geometry.RaycastingScene.INVALID_ID  # geometry id of rays that hit nothing


@dataclass
class Hits:
    """Result of :meth:`Raycaster.cast` for M rays.

    Attributes:
        t: (M,) float32 hit distance in units of the ray direction; inf on a miss.
        geometry: (M,) int64 index of the mesh hit (order of :meth:`Raycaster.add`); -1 on a miss.
        primitive: (M,) int64 triangle index within that mesh (undefined on a miss).
    """

    t: np.ndarray
    geometry: np.ndarray
    primitive: np.ndarray


class Raycaster:
    """A static set of triangle meshes that rays can be cast against."""

    def __init__(self, nthreads: int = 0) -> None:
        self._scene = o3d.t.geometry.RaycastingScene()
        self._count = 0
        self.nthreads = nthreads  # 0: Open3D picks (all cores)

    def add(self, vertices: np.ndarray, triangles: np.ndarray) -> int:
        """Add a mesh ((V, 3) float vertices, (T, 3) int triangles); returns its index (0, 1, 2, ...)."""
        gid = self._scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(triangles, dtype=np.uint32)))
        if int(gid) != self._count:  # Open3D numbers geometries consecutively from 0
            raise RuntimeError(f"unexpected geometry id {gid} (expected {self._count})")
        self._count += 1
        return self._count - 1

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> Hits:
        """Cast M rays: ``origins`` (M, 3) or (3,), ``directions`` (M, 3)."""
        d = np.asarray(directions, dtype=np.float32)
        o = np.broadcast_to(np.asarray(origins, dtype=np.float32), d.shape)
        rays = np.empty((d.shape[0], 6), np.float32)
        rays[:, :3] = o
        rays[:, 3:] = d
        r = self._scene.cast_rays(o3d.core.Tensor.from_numpy(rays), nthreads=self.nthreads)
        # (copies: the arrays must not share memory with Open3D's tensors, t is modified in place)
        gid = r["geometry_ids"].numpy().astype(np.int64)
        gid[gid == INVALID_ID] = -1
        return Hits(t=np.array(r["t_hit"].numpy()), geometry=gid,
                    primitive=r["primitive_ids"].numpy().astype(np.int64))

    def distance(self, points: np.ndarray) -> np.ndarray:
        """(M,) unsigned distance from (M, 3) points to the nearest triangle."""
        p = np.ascontiguousarray(np.asarray(points, dtype=np.float32).reshape(-1, 3))
        return np.array(self._scene.compute_distance(o3d.core.Tensor.from_numpy(p), nthreads=self.nthreads).numpy())
