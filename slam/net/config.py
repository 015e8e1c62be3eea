"""Sizes of the correspondence network (:class:`NetConfig`) and its presets.

The presets live in ``configs/net/<name>.yaml`` (``small``: CPU model,
``large``: GPU model of DROID-SLAM's size); every field is documented there.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from slam.data.sequence import InputError

#: Ratio of image to feature resolution; the encoders' strides multiply to this.
STRIDE = 8


@dataclass(frozen=True)
class NetConfig:
    """Architecture of :class:`slam.net.model.CorrNet` (mirrored in ``configs/net/*.yaml``).

    Encoder dims are ``(stem, stage 1, ..., stage n)``; ``enc_strides`` gives the
    stride of the stem and of each stage's first block and must multiply to 8.
    """

    name: str = "small"                               #: preset name (provenance only)
    feature_dim: int = 64                             #: channels of the correlation features
    hidden_dim: int = 64                              #: ConvGRU hidden state channels
    context_dim: int = 32                             #: context-input channels fed to the GRU every step
    fnet_dims: tuple[int, ...] = (24, 32, 48, 64)     #: feature encoder widths (stem, stages)
    cnet_dims: tuple[int, ...] = (24, 32, 48, 64)     #: context encoder widths (stem, stages)
    enc_strides: tuple[int, ...] = (2, 2, 2, 1)       #: strides of stem and stages (product 8)
    enc_blocks: int = 1                               #: residual blocks per stage
    stem_kernel: int = 7                              #: kernel size of the stem convolution
    corr_levels: int = 4                              #: correlation pyramid levels
    corr_radius: int = 3                              #: lookup window radius (window 2r+1 squared)
    corr_dims: tuple[int, int] = (64, 48)             #: correlation encoder (1x1 conv, 3x3 conv)
    flow_dims: tuple[int, int] = (16, 16)             #: flow encoder (7x7 conv, 3x3 conv)
    motion_dim: int = 48                              #: motion features (incl. the 2 raw flow channels)
    gru: str = "dwsep"                                #: ConvGRU kind: conv3 (3x3) | sep (1xk then kx1) | dwsep
    gru_kernel: int = 5                               #: kernel k of the sep (1xk, kx1) / dwsep (kxk depthwise) GRU
    head_dim: int = 16                                #: hidden channels of the delta/weight/motion heads
    agg_dim: int = 32                                 #: channels of the per-frame aggregation (eta, depth mask)
    eta_scale: float = 0.01                           #: damping = eta_scale * softplus(.)
    flow_clip: float = 64.0                           #: |flow| input to the flow encoder clipped (feature px)

    def __post_init__(self) -> None:
        for key in ("fnet_dims", "cnet_dims", "enc_strides", "corr_dims", "flow_dims"):
            object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))
        prod = 1
        for s in self.enc_strides:
            prod *= s
        if prod != STRIDE:
            raise ValueError(f"enc_strides {self.enc_strides} multiply to {prod}, expected {STRIDE}")
        if not (len(self.fnet_dims) == len(self.cnet_dims) == len(self.enc_strides)):
            raise ValueError("fnet_dims, cnet_dims and enc_strides must have the same length")
        if self.gru not in ("conv3", "sep", "dwsep"):
            raise ValueError(f"unknown gru {self.gru!r}; expected conv3, sep or dwsep")
        if self.gru_kernel % 2 != 1:
            raise ValueError("gru_kernel must be odd")
        if self.motion_dim <= 2:
            raise ValueError("motion_dim must exceed 2 (it includes the raw flow)")

    @property
    def corr_channels(self) -> int:
        """Channels of a correlation lookup: ``levels * (2r + 1)^2``."""
        return self.corr_levels * (2 * self.corr_radius + 1) ** 2

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of builtins (lists for tuples), e.g. for checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown network config keys: {', '.join(unknown)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise InputError(f"bad network config: {e}") from None


def load_net_config(name_or_path: str | Path) -> NetConfig:
    """A preset ``configs/net/<name>.yaml`` (``"small"``, ``"large"``) or a YAML file path."""
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        from slam.config import config_dir

        path = config_dir() / "net" / f"{name_or_path}.yaml"
        if not path.is_file():
            avail = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise InputError(f"unknown network preset {name_or_path!r}; expected a file or one of {', '.join(avail)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of network sizes")
    return NetConfig.from_dict(data)
