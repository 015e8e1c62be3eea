"""Hydra configuration loading for the subcommands (``configs/`` at the repo root).

``load_config("run", ["correspondence=oracle", "ba.iters=4"])`` composes
``configs/run.yaml`` with the overrides, using Hydra's compose API
(``version_base="1.3"``).  Unknown keys or malformed overrides raise
:class:`slam.data.sequence.InputError` with Hydra's message.

A config group whose options are named ``true`` / ``false`` (``configs/viewer/``)
is selected with ``viewer=true``: Hydra would parse that value as a boolean, so
:func:`quote_switch_groups` quotes it first.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from slam.data.sequence import InputError


def config_dir() -> Path:
    """The ``configs`` folder: next to the package in a source checkout, else bundled."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "configs", here / "configs"):
        if (cand / "ba").is_dir():
            return cand
    raise RuntimeError(f"configs folder not found next to {here}")


def quote_switch_groups(overrides: list[str], root: Path) -> list[str]:
    """``group=true`` -> ``group='true'`` (same for false, any case) when ``root/group/``
    is a config group with a ``true.yaml`` / ``false.yaml`` option; other overrides unchanged."""
    out = []
    for ov in overrides:
        key, sep, value = ov.partition("=")
        if sep and value.lower() in ("true", "false") and (root / key / f"{value.lower()}.yaml").is_file():
            ov = f"{key}='{value.lower()}'"
        out.append(ov)
    return out


def load_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose config ``name`` with Hydra-style ``key=value`` overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    root = config_dir()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            return compose(config_name=name, overrides=quote_switch_groups(list(overrides or []), root))
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).strip().splitlines()[0]
        raise InputError(f"bad configuration override: {msg}") from None


def lm_options(cfg: DictConfig):
    """:class:`slam.ba.dense_ba.LMOptions` from a ``ba`` config node."""
    from slam.ba.dense_ba import LMOptions

    return LMOptions(**{k: v for k, v in dict(cfg).items()})
