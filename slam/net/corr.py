"""Correlation pyramids and windowed lookups.

Conventions
-----------
* Feature maps are ``(E, C, h, w)``, one pair per edge ``(i, j)``: ``fmap1`` of
  frame i (the source) and ``fmap2`` of frame j (the target).
* The correlation of source pixel ``p`` with target pixel ``q`` is
  ``<fmap1[:, p], fmap2[:, q]> / sqrt(C)``.
* Pyramid level ``l`` average-pools the *target* dimensions ``l`` times by 2
  (floor for odd sizes); equivalently it correlates with the pooled ``fmap2``.
* Coordinates ``coords`` are ``(E, h, w, 2)`` pixel-centre ``(u, v) = (x, y)``
  positions in the target at feature resolution, as
  :func:`slam.corr.base.identity_coords`: target pixel ``(u, v)`` has its
  centre at ``(u, v)``.  At level ``l`` the lookup centre is ``coords / 2**l``.
* A lookup samples the ``(2r + 1) x (2r + 1)`` window around the centre with
  integer offsets, bilinearly, in a volume that is zero outside the target
  (samples partly or wholly outside get the in-bounds share or zero).
* Output ``(E, levels * (2r + 1)^2, h, w)``: channel
  ``l * (2r + 1)^2 + (dy + r) * (2r + 1) + (dx + r)`` holds level ``l`` at
  offset ``(dx, dy)``.

:class:`AllPairsCorr` precomputes the whole volume (memory per edge
``~ 4/3 (h w)^2``; fast lookups, for the frontend's few edges).
:class:`OnDemandCorr` computes the same numbers at lookup time from the
frames' pooled feature pyramids, so that it keeps nothing per edge but the
indices (the output is ``h w levels (2r + 1)^2`` per edge), for the
backend's many edges.  It works through the edges in chunks whose transient
memory is bounded by ``max_elements``, with one of two strategies:

* ``"blocked"``: correlate the chunk's source features with the whole pooled
  target pyramid (a matmul), look up, discard.  ``~ 4/3 (h w)^2 C`` MACs per
  edge, but dense; the fastest on CPU at SLAM resolutions (30 x 40).
* ``"window"``: gather the ``(2r + 2)^2`` integer taps around each lookup
  centre and take dot products (``~ h w levels (2r + 2)^2 C``); fewer FLOPs,
  gather-bound; wins for large feature maps.

Both give :class:`AllPairsCorr`'s numbers up to rounding (correlation is
linear in ``fmap2``: pooling the volume equals correlating with pooled
features, bilinear sampling of the volume equals the dot product with
bilinearly interpolated features).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F


def check_levels(h: int, w: int, levels: int) -> None:
    """Raise ``ValueError`` unless an ``h x w`` map can be pooled ``levels - 1`` times."""
    m = 2 ** (levels - 1)
    if h < m or w < m:
        raise ValueError(f"feature map {h}x{w} too small for {levels} correlation levels (need >= {m}x{m})")


def fmap_pyramid(fmap: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[fmap, pool(fmap), ...]``: ``levels`` maps ``(B, C, h / 2^l, w / 2^l)`` (2x2 average pooling, floor)."""
    check_levels(fmap.shape[-2], fmap.shape[-1], levels)
    out = [fmap]
    for _ in range(levels - 1):
        out.append(F.avg_pool2d(out[-1], 2))
    return out


class CorrBlock(ABC):
    """A correlation pyramid for E edges; call with ``coords (E, h, w, 2)``."""

    levels: int
    radius: int
    shape: tuple[int, int, int]  #: (E, h, w)

    @property
    def channels(self) -> int:
        """``levels * (2r + 1)^2``."""
        return self.levels * (2 * self.radius + 1) ** 2

    def _check(self, coords: torch.Tensor) -> None:
        if tuple(coords.shape) != (*self.shape, 2):
            raise ValueError(f"coords shape {tuple(coords.shape)} != {(*self.shape, 2)}")

    @abstractmethod
    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """Windowed lookup: ``(E, h, w, 2)`` -> ``(E, levels * (2r + 1)^2, h, w)`` (see module docstring)."""


def _volumes(fmap1: torch.Tensor, pyramid2: list[torch.Tensor]) -> list[torch.Tensor]:
    """Correlation of ``fmap1 (e, C, h, w)`` with each ``(e, C, hl, wl)`` -> ``[(e h w, 1, hl, wl)]``."""
    e, C, h, w = fmap1.shape
    a = fmap1.flatten(2).transpose(1, 2) * (1.0 / math.sqrt(C))                  # (e, h w, C)
    return [torch.bmm(a, f2.flatten(2)).view(e * h * w, 1, *f2.shape[-2:]) for f2 in pyramid2]


def _taps(centre: torch.Tensor, radius: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """Integer taps of a bilinear window lookup on an ``h x w`` map.

    Args:
        centre: ``(N, 2)`` pixel-centre ``(x, y)`` at the map's resolution.
    Returns:
        ``(idx, mx, my, fx, fy)``: ``idx (N, (2r + 2)^2)`` flat indices ``y w + x``
        of the taps ``floor(centre) + (dx, dy)``, ``dx, dy`` in ``[-r, r + 1]``
        (row-major in ``(dy, dx)``; clamped into the map: outside taps are
        masked, not dropped); ``mx (N, 1, 2r + 2)`` and ``my (N, 2r + 2, 1)``
        the 0/1 masks of the taps' columns and rows inside the map; ``fx, fy
        (N, 1, 1)`` the fractional parts of the centre.
    """
    c = centre.clamp(-1e6, 1e6)
    c0 = c.floor()
    frac = c - c0
    c0 = c0.long()
    d = torch.arange(-radius, radius + 2, device=centre.device)
    xs, ys = c0[:, :1] + d, c0[:, 1:] + d                                      # (N, 2r + 2)
    mx = ((xs >= 0) & (xs < w)).to(centre.dtype)[:, None, :]
    my = ((ys >= 0) & (ys < h)).to(centre.dtype)[:, :, None]
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    idx = ((c0[:, 1:] * w + c0[:, :1]) + (dy * w + dx).view(1, -1)).clamp_(0, h * w - 1)
    return idx, mx, my, frac[:, :1, None], frac[:, 1:, None]


def _bilinear_window(v: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, fx: torch.Tensor,
                     fy: torch.Tensor) -> torch.Tensor:
    """Values at the taps ``(N, n + 1, n + 1)`` (see :func:`_taps`) -> bilinear window ``(N, n * n)``.

    Outside taps count as zero; interpolation is separable (x, then y)."""
    v = v * mx
    rows = torch.lerp(v[:, :, :-1], v[:, :, 1:], fx) * my
    return torch.lerp(rows[:, :-1], rows[:, 1:], fy).flatten(1)


def _lookup_volumes(volumes: list[torch.Tensor], coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Windowed bilinear lookup in per-pixel volumes ``[(E h w, 1, hl, wl)]`` -> ``(E, L K, h, w)``."""
    E, h, w, _ = coords.shape
    N, n1 = E * h * w, 2 * radius + 2
    out = []
    for lvl, vol in enumerate(volumes):
        hl, wl = vol.shape[-2:]
        idx, mx, my, fx, fy = _taps(coords.reshape(N, 2) * 0.5 ** lvl, radius, hl, wl)
        v = vol.view(N, hl * wl).gather(1, idx).view(N, n1, n1)
        out.append(_bilinear_window(v, mx, my, fx, fy).view(E, h, w, -1))
    return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous()


class AllPairsCorr(CorrBlock):
    """Precomputed all-pairs correlation pyramid.

    Args:
        fmap1: ``(E, C, h, w)`` source features.
        fmap2: ``(E, C, h2, w2)`` target features.
        levels, radius: pyramid levels and window radius.
    """

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int = 4, radius: int = 3) -> None:
        self.levels, self.radius = levels, radius
        self.shape = (fmap1.shape[0], fmap1.shape[2], fmap1.shape[3])
        # pooling the volume over the target dims == correlating with pooled targets (cheaper on CPU)
        self.pyramid = _volumes(fmap1, fmap_pyramid(fmap2, levels))

    @classmethod
    def from_frames(cls, fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, levels: int = 4,
                    radius: int = 3) -> AllPairsCorr:
        """Edges ``ii[e] -> jj[e]`` (LongTensors ``(E,)``) between frames of ``fmaps (F, C, h, w)``."""
        return cls(fmaps[ii], fmaps[jj], levels, radius)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        self._check(coords)
        return _lookup_volumes(self.pyramid, coords, self.radius)


class OnDemandCorr(CorrBlock):
    """Correlation computed at lookup time from frame-level pyramids (see module docstring).

    Args:
        fmap1: ``(E, C, h, w)`` source features.
        fmap2: ``(E, C, h2, w2)`` target features.
        levels, radius: pyramid levels and window radius.
        max_elements: bound on the transient tensors of one chunk of edges
            (at least one edge per chunk): the chunk's volumes for
            ``"blocked"``, its gathered features ``(e h w (2r + 2)^2, C)`` of
            one level for ``"window"``.
        strategy: ``"blocked"`` or ``"window"``.
    """

    STRATEGIES = ("blocked", "window")

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int = 4, radius: int = 3,
                 max_elements: int = 1 << 24, strategy: str = "blocked") -> None:
        idx = torch.arange(fmap1.shape[0], device=fmap1.device)
        self._setup(fmap1, idx, fmap_pyramid(fmap2, levels), idx, levels, radius, max_elements, strategy)

    @classmethod
    def from_frames(cls, fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, levels: int = 4,
                    radius: int = 3, max_elements: int = 1 << 24, strategy: str = "blocked",
                    pyramid: list[torch.Tensor] | None = None) -> OnDemandCorr:
        """Edges ``ii[e] -> jj[e]`` between frames of ``fmaps (F, C, h, w)``, nothing copied per edge.

        ``pyramid`` may pass ``fmap_pyramid(fmaps, levels)`` computed earlier
        (e.g. kept per keyframe).
        """
        self = cls.__new__(cls)
        pyr = pyramid if pyramid is not None else fmap_pyramid(fmaps, levels)
        if len(pyr) != levels:
            raise ValueError(f"pyramid has {len(pyr)} levels, expected {levels}")
        self._setup(fmaps, ii, pyr, jj, levels, radius, max_elements, strategy)
        return self

    def _setup(self, fmap1: torch.Tensor, ii: torch.Tensor, pyramid: list[torch.Tensor], jj: torch.Tensor,
               levels: int, radius: int, max_elements: int, strategy: str) -> None:
        if ii.shape != jj.shape or ii.ndim != 1:
            raise ValueError("ii and jj must be 1-D index tensors of equal length")
        if strategy not in self.STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {self.STRATEGIES}")
        self.levels, self.radius = levels, radius
        self.fmap1, self.ii, self.pyramid, self.jj = fmap1, ii, pyramid, jj
        self.max_elements, self.strategy = max_elements, strategy
        self.shape = (ii.shape[0], fmap1.shape[2], fmap1.shape[3])
        self._rows: list[torch.Tensor] | None = None

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        self._check(coords)
        E, h, w = self.shape
        if self.strategy == "blocked":
            per_edge = h * w * sum(p.shape[-2] * p.shape[-1] for p in self.pyramid)
        else:
            per_edge = h * w * (2 * self.radius + 2) ** 2 * self.fmap1.shape[1]
        chunk = max(1, self.max_elements // per_edge)
        run = self._blocked if self.strategy == "blocked" else self._window
        out = [run(self.ii[s: s + chunk], self.jj[s: s + chunk], coords[s: s + chunk]) for s in range(0, E, chunk)]
        return torch.cat(out, 0)

    def _blocked(self, ii: torch.Tensor, jj: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return _lookup_volumes(_volumes(self.fmap1[ii], [p[jj] for p in self.pyramid]), coords, self.radius)

    def _window(self, ii: torch.Tensor, jj: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        e, h, w, _ = coords.shape
        C = self.fmap1.shape[1]
        N, n1 = e * h * w, 2 * self.radius + 2
        if self._rows is None:  # channel-last target rows per level: (F hl wl, C)
            self._rows = [p.permute(0, 2, 3, 1).reshape(-1, C) for p in self.pyramid]
        a = (self.fmap1[ii].permute(0, 2, 3, 1).reshape(N, C, 1)) * (1.0 / math.sqrt(C))
        out = []
        for lvl, (p, rows) in enumerate(zip(self.pyramid, self._rows)):
            hl, wl = p.shape[-2:]
            idx, mx, my, fx, fy = _taps(coords.reshape(N, 2) * 0.5 ** lvl, self.radius, hl, wl)
            idx = idx + (jj * (hl * wl)).repeat_interleave(h * w)[:, None]     # rows of frame jj
            v = torch.matmul(rows[idx], a).view(N, n1, n1)                     # (N, 2r + 2, 2r + 2)
            out.append(_bilinear_window(v, mx, my, fx, fy).view(e, h, w, -1))
        return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous()
