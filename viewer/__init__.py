"""Live 3D viewer of the reconstruction (issue #7), and replay of finished runs.

* :mod:`viewer.scene` - what is drawn, in plain NumPy (points from keyframe depth,
  frusta, trajectory, viewpoints); no OpenGL needed.
* :mod:`viewer.render` - the Open3D renderer (window or offscreen EGL), frame sinks
  (mp4 / PNG), the render-process loop.
* :mod:`viewer.live` - :class:`~viewer.live.LiveViewer`: polls the running system's
  keyframe store at a bounded rate and feeds the render process; never blocks tracking.
* :mod:`viewer.replay` - loading a run's output folder for ``slam view``.
* :mod:`viewer.settings` - :class:`~viewer.settings.ViewerSettings` from ``configs/viewer``.

``slam run INPUT viewer=true`` opens it; ``viewer.record=PATH`` renders to PATH.
Importing this package loads neither torch nor Open3D.
"""
from __future__ import annotations

__all__ = ["LiveViewer", "ViewerSettings", "make_viewer"]


def __getattr__(name: str):
    if name in ("make_viewer", "LiveViewer"):
        from viewer import live

        return getattr(live, name)
    if name == "ViewerSettings":
        from viewer.settings import ViewerSettings

        return ViewerSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
