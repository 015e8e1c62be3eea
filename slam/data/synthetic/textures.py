"""Texture bank: procedural and photographic textures with mip levels.

A texture is an ``(S, S, 3)`` float32 RGB image in [0, 1] covering one *tile*;
surfaces choose a tile size in metres (see :mod:`slam.data.synthetic.scenes`),
which gives every texture a metric scale.  Procedural textures are exactly
periodic (tileable); photographs from :mod:`skimage.data` (bundled with the
wheel, nothing is downloaded) are not, and are used on posters of one tile.

Sampling (:meth:`TextureBank.sample`) is bilinear within one mip level; the
level is chosen by the renderer from the pixel footprint on the surface.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

# skimage.data loaders bundled with the scikit-image wheel (no download).
PHOTO_NAMES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                                "immunohistochemistry", "stereo_motorcycle", "colorwheel")
# grey photographic material textures bundled with scikit-image; tinted when used.
MATERIAL_NAMES: tuple[str, ...] = ("brick", "grass", "gravel")
PROCEDURAL_KINDS: tuple[str, ...] = ("noise", "stripes", "checker", "bricks", "patches")


@dataclass(frozen=True)
class TextureParams:
    """Tunables of the texture bank."""

    size: int = 256                 # texels per side of a tile (a power of two)
    mip_levels: int = 5             # number of levels: size, size/2, ..., size/2**(levels-1)
    per_kind: int = 3               # procedural textures generated per kind in PROCEDURAL_KINDS
    photos: tuple[str, ...] = PHOTO_NAMES       # photographs to include (names in skimage.data)
    materials: tuple[str, ...] = MATERIAL_NAMES  # grey material photographs to include (tinted)
    noise_octaves: tuple[int, ...] = (4, 8, 16, 32, 64)  # value-noise grid cells per tile, coarse to fine
    noise_persistence: float = 0.65  # amplitude ratio between successive noise octaves
    detail: float = 0.10            # amplitude of fine noise added to every procedural texture
    min_contrast: float = 0.35      # minimum luminance difference between a texture's two main colours


def _random_colour(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.9) -> np.ndarray:
    """A random RGB colour with moderate saturation, (3,) float32."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 200), rng.uniform(lo * 255, hi * 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _colour_pair(rng: np.random.Generator, min_contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """Two colours whose brightness differs by at least ``min_contrast``."""
    a = _random_colour(rng, 0.05, 0.45)
    b = _random_colour(rng, 0.55, 0.95)
    if b.mean() - a.mean() < min_contrast:
        b = np.clip(b + (min_contrast - (b.mean() - a.mean())), 0, 1)
    return (a, b) if rng.random() < 0.5 else (b, a)


def periodic_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Exactly periodic smooth value noise of ``cells x cells`` random values, (size, size) in [0, 1]."""
    grid = rng.random((cells, cells)).astype(np.float32)
    tiled = np.tile(grid, (3, 3))
    up = cv2.resize(tiled, (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)
    return up[size:2 * size, size:2 * size]


def fractal_noise(rng: np.random.Generator, size: int, octaves: tuple[int, ...], persistence: float) -> np.ndarray:
    """Multi-scale periodic value noise normalised to [0, 1], (size, size)."""
    out = np.zeros((size, size), np.float32)
    amp = 1.0
    for cells in octaves:
        out += amp * periodic_noise(rng, size, min(cells, size))
        amp *= persistence
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _lerp(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a[None, None] * (1.0 - w[..., None]) + b[None, None] * w[..., None]


def tex_noise(rng: np.random.Generator, p: TextureParams) -> np.ndarray:
    a, b = _colour_pair(rng, p.min_contrast)
    w = fractal_noise(rng, p.size, p.noise_octaves, p.noise_persistence)
    w = np.clip((w - 0.5) * 1.6 + 0.5, 0, 1)  # stretch contrast
    return _lerp(a, b, w)


def tex_stripes(rng: np.random.Generator, p: TextureParams) -> np.ndarray:
    a, b = _colour_pair(rng, p.min_contrast)
    s = p.size
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / s
    kx, ky = int(rng.integers(0, 9)), int(rng.integers(1, 9))  # integer frequencies keep it periodic
    warp = 0.15 * fractal_noise(rng, s, p.noise_octaves[:3], p.noise_persistence)
    w = 0.5 + 0.5 * np.sin(2 * np.pi * (kx * x + ky * y + warp))
    return _lerp(a, b, np.clip(w * 1.4 - 0.2, 0, 1))


def tex_checker(rng: np.random.Generator, p: TextureParams) -> np.ndarray:
    a, b = _colour_pair(rng, p.min_contrast)
    s = p.size
    n = int(rng.choice([4, 8, 16]))  # squares per tile side
    y, x = np.mgrid[0:s, 0:s]
    w = (((x * n) // s + (y * n) // s) % 2).astype(np.float32)
    return _lerp(a, b, w)


def tex_bricks(rng: np.random.Generator, p: TextureParams) -> np.ndarray:
    s = p.size
    rows = int(rng.choice([4, 8]))
    cols = rows // 2
    mortar = _random_colour(rng, 0.6, 0.9)
    base = _random_colour(rng, 0.2, 0.6)
    y, x = np.mgrid[0:s, 0:s]
    row = (y * rows) // s
    xs = (x + (row % 2) * (s // (2 * cols))) % s
    col = (xs * cols) // s
    brick_id = row * cols + col
    shade = rng.uniform(0.7, 1.3, rows * cols).astype(np.float32)[brick_id]
    img = base[None, None] * shade[..., None]
    bh, bw = s // rows, s // cols
    line = max(1, s // 64)
    is_mortar = ((y % bh) < line) | ((xs % bw) < line)
    img[is_mortar] = mortar
    return np.clip(img, 0, 1)


def tex_patches(rng: np.random.Generator, p: TextureParams) -> np.ndarray:
    """Periodic Voronoi cells of random colours."""
    s = p.size
    n = int(rng.integers(12, 40))
    seeds = rng.random((n, 2)).astype(np.float32)
    colours = np.stack([_random_colour(rng, 0.1, 0.95) for _ in range(n)])
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / s
    best = np.full((s, s), np.inf, np.float32)
    label = np.zeros((s, s), np.int64)
    for k, (sx, sy) in enumerate(seeds):
        dx = np.abs(x - sx)
        dy = np.abs(y - sy)
        d = np.minimum(dx, 1 - dx) ** 2 + np.minimum(dy, 1 - dy) ** 2  # wrap-around distance
        closer = d < best
        best[closer] = d[closer]
        label[closer] = k
    return colours[label]


PROCEDURAL: dict[str, Callable[[np.random.Generator, TextureParams], np.ndarray]] = {
    "noise": tex_noise, "stripes": tex_stripes, "checker": tex_checker, "bricks": tex_bricks, "patches": tex_patches,
}


def load_photo(name: str, size: int) -> np.ndarray:
    """A photograph from :mod:`skimage.data` as (size, size, 3) float32 in [0, 1]."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    h, w = img.shape[:2]
    m = min(h, w)  # centre square crop
    img = img[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    img = cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=cv2.INTER_AREA)
    return img.astype(np.float32) / 255.0


def _mip_chain(tex: np.ndarray, levels: int) -> list[np.ndarray]:
    """[tex, tex/2, ...]: each level averages 2x2 texels (keeps periodicity)."""
    out = [tex]
    for _ in range(levels - 1):
        t = out[-1]
        s = t.shape[1] // 2
        out.append(t.reshape(t.shape[0], s, 2, s, 2, 3).mean(axis=(2, 4)))
    return out


@dataclass
class TextureBank:
    """All textures of one world, with mip levels, packed in one atlas image.

    Every level of every texture is stored in :attr:`atlas` with a one-texel
    border copied from the opposite edge (wrap-around), so that one
    ``cv2.remap`` call samples any mix of textures and levels bilinearly.

    Attributes:
        levels: ``levels[l]`` is ``(N, S_l, S_l, 3)`` float32 with ``S_l = S / 2**l``.
        kinds: generator name of each texture ("noise", ..., "photo", "material").
        names: a descriptive name of each texture.
        atlas: (rows, cols, 3) float32; level l of texture i has its texel (0, 0) at
            ``(corner_x[l, i] + 1, corner_y[l, i] + 1)``.
    """

    levels: list[np.ndarray]
    kinds: list[str]
    names: list[str]
    atlas: np.ndarray = field(init=False, repr=False)
    corner_x: np.ndarray = field(init=False, repr=False)
    corner_y: np.ndarray = field(init=False, repr=False)
    level_size: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = self.levels[0].shape[0]
        sizes = [lv.shape[1] for lv in self.levels]
        xs = np.cumsum([0] + [s + 2 for s in sizes])   # levels side by side
        rows = n * (sizes[0] + 2)                       # textures stacked vertically
        self.atlas = np.zeros((rows, int(xs[-1]), 3), np.float32)
        self.corner_x = np.zeros((len(sizes), n), np.float32)
        self.corner_y = np.zeros((len(sizes), n), np.float32)
        for lv, (tex, s) in enumerate(zip(self.levels, sizes)):
            for i in range(n):
                y0, x0 = i * (sizes[0] + 2), int(xs[lv])
                self.atlas[y0:y0 + s + 2, x0:x0 + s + 2] = np.pad(tex[i], ((1, 1), (1, 1), (0, 0)), mode="wrap")
                self.corner_x[lv, i], self.corner_y[lv, i] = x0, y0
        self.level_size = np.asarray(sizes, np.float32)

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def size(self) -> int:
        return self.levels[0].shape[1]

    def ids(self, *kinds: str) -> list[int]:
        """Indices of the textures of the given kinds."""
        return [i for i, k in enumerate(self.kinds) if k in kinds]

    def pick(self, rng: np.random.Generator, *kinds: str) -> int:
        """A random texture index among ``kinds`` (any kind when none given)."""
        ids = self.ids(*kinds) if kinds else list(range(len(self)))
        return int(rng.choice(ids))

    def sample(self, tex: np.ndarray, u: np.ndarray, v: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Bilinear lookup.

        Args:
            tex: (M,) texture indices.
            u, v: (M,) coordinates in tiles (1.0 = one texture width; wraps around).
            level: (M,) mip level per sample, clipped to the available levels.
        Returns:
            (M, 3) float32 RGB.
        """
        m = len(tex)
        if m == 0:
            return np.zeros((0, 3), np.float32)
        lv = np.clip(level, 0, len(self.levels) - 1)
        s = self.level_size[lv]
        uf = (u - np.floor(u)).astype(np.float32)
        vf = (v - np.floor(v)).astype(np.float32)
        cols = 1024  # remap maps are 2D with sides < 32767
        rows = -(-m // cols)
        mx = np.zeros(rows * cols, np.float32)
        my = np.zeros(rows * cols, np.float32)
        mx[:m] = self.corner_x[lv, tex] + 0.5 + uf * s
        my[:m] = self.corner_y[lv, tex] + 0.5 + vf * s
        out = cv2.remap(self.atlas, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(-1, 3)[:m]


def make_texture_bank(rng: np.random.Generator, params: TextureParams = TextureParams()) -> TextureBank:
    """Generate the procedural textures and load the photographs of one world (deterministic in ``rng``)."""
    texs: list[np.ndarray] = []
    kinds: list[str] = []
    names: list[str] = []
    for kind in PROCEDURAL_KINDS:
        for k in range(params.per_kind):
            t = PROCEDURAL[kind](rng, params)
            detail = periodic_noise(rng, params.size, params.size // 4) - 0.5
            texs.append(np.clip(t + params.detail * detail[..., None], 0, 1).astype(np.float32))
            kinds.append(kind)
            names.append(f"{kind}{k}")
    for name in params.materials:
        grey = load_photo(name, params.size)
        tint = 0.5 + 0.5 * _random_colour(rng, 0.6, 1.0)
        texs.append(np.clip(grey * tint[None, None] * 1.2, 0, 1).astype(np.float32))
        kinds.append("material")
        names.append(name)
    for name in params.photos:
        texs.append(load_photo(name, params.size))
        kinds.append("photo")
        names.append(name)
    stack = np.stack(texs).astype(np.float32)
    return TextureBank(levels=_mip_chain(stack, params.mip_levels), kinds=kinds, names=names)
