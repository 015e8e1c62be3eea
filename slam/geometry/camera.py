"""Pinhole camera intrinsics and their consistent rescaling.

Pixel convention (used everywhere in this package)
--------------------------------------------------
A pixel with integer index ``(u, v)`` (column, row) has its *centre* at the
continuous image coordinate ``(u, v)``.  The image therefore spans
``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.  A 3D point ``(X, Y, Z)`` in the camera
frame (x right, y down, z forward; OpenCV convention) projects to::

    u = fx * X / Z + cx,     v = fy * Y / Z + cy

Resizing an image by factors ``(sx, sy)`` maps a continuous coordinate ``u`` to
``(u + 0.5) * sx - 0.5``, so ``fx' = sx * fx`` and ``cx' = sx * (cx + 0.5) - 0.5``.
Cropping by ``(x0, y0)`` shifts the principal point: ``cx' = cx - x0``.

Shared-focal parameterisation
-----------------------------
When intrinsics are unknown the optimiser estimates one focal variable ``f``
with ``fx = f`` and ``fy = a * f`` where the aspect ``a = fy / fx`` is held
fixed (1 for unknown cameras).  :meth:`Intrinsics.with_focal` applies it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels of an image of size ``width x height``.

    Distortion coefficients, when present, follow OpenCV's order
    ``(k1, k2, p1, p2[, k3])``; readers undistort images so that the
    intrinsics handed to the system are always distortion-free.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    dist: tuple[float, ...] = ()

    # ------------------------------------------------------------------ basics
    @property
    def aspect(self) -> float:
        """Ratio ``fy / fx``, held fixed when the focal length is optimised."""
        return self.fy / self.fx

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.width, self.height

    def as_array(self) -> np.ndarray:
        """``[fx, fy, cx, cy]`` as float64."""
        return np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)

    def as_tensor(self, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[fx, fy, cx, cy]`` as a tensor of shape (4,)."""
        return torch.tensor([self.fx, self.fy, self.cx, self.cy], device=device, dtype=dtype)

    def matrix(self) -> np.ndarray:
        """3x3 calibration matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def with_focal(self, f: float) -> "Intrinsics":
        """Shared-focal parameterisation: ``fx = f``, ``fy = aspect * f``."""
        return Intrinsics(f, f * self.aspect, self.cx, self.cy, self.width, self.height, self.dist)

    def undistorted(self) -> "Intrinsics":
        """The same intrinsics without distortion coefficients."""
        return Intrinsics(self.fx, self.fy, self.cx, self.cy, self.width, self.height)

    # --------------------------------------------------------- resize and crop
    def scaled(self, new_width: int, new_height: int) -> "Intrinsics":
        """Intrinsics of the image resized to ``new_width x new_height``.

        Uses the pixel-centre convention of this module, so that
        ``resize_image`` followed by ``scaled`` keeps projections consistent.
        """
        sx = new_width / self.width
        sy = new_height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=int(new_width),
            height=int(new_height),
            dist=self.dist,
        )

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Intrinsics":
        """Intrinsics of the crop ``[x0, x0 + width) x [y0, y0 + height)``."""
        return Intrinsics(self.fx, self.fy, self.cx - x0, self.cy - y0, int(width), int(height), self.dist)

    @staticmethod
    def default_for(width: int, height: int, focal_factor: float = 1.0) -> "Intrinsics":
        """Initial guess for an unknown camera: ``f = focal_factor * max(W, H)``
        and the principal point at the image centre.

        ``max(W, H)`` corresponds to a horizontal field of view of about 53
        degrees for landscape images, the middle of what phones and webcams use.
        """
        f = focal_factor * float(max(width, height))
        return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))


def processing_size(width: int, height: int, target_pixels: int, multiple: int = 8) -> tuple[int, int]:
    """Processing resolution with about ``target_pixels`` pixels, the same aspect
    ratio, and both sides multiples of ``multiple`` (the network's stride).
    """
    scale = float(np.sqrt(target_pixels / float(width * height)))
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return w, h


def resize_frame(image: np.ndarray, intrinsics: Intrinsics, width: int, height: int,
                 depth: np.ndarray | None = None) -> tuple[np.ndarray, Intrinsics, np.ndarray | None]:
    """Resize an image (and optionally its depth map) and its intrinsics together.

    This is the single function every reader and the system use to move to
    the processing resolution.

    Args:
        image: (H, W, 3) uint8 RGB.
        intrinsics: intrinsics of ``image``.
        width, height: the target size in pixels.
        depth: optional (H, W) float depth (z, metres); resized with nearest
            neighbour so that no depth is invented across edges.

    Returns:
        ``(image', intrinsics', depth')`` at the new size.
    """
    import cv2

    h0, w0 = image.shape[:2]
    if (w0, h0) != (intrinsics.width, intrinsics.height):
        raise ValueError(f"image is {w0}x{h0} but intrinsics are for {intrinsics.width}x{intrinsics.height}")
    if (w0, h0) == (width, height):
        return image, intrinsics, depth
    interp = cv2.INTER_AREA if width < w0 else cv2.INTER_LINEAR
    out = cv2.resize(image, (int(width), int(height)), interpolation=interp)
    d = None
    if depth is not None:
        d = cv2.resize(depth.astype(np.float32), (int(width), int(height)), interpolation=cv2.INTER_NEAREST)
    return out, intrinsics.scaled(width, height), d
