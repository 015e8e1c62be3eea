"""Hydra configuration loading for the subcommands (``configs/`` at the repo root).

``load_config("run", ["correspondence=oracle", "ba.iters=4"])`` composes
``configs/run.yaml`` with the overrides, using Hydra's compose API
(``version_base="1.3"``).  Unknown keys or malformed overrides raise
:class:`slam.data.sequence.InputError` with Hydra's message.
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


def load_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose config ``name`` with Hydra-style ``key=value`` overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).strip().splitlines()[0]
        raise InputError(f"bad configuration override: {msg}") from None


def lm_options(cfg: DictConfig):
    """:class:`slam.ba.dense_ba.LMOptions` from a ``ba`` config node."""
    from slam.ba.dense_ba import LMOptions

    return LMOptions(**{k: v for k, v in dict(cfg).items()})
