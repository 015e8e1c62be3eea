"""Saving and loading :class:`~slam.net.model.CorrNet` checkpoints.

A checkpoint is a ``torch.save`` file of a plain dict (loadable with
``torch.load(weights_only=True)``, i.e. without executing pickled code)::

    {"format": "slam.corrnet", "version": 1,
     "config": NetConfig.to_dict(),
     "state_dict": {name: tensor},           # fp32, or fp16 with half=True
     "provenance": {"command", "seed", "steps", "wall_time_s", "device",
                    "created" (ISO 8601 UTC), "torch", "extra" (dict)}}

Every problem on loading (missing, corrupt or truncated file, another format,
a newer version, a config or state_dict that does not match) raises
:class:`slam.data.sequence.InputError` with a one-line message.
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from slam.data.sequence import InputError
from slam.net.config import NetConfig
from slam.net.model import CorrNet

FORMAT = "slam.corrnet"
VERSION = 1
_SHOW = 3  # names listed in a mismatch message


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = [ln for ln in lines if "WeightsUnpickler error" in ln]  # torch's weights_only refusal
    text = (detail or lines or [""])[0]
    return f"{type(e).__name__}: {text}"[:300]


def _shape(v: Any) -> str:
    return str(tuple(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__


def save_checkpoint(path: str | Path, model: CorrNet, *, command: str | None = None, seed: int | None = None,
                    steps: int = 0, wall_time_s: float = 0.0, device: str | None = None, half: bool = False,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` with its config and provenance to ``path`` (atomically: temp file + rename).

    Args:
        command: the command line that trained it (default: this process's argv).
        seed, steps, wall_time_s: training seed, optimiser steps, training wall time (s).
        device: where it was trained (default: the device of the model's parameters).
        half: store floating-point tensors as fp16 (half the size; loaded back into fp32).
        extra: more provenance (plain builtins and tensors only).
    Returns:
        The path written.
    """
    path = Path(path)
    if device is None:
        p = next(model.parameters(), None)
        device = str(p.device) if p is not None else "cpu"
    state = {k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": state,
        "provenance": {
            "command": command if command is not None else " ".join(sys.argv),
            "seed": seed,
            "steps": int(steps),
            "wall_time_s": float(wall_time_s),
            "device": device,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": str(torch.__version__),
            "extra": dict(extra or {}),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The validated checkpoint dict (format, version and config checked; see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path}: file not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, not a torch file, or unsafe pickle content
        raise InputError(f"checkpoint {path}: unreadable (corrupt, truncated or not a checkpoint): "
                         f"{_one_line(e)}") from None
    if not isinstance(data, dict) or "format" not in data:
        raise InputError(f"checkpoint {path}: not a slam network checkpoint (no format tag)")
    if data["format"] != FORMAT:
        raise InputError(f"checkpoint {path}: format {data['format']!r}, expected {FORMAT!r}")
    version = data.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise InputError(f"checkpoint {path}: version {version!r} not supported (this code reads 1..{VERSION})")
    for key, kind in (("config", dict), ("state_dict", dict), ("provenance", dict)):
        if not isinstance(data.get(key), kind):
            raise InputError(f"checkpoint {path}: missing or malformed {key!r}")
    try:
        data["config"] = NetConfig.from_dict(data["config"])
    except InputError as e:
        raise InputError(f"checkpoint {path}: {e}") from None
    return data


def load_checkpoint(path: str | Path, config: NetConfig | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[CorrNet, dict[str, Any]]:
    """Build a :class:`CorrNet` from a checkpoint.

    Args:
        path: the file.
        config: the architecture the caller expects; when given it must equal
            the stored one (all fields but ``name``), else :class:`InputError`.
        map_location: device of the returned model.
    Returns:
        ``(model in eval mode, provenance dict)``.
    """
    data = read_checkpoint(path, map_location)
    stored: NetConfig = data["config"]
    if config is not None:
        a, b = config.to_dict(), stored.to_dict()
        diff = [f"{k} {b[k]} != {a[k]}" for k in a if k != "name" and a[k] != b[k]]
        if diff:
            raise InputError(f"checkpoint {path}: network config differs from the expected one "
                             f"(stored != expected): {'; '.join(diff)}")
    model = CorrNet(stored)
    expected = model.state_dict()
    state = data["state_dict"]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {_shape(state[k])} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
                parts.append(f"{label}: {', '.join(items[:_SHOW])}{more}")
        raise InputError(f"checkpoint {path}: state_dict does not match the network: {'; '.join(parts)}")
    model.load_state_dict(state)  # copies (and casts fp16 -> fp32)
    return model.to(map_location).eval(), data["provenance"]
