"""Building the option dataclasses of :mod:`slam.depth` from config nodes.

Every tunable of the package lives in a dataclass whose defaults mirror
``configs/depth/*.yaml``.  :func:`options_from` turns a Hydra/OmegaConf node, a
plain mapping, an instance of the dataclass or None into that dataclass,
rejecting unknown keys with a one-line :class:`~slam.data.sequence.InputError`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from slam.data.sequence import InputError

T = TypeVar("T")


def to_plain(cfg: Any) -> Any:
    """An OmegaConf node (or anything else) as plain Python containers."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return cfg


def options_from(cls: type[T], cfg: Any, where: str = "", ignore: tuple[str, ...] = ()) -> T:
    """``cls(**cfg)`` for a dataclass ``cls``.

    Args:
        cls: the option dataclass.
        cfg: None (defaults), an instance of ``cls``, a mapping or an OmegaConf node.
        where: config path named in error messages (e.g. ``"depth.video"``).
        ignore: keys of ``cfg`` that belong to someone else (skipped silently).
    Raises:
        InputError: an unknown key.
    """
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    cfg = to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise InputError(f"{where or cls.__name__}: expected a mapping of options, got {type(cfg).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(cfg) - names - set(ignore))
    if unknown:
        raise InputError(f"{where or cls.__name__}: unknown option(s) {', '.join(unknown)}; "
                         f"expected {', '.join(sorted(names))}")
    kw = {}
    for k, v in cfg.items():
        if k not in names:
            continue
        if isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)
