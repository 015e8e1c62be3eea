"""Camera sensor effects: exposure changes, blur and noise (all off by default).

Effects are deterministic: frame ``k`` of a world with seed ``s`` always gets
the same noise, independent of the order frames are rendered in.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SensorParams:
    """Strength of the sensor effects; zeros disable them."""

    noise_sigma: float = 0.0       # std of additive Gaussian noise, grey levels (0-255)
    blur_sigma: float = 0.0        # std of a Gaussian (defocus) blur, pixels
    exposure_sigma: float = 0.0    # std of the log exposure gain, varying smoothly over time
    exposure_rate: tuple[float, float] = (0.1, 0.5)  # Hz range of the exposure variation
    exposure_terms: int = 3        # sinusoids summed into the exposure curve

    @staticmethod
    def realistic() -> SensorParams:
        """The preset behind ``noise=True`` / ``--noise``."""
        return SensorParams(noise_sigma=2.0, blur_sigma=0.5, exposure_sigma=0.08)

    @property
    def enabled(self) -> bool:
        return self.noise_sigma > 0 or self.blur_sigma > 0 or self.exposure_sigma > 0


class Sensor:
    """Applies :class:`SensorParams` to linear float images."""

    def __init__(self, params: SensorParams, seed: int) -> None:
        self.p = params
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 0x5E45])
        self._freq = rng.uniform(*params.exposure_rate, params.exposure_terms)
        self._phase = rng.uniform(0, 2 * np.pi, params.exposure_terms)

    def gain(self, time: float) -> float:
        """Exposure gain at ``time`` seconds (1 when exposure changes are off)."""
        if self.p.exposure_sigma <= 0:
            return 1.0
        s = np.sin(2 * np.pi * self._freq * time + self._phase).sum() * np.sqrt(2.0 / len(self._freq))
        return float(np.exp(self.p.exposure_sigma * s))

    def apply(self, image: np.ndarray, index: int, time: float) -> np.ndarray:
        """(H, W, 3) float32 in [0, 1] -> (H, W, 3) uint8 with the effects of frame ``index``."""
        img = image * 255.0
        if self.p.exposure_sigma > 0:
            img = img * self.gain(time)
        if self.p.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), self.p.blur_sigma)
        if self.p.noise_sigma > 0:
            rng = np.random.default_rng([self.seed, int(index), 0x401])
            img = img + rng.normal(0.0, self.p.noise_sigma, img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)
