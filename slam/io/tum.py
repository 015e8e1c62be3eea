"""TUM trajectory files: one line per pose, ``timestamp tx ty tz qx qy qz qw``.

The poses are camera-to-world (the pose of the camera in the world), as TUM
RGB-D ground truth and evo expect.  Lines starting with ``#`` are comments.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.data.sequence import InputError
from slam.geometry.pose import matrix_to_tq, tq_to_matrix


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory.

    Returns:
        ``(timestamps (N,), poses (N, 4, 4))`` float64, camera-to-world.
    Raises:
        InputError: missing file or a line without 8 numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"trajectory file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 8:
            raise InputError(f"{path}:{n}: expected 8 numbers (timestamp tx ty tz qx qy qz qw), got {len(parts)}")
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise InputError(f"{path}:{n}: not a number in {line!r}") from None
    if not rows:
        return np.zeros(0), np.zeros((0, 4, 4))
    a = np.asarray(rows, dtype=np.float64)
    return a[:, 0], tq_to_matrix(a[:, 1:8])


def write_tum(path: str | Path, timestamps: np.ndarray, poses: np.ndarray) -> None:
    """Write (N,) timestamps and (N, 4, 4) camera-to-world poses as a TUM file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tq = matrix_to_tq(np.asarray(poses))
    with open(path, "w") as f:
        f.write("# timestamp tx ty tz qx qy qz qw  (camera-to-world)\n")
        for t, row in zip(np.asarray(timestamps, dtype=np.float64), tq):
            f.write(f"{t:.6f} " + " ".join(f"{v:.9f}" for v in row) + "\n")
