"""Viewer settings: one picklable dataclass built from the ``viewer`` config group.

Every field is documented in ``configs/viewer/false.yaml``; this module only
converts and checks types so that the render process gets plain values.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from viewer.scene import SceneOptions


@dataclass
class ViewerSettings:
    """All viewer tunables (see ``configs/viewer/false.yaml``)."""

    enabled: bool = False
    record: str | None = None
    headless: str = "auto"
    max_fps: float = 2.0
    width: int = 640
    height: int = 480
    point_size: float = 3.0
    min_confidence: float = 0.5
    filter: bool = True
    max_depth_ratio: float = 4.0
    frustum_scale: float = 0.08
    current_scale: float = 2.0
    follow: bool = False
    follow_distance: float = 0.6
    follow_height: float = 0.3
    elevation_deg: float = 30.0
    fov_deg: float = 60.0
    show_trajectory: bool = True
    background: tuple[float, float, float] = (0.08, 0.08, 0.1)
    record_fps: float = 10.0
    keep_open: bool = True
    queue_size: int = 2
    close_timeout_s: float = 60.0
    start_timeout_s: float = 30.0
    render_threads: int = 1

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> ViewerSettings:
        """Build from a (DictConfig or dict) ``viewer`` node; raises ValueError on unknown keys."""
        raw = dict(node or {})
        s = cls()
        names = {f.name for f in fields(cls)}
        for key, value in raw.items():
            if key not in names:
                raise ValueError(f"unknown viewer setting {key!r}")
            default = getattr(s, key)
            if key == "background":
                value = tuple(float(v) for v in value)
            elif key == "record":
                value = None if value in (None, "") else str(value)
            elif key == "headless":
                value = str(value).lower()
            elif isinstance(default, bool):
                value = bool(value)
            elif isinstance(default, int):
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            setattr(s, key, value)
        if s.headless not in ("auto", "true", "false"):
            raise ValueError(f"viewer.headless must be auto, true or false; got {s.headless!r}")
        if s.max_fps <= 0 or s.width < 16 or s.height < 16 or s.queue_size < 1:
            raise ValueError("viewer.max_fps must be > 0, viewer.width/height >= 16, viewer.queue_size >= 1")
        return s

    @property
    def active(self) -> bool:
        """The viewer runs when enabled or when recording (``record`` implies ``enabled``)."""
        return self.enabled or self.record is not None

    def scene_options(self) -> SceneOptions:
        return SceneOptions(min_confidence=self.min_confidence, filter=self.filter,
                            max_depth_ratio=self.max_depth_ratio if self.max_depth_ratio > 0 else None,
                            frustum_scale=self.frustum_scale, current_scale=self.current_scale,
                            show_trajectory=self.show_trajectory)

    def offscreen(self) -> bool:
        """True when rendering without a window (``headless``, or ``auto`` and no display)."""
        if self.headless == "auto":
            return not has_display()
        return self.headless == "true"


def has_display() -> bool:
    """Whether a window can be opened: on Linux/BSD, ``$DISPLAY`` or ``$WAYLAND_DISPLAY`` is set;
    assumed True elsewhere (macOS, Windows)."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True
