"""OpenCV's DIS optical flow, with every call independent of the calls before it.

OpenCV's ``DISOpticalFlow`` object keeps the last initial flow it was given:
a later ``calc(a, b, None)`` on the same object does not start from zero
but from that stale field (with opencv-python-headless 5.0.0 a fresh object
and one that had been given another pair's initial flow return different
flows for the same pair;
``tests/test_corr.py::test_dis_calls_do_not_depend_on_earlier_calls``).
:class:`DISFlow` therefore sends calls with an initial flow and calls
without one to two separate objects, so a zero start is a zero start and
each result depends only on its own inputs.  One :class:`DISFlow` must not be
used by two threads at once (the OpenCV objects are not thread-safe).
"""
from __future__ import annotations

import cv2
import numpy as np

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
           "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class DISFlow:
    """Dense inverse-search flow between grey uint8 images of equal size.

    Args:
        preset: ``ultrafast`` | ``fast`` | ``medium`` (OpenCV's presets).
        finest_scale: optional override of the preset's finest pyramid level
            (0 = full resolution).
    Raises:
        ValueError: unknown preset.
    """

    def __init__(self, preset: str = "medium", finest_scale: int | None = None) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; expected one of {sorted(PRESETS)}")
        self._zero = cv2.DISOpticalFlow_create(PRESETS[preset])  # only ever called without an initial flow
        self._init = cv2.DISOpticalFlow_create(PRESETS[preset])  # only ever called with one
        if finest_scale is not None:
            self._zero.setFinestScale(int(finest_scale))
            self._init.setFinestScale(int(finest_scale))
        self.calls = 0  #: evaluations so far (for benchmarks)

    def calc(self, a: np.ndarray, b: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """Flow a -> b, (H, W, 2) float32 in pixels, from ``init`` (H, W, 2) or from zero.

        ``init`` is not modified (OpenCV writes its result into the initial
        flow, so a copy is passed).

        Raises:
            ValueError: ``init`` is not (H, W, 2) for (H, W) images."""
        self.calls += 1
        if init is None:
            return self._zero.calc(a, b, None)
        if tuple(np.shape(init)) != tuple(a.shape[:2]) + (2,):  # OpenCV would ignore it and reuse a stale one
            raise ValueError(f"initial flow of shape {tuple(np.shape(init))} for images of shape {a.shape[:2]}")
        return self._init.calc(a, b, np.array(init, dtype=np.float32, order="C", copy=True))
