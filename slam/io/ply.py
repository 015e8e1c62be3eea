"""Coloured point clouds as PLY files.

:func:`write_ply` writes binary little-endian PLY with one ``vertex`` element
of properties ``x y z`` (float32) and ``red green blue`` (uchar), which
Open3D, MeshLab, CloudCompare and Blender read.  :func:`read_ply` reads such
files back (and ASCII / other property orders with float, double or uchar
vertex properties), for tests and tools.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.data.sequence import InputError

#: PLY scalar type names -> numpy dtype codes (little-endian where it matters).
_PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray | None = None) -> Path:
    """Write a point cloud as binary little-endian PLY.

    Args:
        path: output file (parent folders are created).
        xyz: (P, 3) point coordinates, stored as float32.
        rgb: optional (P, 3) uint8 colours; grey (128) when None.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    if rgb is None:
        rgb = np.full(xyz.shape, 128, dtype=np.uint8)
    rgb = np.asarray(rgb).reshape(-1, 3)
    if rgb.shape[0] != xyz.shape[0]:
        raise ValueError(f"{xyz.shape[0]} points but {rgb.shape[0]} colours")
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    vertex = np.empty(xyz.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                           ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by slam\n"
              f"element vertex {xyz.shape[0]}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              "end_header\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertex.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the vertices of a PLY file.

    Supports ``ascii`` and ``binary_little_endian`` files whose ``vertex``
    element is the first element and has scalar (non-list) properties.

    Returns:
        ``(xyz (P, 3) float32, rgb (P, 3) uint8 or None when the file has no colours)``.
    Raises:
        InputError: missing file or an unsupported / malformed PLY.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"PLY file not found: {path}")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise InputError(f"{path}: not a PLY file")
        fmt, count, props, element, n_elements = None, None, [], None, 0
        while True:
            line = f.readline()
            if not line:
                raise InputError(f"{path}: PLY header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                element, n_elements = words[1], n_elements + 1
                if element == "vertex":
                    if n_elements != 1:
                        raise InputError(f"{path}: the vertex element must come first")
                    count = int(words[2])
            elif words[0] == "property" and element == "vertex":
                if words[1] == "list":
                    raise InputError(f"{path}: list properties in the vertex element are not supported")
                if words[1] not in _PLY_TYPES:
                    raise InputError(f"{path}: unknown PLY type {words[1]!r}")
                props.append((words[2], _PLY_TYPES[words[1]]))
        if count is None:
            raise InputError(f"{path}: no vertex element")
        dtype = np.dtype(props)
        if fmt == "binary_little_endian":
            data = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
        elif fmt == "ascii":
            rows = [f.readline().split() for _ in range(count)]
            arr = np.asarray(rows, dtype=np.float64).reshape(count, len(props))
            data = np.empty(count, dtype=dtype)
            for i, (name, _) in enumerate(props):
                data[name] = arr[:, i]
        else:
            raise InputError(f"{path}: unsupported PLY format {fmt!r}")
    names = dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise InputError(f"{path}: vertex element has no x y z")
    xyz = np.stack([data["x"], data["y"], data["z"]], 1).astype(np.float32)
    rgb = None
    if {"red", "green", "blue"} <= set(names):
        rgb = np.stack([data["red"], data["green"], data["blue"]], 1).astype(np.uint8)
    return xyz, rgb
