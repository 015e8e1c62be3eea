"""Readers for every input a user has, and the synthetic worlds.

The re-exports are resolved lazily so that modules the readers themselves use
(e.g. :mod:`slam.io.tum`) can be imported first without a circular import.
"""
from __future__ import annotations

from typing import Any

from slam.data.sequence import Frame, InputError, Sequence

__all__ = ["Frame", "InputError", "Sequence", "detect_kind", "open_sequence"]


def __getattr__(name: str) -> Any:
    if name in ("detect_kind", "open_sequence"):
        from slam.data import detect

        return getattr(detect, name)
    raise AttributeError(name)
