"""Correspondence sources behind one interface (:mod:`slam.corr.base`):
``classical`` (OpenCV DIS flow + forward-backward check) and ``oracle``
(ground-truth flow of a synthetic world) and ``learned`` (the recurrent network of :mod:`slam.net`).
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from slam.corr.base import CorrespondenceSource, EdgeUpdate, FrameData
from slam.data.sequence import InputError, Sequence

NAMES = ("classical", "oracle", "learned")


def synthetic_world_for(seq: Sequence) -> Sequence:
    """The in-memory synthetic world behind ``seq``: itself, or rebuilt from the
    ``synth.json`` that `slam synth` writes next to its output (deterministic)."""
    if hasattr(seq, "flow"):
        return seq
    path = Path(seq.path)
    for cand in (path / "synth.json", path.parent / "synth.json"):
        if cand.is_file():
            from slam.data.synthetic import make_world

            spec = json.loads(cand.read_text())
            keys = ("seed", "scene", "motion", "frames", "width", "height", "focal", "dynamic", "fps", "noise",
                    "low_texture", "num_movers", "mover_size", "supersample")
            return make_world(**{k: spec[k] for k in keys if k in spec})
    raise InputError(f"{path}: correspondence=oracle needs a synthetic world (a `slam synth` output with synth.json)")


def make_source(cfg: DictConfig, seq: Sequence, image_size: tuple[int, int]) -> CorrespondenceSource:
    """Build the source named by ``cfg.name`` (a ``correspondence`` config node)."""
    name = cfg.name
    if name == "classical":
        from slam.corr.classical import ClassicalFlow, ClassicalOptions

        return ClassicalFlow(ClassicalOptions(**{k: v for k, v in cfg.items() if k != "name"}))
    if name == "oracle":
        from slam.corr.oracle import OracleFlow

        return OracleFlow(synthetic_world_for(seq), image_size, stride=cfg.get("stride", 8))
    if name == "learned":
        from slam.corr.learned import LearnedFlow, LearnedOptions

        keys = set(LearnedOptions.__dataclass_fields__)
        return LearnedFlow(LearnedOptions(**{k: v for k, v in cfg.items() if k in keys}))
    raise InputError(f"unknown correspondence {name!r}; expected one of {', '.join(NAMES)}")


__all__ = ["CorrespondenceSource", "EdgeUpdate", "FrameData", "make_source", "NAMES"]
