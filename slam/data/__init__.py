"""Readers for every input a user has, and the synthetic worlds."""
from slam.data.detect import detect_kind, open_sequence
from slam.data.sequence import Frame, InputError, Sequence

__all__ = ["Frame", "InputError", "Sequence", "detect_kind", "open_sequence"]
