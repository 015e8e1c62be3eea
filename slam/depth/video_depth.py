"""Consistent dense video depth with poses and intrinsics held fixed.

After tracking, every frame gets a dense depth map (at the input resolution,
computed at a working resolution of about ``max_pixels`` pixels and upsampled)
that agrees with the optical flow to its neighbours at several frame gaps,
with the other frames' depth maps, with a monocular prior where geometry is
weak, and is smooth except across image edges.

Notation and conventions
------------------------
* Poses ``T_i`` are camera-to-world 4x4 (OpenCV axes: x right, y down, z
  forward); ``T_ji = T_j^-1 T_i`` maps camera-i points to camera j,
  ``X_j = R X_i + t``.
* Intrinsics ``[fx, fy, cx, cy]`` with pixel ``(u, v)``'s centre at ``(u, v)``
  (:mod:`slam.geometry.camera`); the working-resolution intrinsics come from
  :meth:`~slam.geometry.camera.Intrinsics.scaled`.
* Depth ``D`` is z in the units of the poses; ``rho = 1 / D`` is inverse depth and
  ``l = log D`` the optimised variable.

Pipeline, per chunk of ``chunk`` consecutive frames (memory stays bounded: only
the chunk, its ``max(gaps)`` neighbours on each side and their flows are held):

1. **Flow.** For every gap ``g`` in ``gaps`` (ascending) and every chunk frame
   ``i``, OpenCV DIS flow ``i -> i±g`` and back (the settings of
   :mod:`slam.corr.classical`), confidence ``exp(-(e_fb / fb_sigma)^2)`` from
   the forward-backward error ``e_fb`` (0 when the flow leaves the image).  From
   ``g > 1`` on, DIS starts from the reprojection of the current depth estimate.
2. **Triangulation.** With ``a = R ray(x)`` and the observed normalised
   coordinates ``(xo, yo)`` of ``x + f_ij(x)``, the reprojection error in pixels
   is ``e(rho) = (b + c rho) / (a2 + t2 rho)`` with
   ``b = (fx (a0 - xo a2), fy (a1 - yo a2))`` and ``c = (fx (t0 - xo t2), fy (t1 - yo t2))``.
   It is measured in the metric ``M`` of frame i's local texture
   (``texture_mode=tensor``: ``M = S / lambda_max(S)`` with ``S`` the structure
   tensor, the identity on texture and corners and ``n n^T`` on an edge with
   normal ``n``: only the normal flow is measured there (aperture); ``scalar``:
   ``M = I``).  The algebraic minimiser is ``rho*_ij = -(b^T M c) / (c^T M c)``
   and the Gauss-Newton information ``H_ij = c^T M c / (a2 + t2 rho*)^2``
   (px^2 per unit inverse depth squared).
   Each pair's weight ``w_ij`` is the flow confidence times the texture
   strength (``l / (l + texture_eps)`` with ``l = lambda_max`` for ``tensor``,
   ``lambda_min`` for ``scalar``: DIS interpolates flat regions rather than
   measuring them) times ``exp(-(e_perp / epi_sigma)^2)``, where
   ``e_perp = |e(rho*)|_M`` is the residual left (distance from the epipolar
   line: moving objects, wrong flow).
3. **Fusion.** Per pixel, the pairs are fused by Huber-IRLS (threshold
   ``fuse_huber`` px) into ``rho_hat`` and the information
   ``I = sum_ij w_ij H_ij / flow_sigma^2``, so that the flow term of all pairs
   is ``I (rho - rho_hat)^2`` up to a constant; with ``empirical_noise`` the
   noise is ``max(flow_sigma, rms)`` where ``rms`` is the weighted rms
   disagreement of the pairs in pixels, and ``geo_floor`` caps the log-depth
   information (``I <- I / (1 + I rho^2 geo_floor^2)``: flow errors that all
   pairs share, e.g. at depth edges, do not average out).  ``I_log = I rho^2``
   is the information on log depth.  The output confidence is
   ``I_log / (I_log + conf_sigma^-2)`` (0.5 where the geometric log-depth std
   is ``conf_sigma``) times ``exp(-(rms / conf_rms)^2)`` times
   ``exp(-g / conf_grad)`` with ``g`` the largest log-depth step per pixel in a
   5x5 window of the result: flow (and so depth) is least reliable at depth
   discontinuities, where all pairs err alike.
4. **Prior.** The prior's inverse depth is aligned per frame with
   :func:`~slam.depth.align.align_scale_shift` to ``rho_hat`` (weights: the
   inverse of ``rho^2 (1 / I_log + prior_sigma^2)``) when the frame holds at least
   ``align_min_info`` of log-depth information, else to the initial depth,
   else with the previous frame's scale and shift.  Its per-pixel weight is
   ``prior_sigma^-2`` times its confidence times
   ``prior_min_frac + (1 - prior_min_frac) * rule(I_log)`` with ``rule`` the
   linear rule of :func:`~slam.depth.align.prior_weight_from_hessian`
   (``w_max = 1``, ``h_thresh = prior_off_sigma^-2``): weak parallax, strong
   prior (MegaSaM).  Tracking's problem gate (:func:`~slam.depth.align.prior_gate`)
   is not applied here: poses and focal are fixed, so the prior cannot drag the
   trajectory's scale; it only shapes depth where the flow says little.
5. **Optimisation.** From the per-pixel optimum ``l0`` of the flow, prior,
   initial-depth and fill terms (a few Gauss-Newton steps per pixel), Adam
   minimises the sum over the chunk's pixels (divided by their number) of::

       I (e^-l - rho_hat)^2                                      flow, all gaps
     + w_p huber(l - l_prior, huber_k prior_sigma)               aligned prior
     + init_sigma^-2 huber(l - l_init, huber_k init_sigma)       initial depth
     + fill_sigma^-2 (l - l_fill)^2                              smooth fill
     + smooth_weight sum_dx g(dI) charbonnier(dl - dl_prior)     edge-aware smoothness
     + consistency_sigma^-2 sum_j w_ij huber(log z_ij - l_j(p_ij), huber_k consistency_sigma)

   ``l_fill`` is a normalised Gaussian convolution (``fill_radius``) of the
   known log depths (it only matters where nothing else is known);
   ``dl_prior`` is the prior's log-depth step where it has values and
   ``smooth_prior_gradients`` (so the prior lends its shape, not its absolute
   layout), else 0; ``g(dI) = exp(-|dI| / edge_sigma)`` on the grey image in
   ``[0, 1]``; ``z_ij``, ``p_ij`` are the depth and pixel of ``x``'s 3D point in
   frame ``j`` for the gaps in ``consistency_gaps``.  The targets
   ``l_j(p_ij)`` are refreshed every ``consistency_regrid`` iterations and held
   fixed in between (no gradient flows to ``l_j`` through them: every pair is
   present in both directions, so both frames move towards each other, and a
   bilinear gather's backward pass is expensive on the CPU); frames of
   earlier chunks are held fixed, which ties the chunks together.

A frame without any constraint gets the prior (or initial depth) alone; the
scale always comes from the poses, so the output is in their units.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from slam.corr.dis import PRESETS, DISFlow
from slam.data.sequence import InputError
from slam.depth.align import AlignOptions, align_scale_shift, prior_weight_from_hessian
from slam.depth.options import options_from
from slam.depth.prior import DepthPrior, resize_prior
from slam.geometry.camera import Intrinsics
from slam.geometry.pose import invert


#: Keys of ``configs/depth/video.yaml`` that are for the caller (``slam run``), not for the estimator.
VIDEO_CONFIG_EXTRAS: tuple[str, ...] = ("enabled", "output", "cloud")


@dataclass
class VideoDepthOptions:
    """Tunables of :func:`estimate_video_depth` (mirrored in ``configs/depth/video.yaml``)."""

    max_pixels: int | None = 76800      #: working resolution: about this many pixels (None/0: input resolution)
    gaps: tuple[int, ...] = (1, 2, 4, 8)  #: frame gaps of the flow pairs
    chunk: int = 16                     #: frames optimised together
    dis_preset: str = "medium"          #: DIS preset: ultrafast | fast | medium
    dis_finest_scale: int | None = 0    #: DIS finest pyramid level (0: full working resolution; None: the preset's)
    dis_init: bool = True               #: start DIS from the reprojection of the current depth (else the last flow)
    texture_mode: str = "scalar"        #: scalar: identity metric, l_min weight; tensor: aperture-aware S / l_max
    texture_eps: float = 0.002          #: structure-tensor eigenvalue (grey 0..1) at which texture counts half (0: off)
    texture_window: int = 7             #: box window (px) of that structure tensor
    fb_sigma: float = 1.0               #: forward-backward error (working px) at which flow confidence is exp(-1)
    min_flow_conf: float = 0.05         #: flow confidences below this become 0
    epi_sigma: float = 0.5              #: distance to the epipolar line (working px) at which a pair weight is exp(-1)
    fuse_iters: int = 3                 #: Huber-IRLS iterations fusing the pairs of a pixel
    fuse_huber: float = 0.5             #: Huber threshold of that fusion (working px)
    min_disp_ratio: float = 1e-3        #: depth kept within [ratio, 1 / ratio] x the frame median (its inverse too)
    flow_sigma: float = 0.2             #: flow noise (working px): the flow term's information is H / flow_sigma^2
    geo_floor: float | None = 0.03      #: log-depth error floor of the flow term (DIS bias at edges, ...); None: off
    empirical_noise: bool = True        #: the pairs' rms disagreement (px) is the noise where it exceeds flow_sigma
    conf_sigma: float = 0.1             #: geometric log-depth std at which the output confidence is 0.5
    conf_rms: float | None = 0.25       #: output confidence x exp(-(rms / conf_rms)^2), rms = pair disagreement (px)
    conf_grad: float | None = 0.04      #: output confidence x exp(-g / conf_grad), g = max log-depth step (5x5) per px
    align_min_info: float = 10000.0     #: total log-depth information a frame needs to align the prior to its geometry
    prior_sigma: float = 0.15           #: log-depth std of the aligned prior (its weight is 1 / prior_sigma^2)
    prior_off_sigma: float | None = 0.05  #: prior weight falls to prior_min_frac where the geometric std is below this
    prior_min_frac: float = 0.1         #: prior weight kept where geometry is strong (fraction of the full weight)
    init_sigma: float = 0.1             #: log-depth std of the initial depth
    huber_k: float = 2.0                #: Huber threshold of the prior, initial-depth and consistency terms, in sigmas
    fill_sigma: float = 3.0             #: log-depth std of a smooth fill of the known depths (keeps empty pixels sane)
    fill_radius: float = 0.1            #: Gaussian sigma of that fill, fraction of the image diagonal
    smooth_weight: float = 1.0          #: weight of the edge-aware smoothness (per unit log-depth step)
    edge_sigma: float = 0.05            #: grey-level step (0..1) at which the smoothness weight is exp(-1)
    smooth_prior_gradients: bool = True  #: smooth the difference to the prior's log depth (its shape), not the depth
    consistency_sigma: float | None = 0.05  #: log-depth std of the cross-frame consistency (None: term off)
    consistency_gaps: tuple[int, ...] = (1, 2)  #: gaps of the consistency pairs (those not in gaps are ignored)
    consistency_regrid: int = 5         #: refresh the consistency targets every this many iterations
    iters: int = 50                     #: Adam iterations per chunk
    lr: float = 0.02                    #: Adam learning rate (log depth), cosine-decayed to lr / 10
    device: str = "cpu"                 #: torch device of the optimisation


@dataclass
class VideoDepth:
    """Result of :func:`estimate_video_depth`.

    Attributes:
        depth: (N, H, W) float32 depth (z) in the units of the poses, input resolution.
        confidence: (N, H, W) float32 in [0, 1]: how well the flow constrains each depth
            (module docstring, 3.; the prior and the smoothness add none).
        working_size: ``(w, h)`` resolution the optimisation ran at.
        stats: timings (s) and counts.
    """

    depth: np.ndarray
    confidence: np.ndarray
    working_size: tuple[int, int]
    stats: dict = field(default_factory=dict)


def working_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """``(w, h)`` with about ``max_pixels`` pixels and the input aspect (the input size when smaller)."""
    if not max_pixels or width * height <= max_pixels:
        return int(width), int(height)
    s = math.sqrt(max_pixels / float(width * height))
    return max(8, round(width * s)), max(8, round(height * s))


def _huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    """``r^2`` for ``|r| <= delta``, ``2 delta |r| - delta^2`` beyond (continuous, C1)."""
    a = r.abs()
    m = a.clamp(max=delta)
    return m * (2.0 * a - m)


class _Frame:
    """Working-resolution data of one frame.

    Attributes:
        gray: (h, w) uint8 for DIS.
        grey: (h, w) float32 in [0, 1] for the edge weights.
        prior: ``(inverse_depth, confidence)`` (h, w) float32 each, or None.
        init_log: (h, w) float32 log initial depth (NaN where unknown), or None.
        texture: (h, w, 4) float32 ``(m11, m12, m22, strength)``: the flow metric and weight from local texture.
    """

    __slots__ = ("gray", "grey", "init_log", "prior", "texture")

    def __init__(self, gray: np.ndarray, texture: np.ndarray, prior: tuple[np.ndarray, np.ndarray] | None,
                 init_log: np.ndarray | None) -> None:
        self.gray = gray
        self.grey = gray.astype(np.float32) / 255.0
        self.texture = texture
        self.prior = prior
        self.init_log = init_log


class _Pair:
    """Flows of an unordered frame pair ``p < q``: (h, w, 2) float32 and (h, w) confidences."""

    __slots__ = ("bwd", "conf_b", "conf_f", "fwd")

    def __init__(self, fwd: np.ndarray, bwd: np.ndarray, conf_f: np.ndarray, conf_b: np.ndarray) -> None:
        self.fwd, self.bwd, self.conf_f, self.conf_b = fwd, bwd, conf_f, conf_b


class VideoDepthEstimator:
    """Streaming implementation of :func:`estimate_video_depth` (see the module docstring).

    Args:
        poses: (N, 4, 4) camera-to-world poses of all frames.
        intrinsics: ``[fx, fy, cx, cy]`` of the input frames (or an :class:`Intrinsics`).
        prior: optional depth prior.
        initial_depth: optional per-frame initial depth (indexable by frame; an
            entry may be None; any resolution, resized to the working one;
            ``<= 0`` / non-finite = unknown), e.g. :class:`slam.depth.keyframes.KeyframeDepth`.
        options: :class:`VideoDepthOptions` or a mapping of its fields.
    """

    def __init__(self, poses: np.ndarray, intrinsics: Sequence[float] | Intrinsics, *,
                 prior: DepthPrior | None = None, initial_depth: Sequence[np.ndarray | None] | None = None,
                 options: VideoDepthOptions | Any = None, align: AlignOptions | Any = None) -> None:
        self.opt = opt = options_from(VideoDepthOptions, options, "depth.video", ignore=VIDEO_CONFIG_EXTRAS)
        self.align_opt = options_from(AlignOptions, align, "depth.prior.align")
        if opt.dis_preset not in PRESETS:
            raise InputError(f"depth.video.dis_preset must be one of {', '.join(PRESETS)}, got {opt.dis_preset!r}")
        if not opt.gaps or min(opt.gaps) < 1:
            raise InputError(f"depth.video.gaps must be positive frame gaps, got {list(opt.gaps)}")
        if opt.texture_mode not in ("tensor", "scalar"):
            raise InputError(f"depth.video.texture_mode must be tensor or scalar, got {opt.texture_mode!r}")
        if opt.chunk < 1:
            raise InputError(f"depth.video.chunk must be >= 1, got {opt.chunk}")
        self.poses = np.asarray(poses, dtype=np.float64)
        if self.poses.ndim != 3 or self.poses.shape[1:] != (4, 4):
            raise InputError(f"video depth: poses must be (N, 4, 4), got {self.poses.shape}")
        if not np.isfinite(self.poses).all():
            raise InputError("video depth: non-finite poses")
        self.K_in = np.asarray(intrinsics.as_array() if isinstance(intrinsics, Intrinsics) else intrinsics,
                               dtype=np.float64)
        self.prior = prior
        self.initial_depth = initial_depth
        self.gaps = tuple(sorted({int(g) for g in opt.gaps}))
        self.cgaps = tuple(sorted({int(g) for g in opt.consistency_gaps}))
        self.dev = torch.device(opt.device)
        self.dis = DISFlow(opt.dis_preset, opt.dis_finest_scale)
        self.inv_poses = invert(self.poses)
        self.stats: dict[str, float] = {"flow_s": 0.0, "prior_s": 0.0, "fuse_s": 0.0, "optimise_s": 0.0,
                                        "flow_pairs": 0}

    # ------------------------------------------------------------------ set-up
    def _setup(self, height: int, width: int) -> None:
        self.H, self.W = height, width
        self.w, self.h = working_size(width, height, self.opt.max_pixels)
        Kin = Intrinsics(*self.K_in, width=width, height=height)
        self.K = Kin.scaled(self.w, self.h).as_array()
        fx, fy, cx, cy = self.K
        v, u = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        self.grid_np = np.stack([u, v], -1)
        rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
        self.rays_np = rays.astype(np.float32)
        self.rays = torch.from_numpy(self.rays_np).to(self.dev)
        self.grid = torch.from_numpy(self.grid_np).to(self.dev)

    def _load(self, k: int, image: np.ndarray) -> _Frame:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"video depth: frame {k} must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        if image.shape[:2] != (self.H, self.W):
            raise InputError(f"video depth: frame {k} is {image.shape[1]}x{image.shape[0]} but frame 0 is "
                             f"{self.W}x{self.H}")
        small = image
        if (self.w, self.h) != (self.W, self.H):
            small = cv2.resize(image, (self.w, self.h), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        prior = None
        if self.prior is not None:
            t = time.perf_counter()
            inv, conf = self.prior.predict(image, k)
            prior = resize_prior(np.asarray(inv, np.float32), np.asarray(conf, np.float32), self.h, self.w)
            self.stats["prior_s"] += time.perf_counter() - t
        init_log = None
        if self.initial_depth is not None:
            d = self.initial_depth[k]
            if d is not None:
                d = np.asarray(d, dtype=np.float32)
                ok = np.isfinite(d) & (d > 0)
                inv, conf = resize_prior(np.where(ok, 1.0 / np.where(ok, d, 1.0), 0.0).astype(np.float32),
                                         ok.astype(np.float32), self.h, self.w)
                good = (conf > 0.5) & (inv > 0)
                init_log = np.where(good, -np.log(np.where(good, inv, 1.0)), np.nan).astype(np.float32)
        return _Frame(gray, self._texture(gray), prior, init_log)

    def _texture(self, gray: np.ndarray) -> np.ndarray:
        """(h, w, 4) flow metric ``(m11, m12, m22, strength)`` of a frame from the structure tensor
        ``S`` of its grey image in [0, 1] (Sobel gradients, ``texture_window`` box).

        ``tensor`` mode: the metric is ``S / lambda_max(S)`` (the identity on texture and corners,
        ``n n^T`` on an edge with normal ``n``: only the normal flow is measured there) and the
        strength ``lambda_max / (lambda_max + texture_eps)``; ``scalar`` mode: the identity and
        ``lambda_min / (lambda_min + texture_eps)``.  ``texture_eps = 0``: identity, strength 1.
        """
        h, w = gray.shape
        if not self.opt.texture_eps > 0:
            return np.broadcast_to(np.array([1.0, 0.0, 1.0, 1.0], np.float32), (h, w, 4)).copy()
        g = gray.astype(np.float32) / 255.0
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
        k = (int(self.opt.texture_window),) * 2
        sxx, syy, sxy = (cv2.boxFilter(a, -1, k) for a in (gx * gx, gy * gy, gx * gy))
        root = np.sqrt((sxx - syy) ** 2 + 4 * sxy * sxy)
        eps = self.opt.texture_eps
        if self.opt.texture_mode == "scalar":
            lmin = np.maximum(0.5 * (sxx + syy - root), 0.0)
            one, zero = np.ones_like(sxx), np.zeros_like(sxx)
            return np.stack([one, zero, one, lmin / (lmin + eps)], -1).astype(np.float32)
        lmax = 0.5 * (sxx + syy + root)
        d = np.maximum(lmax, 1e-12)
        flat = lmax <= 1e-12  # no gradient at all: identity metric, zero strength
        m11 = np.where(flat, 1.0, sxx / d)
        m12 = np.where(flat, 0.0, sxy / d)
        m22 = np.where(flat, 1.0, syy / d)
        return np.stack([m11, m12, m22, lmax / (lmax + eps)], -1).astype(np.float32)

    # -------------------------------------------------------------------- flow
    def _relative(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """``(R, t)`` of ``T_ji`` (camera i -> camera j)."""
        T = self.inv_poses[j] @ self.poses[i]
        return T[:3, :3], T[:3, 3]

    def _reproject_flow(self, i: int, j: int, log_depth: np.ndarray) -> np.ndarray:
        """(h, w, 2) flow i -> j induced by frame i's log depth and the poses (0 behind camera j)."""
        R, t = self._relative(i, j)
        X = self.rays_np * np.exp(log_depth)[..., None]
        Y = X @ R.T.astype(np.float32) + t.astype(np.float32)
        z = Y[..., 2]
        ok = z > 1e-6
        zs = np.where(ok, z, 1.0)
        fx, fy, cx, cy = self.K
        u = fx * Y[..., 0] / zs + cx
        v = fy * Y[..., 1] / zs + cy
        flow = np.stack([u, v], -1) - self.grid_np
        flow[~ok] = 0.0
        lim = 0.5 * max(self.w, self.h)  # DIS is started from the reprojection; keep absurd values out
        return np.clip(flow, -lim, lim).astype(np.float32)

    def _fb(self, fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
        """Forward-backward confidence (h, w) of ``fwd`` given ``bwd``."""
        mx = self.grid_np[..., 0] + fwd[..., 0]
        my = self.grid_np[..., 1] + fwd[..., 1]
        back = cv2.remap(bwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(1e4, 1e4))
        err = np.linalg.norm(fwd + back, axis=-1)
        inside = (mx >= -0.5) & (mx <= self.w - 0.5) & (my >= -0.5) & (my <= self.h - 0.5)
        conf = np.exp(-(err / self.opt.fb_sigma) ** 2) * inside
        conf[conf < self.opt.min_flow_conf] = 0.0
        return conf.astype(np.float32)

    def _pair(self, p: int, q: int, cur: dict[int, np.ndarray]) -> _Pair:
        """Flows between frames ``p < q`` (cached)."""
        hit = self.pairs.get((p, q))
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        init_f = init_b = None
        if self.opt.dis_init:
            init_f = self._reproject_flow(p, q, cur[p]) if p in cur else None
            init_b = self._reproject_flow(q, p, cur[q]) if q in cur else None
            prev = self.pairs.get((p - 1, p))
            if init_f is None and q == p + 1 and prev is not None:
                init_f = prev.fwd  # constant velocity: the previous frame pair's flow
        if init_b is None and init_f is not None:
            mx, my = self.grid_np[..., 0] + init_f[..., 0], self.grid_np[..., 1] + init_f[..., 1]
            init_b = -cv2.remap(init_f, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        a, b = self.frames[p].gray, self.frames[q].gray
        fwd = self.dis.calc(a, b, init_f)
        bwd = self.dis.calc(b, a, init_b)
        pair = _Pair(fwd, bwd, self._fb(fwd, bwd), self._fb(bwd, fwd))
        self.pairs[(p, q)] = pair
        self.stats["flow_s"] += time.perf_counter() - t0
        self.stats["flow_pairs"] += 1
        return pair

    def _flow(self, i: int, j: int, cur: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Flow i -> j (h, w, 2) and its confidence (h, w)."""
        if i < j:
            pr = self._pair(i, j, cur)
            return pr.fwd, pr.conf_f
        pr = self._pair(j, i, cur)
        return pr.bwd, pr.conf_b

    # ----------------------------------------------------------- triangulation
    def _triangulate(self, i: int, j: int, flow: np.ndarray, conf: np.ndarray
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pixel inverse depth of frame i from the flow i -> j (see the module docstring).

        Returns:
            ``rho*`` (h, w) >= 0, ``H`` (h, w) px^2 per unit inverse depth squared, and
            the pair weight ``w`` (h, w) in [0, 1].
        """
        R, t = self._relative(i, j)
        baseline = float(np.linalg.norm(t))  # on the host: no device sync per pair
        R = torch.as_tensor(R, dtype=torch.float32, device=self.dev)
        t = torch.as_tensor(t, dtype=torch.float32, device=self.dev)
        fx, fy, cx, cy = (float(v) for v in self.K)
        fl = torch.from_numpy(flow).to(self.dev)
        rx, ry = self.rays[..., 0], self.rays[..., 1]
        a = [R[r, 0] * rx + R[r, 1] * ry + R[r, 2] for r in range(3)]
        a = torch.stack(a, -1)
        xo = (self.grid[..., 0] + fl[..., 0] - cx) / fx
        yo = (self.grid[..., 1] + fl[..., 1] - cy) / fy
        b0, b1 = fx * (a[..., 0] - xo * a[..., 2]), fy * (a[..., 1] - yo * a[..., 2])
        c0, c1 = fx * (t[0] - xo * t[2]), fy * (t[1] - yo * t[2])
        A = torch.from_numpy(self.frames[i].texture).to(self.dev)
        a11, a12, a22, strength = A[..., 0], A[..., 1], A[..., 2], A[..., 3]

        def q(u0: torch.Tensor, u1: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
            return a11 * u0 * v0 + a12 * (u0 * v1 + u1 * v0) + a22 * u1 * v1

        den = q(c0, c1, c0, c1)
        num = q(b0, b1, c0, c1)
        pos = den > 1e-6 * (c0 * c0 + c1 * c1)
        rho = torch.where(pos, -num / torch.where(pos, den, torch.ones_like(den)), torch.zeros_like(den))
        # no point closer than 1/1000 of the baseline, nor (nearly) behind camera j
        rho = rho.clamp(0.0, 1e3 / max(baseline, 1e-12))
        zr = a[..., 2] + t[2] * rho  # depth in j / depth in i
        front = zr > 1e-3
        zs = torch.where(front, zr, torch.ones_like(zr))
        ex, ey = b0 + c0 * rho, b1 + c1 * rho
        e = torch.sqrt(q(ex, ey, ex, ey).clamp_min(0)) / zs
        H = den / (zs * zs)
        w = torch.from_numpy(conf).to(self.dev) * strength * torch.exp(-(e / self.opt.epi_sigma) ** 2) * front
        return rho, H * front, w

    def _fuse(self, rhos: list[torch.Tensor], Hs: list[torch.Tensor], ws: list[torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Huber-IRLS fusion of the pairs of every pixel (module docstring, 3.).

        Args:
            rhos, Hs, ws: per pair, ``rho*``, ``H`` and ``w`` (h, w) of :meth:`_triangulate`.
        Returns:
            ``rho_hat`` (h, w), the information ``I`` (h, w) on inverse depth (1 / (1/units)^2)
            and the pairs' rms disagreement (h, w) in working pixels.
        """
        if not rhos:
            z = torch.zeros(self.h, self.w, device=self.dev)
            return z, z.clone(), z.clone()
        rho, H, w = torch.stack(rhos), torch.stack(Hs), torch.stack(ws)
        W = w * H
        for it in range(int(self.opt.fuse_iters) + 1):
            S = W.sum(0)
            rho_hat = (W * rho).sum(0) / S.clamp_min(1e-30)
            if it == self.opt.fuse_iters:
                break
            r = torch.sqrt(H) * (rho - rho_hat).abs()
            W = w * H * torch.clamp(self.opt.fuse_huber / r.clamp_min(1e-12), max=1.0)
        wsum = w.sum(0)
        rms = torch.sqrt((w * H * (rho - rho_hat) ** 2).sum(0) / wsum.clamp_min(1e-12)) * (wsum > 0)
        var = self.opt.flow_sigma ** 2
        if self.opt.empirical_noise:
            var = torch.clamp(rms * rms, min=var)
        info = S / var
        if self.opt.geo_floor:  # model error floor on log depth: I_log <= geo_floor^-2
            info = info / (1.0 + info * (rho_hat * self.opt.geo_floor) ** 2)
        bad = ~(torch.isfinite(rho_hat) & torch.isfinite(info) & torch.isfinite(rms))
        if bool(bad.any()):
            zero = torch.zeros_like(info)
            rho_hat, info, rms = (torch.where(bad, zero, x) for x in (rho_hat, info, rms))
        return rho_hat, info, rms

    # ------------------------------------------------------------------- prior
    def _align_prior(self, k: int, rho_hat: torch.Tensor, H: torch.Tensor, floor: float
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Aligned prior of frame k: ``(log depth (h, w), confidence (h, w))``, or None without prior.

        Aligned to ``rho_hat`` (weights: inverse of the inverse-depth variance
        ``rho^2 (1 / I_log + prior_sigma^2)``, geometric plus the prior's own relative
        error, so that a few near pixels do not decide alone) when the geometry carries at least
        ``align_min_info`` of log-depth information in total, else to the initial
        depth, else with the previous frame's scale and shift, else to median depth 1.
        """
        fr = self.frames[k]
        if fr.prior is None:
            return None
        p, pc = fr.prior
        if not (pc > 0).any():
            return None
        Hn = H.cpu().numpy()
        rn = rho_hat.cpu().numpy()
        use = (pc > 0) & (Hn > 0) & (rn > floor)
        st, how = None, "geometry"
        Il = Hn * rn * rn
        if use.any() and float(Il[use].sum()) >= self.opt.align_min_info:
            # inverse-depth variance: geometric rho^2 / I_log plus the prior's own relative error
            wa = Il / (np.maximum(rn, floor) ** 2 * (1.0 + Il * self.opt.prior_sigma ** 2))
            st = align_scale_shift(p, rn, wa * pc * use, self.align_opt)
        elif fr.init_log is not None and np.isfinite(fr.init_log).mean() >= 0.05:
            ok = np.isfinite(fr.init_log)
            st, how = align_scale_shift(p, np.exp(-np.where(ok, fr.init_log, 0.0)), pc * ok, self.align_opt), "init"
        if st is None or not (np.isfinite(st[0]) and st[0] > 0):
            st, how = self.last_st, "previous"
        if st is None:
            m = float(np.median(p[pc > 0]))
            st, how = (1.0 / m if m > 0 else 1.0, 0.0), "median"
        self.last_st = st
        self.align_how[k] = how
        inv = st[0] * p + st[1]
        good = (pc > 0) & (inv > floor)
        lp = np.where(good, -np.log(np.where(good, inv, 1.0)), 0.0).astype(np.float32)
        return (torch.from_numpy(lp).to(self.dev),
                torch.from_numpy(np.where(good, pc, 0.0).astype(np.float32)).to(self.dev))

    def _prior_pixel_weight(self, Hlog: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """Per-pixel prior weight from the information ``Hlog`` and the prior confidence (module docstring, 4.)."""
        o = self.opt
        wmax = 1.0 / o.prior_sigma ** 2
        if o.prior_off_sigma is None:
            return wmax * conf
        rule = prior_weight_from_hessian(Hlog, {"mode": "linear", "w_max": 1.0, "h_thresh": o.prior_off_sigma ** -2})
        return wmax * conf * (o.prior_min_frac + (1.0 - o.prior_min_frac) * rule)

    # ---------------------------------------------------------------- estimate
    def _bounds(self, rho_hat: torch.Tensor, H: torch.Tensor, k: int) -> tuple[float, float]:
        """Inverse-depth bounds of frame k: ``min_disp_ratio`` and ``1 / min_disp_ratio`` times its median
        well-constrained inverse depth (that of the initial depth, or of the previous frame, when none)."""
        sel = (H * rho_hat * rho_hat > 1.0) & (rho_hat > 0)
        if int(sel.sum()) > 16:
            ref = float(rho_hat[sel].median())
        elif self.frames[k].init_log is not None and np.isfinite(self.frames[k].init_log).any():
            ref = float(np.exp(-np.nanmedian(self.frames[k].init_log)))
        else:
            ref = self.last_ref
        if ref > 0 and math.isfinite(ref):
            self.last_ref = ref
        return self.opt.min_disp_ratio * self.last_ref, self.last_ref / self.opt.min_disp_ratio

    def _estimate(self, k: int, rho_hat: torch.Tensor, H: torch.Tensor, rms: torch.Tensor) -> dict[str, Any]:
        """Targets and weights of frame k's per-pixel terms, and their per-pixel optimum ``l0``.

        ``l0`` minimises ``H (e^-l - rho_hat)^2 + w_p (l - l_p)^2 + w_i (l - l_i)^2`` per
        pixel by a few Gauss-Newton steps from the weighted mean of the log-domain targets.
        """
        o = self.opt
        floor, ceil = self._bounds(rho_hat, H, k)
        rho_hat = torch.nan_to_num(rho_hat, nan=0.0).clamp(0.0, ceil)
        lmin, lmax = -math.log(ceil), -math.log(floor)
        l_geo = -torch.log(rho_hat.clamp_min(floor))
        zero = torch.zeros_like(rho_hat)
        pr = self._align_prior(k, rho_hat, H, floor)
        lp, wp = (zero, zero) if pr is None else (pr[0].clamp(lmin, lmax), pr[1])
        fr = self.frames[k]
        li = wi = None
        if fr.init_log is not None:
            ok = np.isfinite(fr.init_log)
            li = torch.from_numpy(np.where(ok, fr.init_log, 0.0).astype(np.float32)).to(self.dev).clamp(lmin, lmax)
            wi = torch.from_numpy(ok.astype(np.float32)).to(self.dev) / o.init_sigma ** 2
        li_, wi_ = (zero, zero) if li is None else (li, wi)
        # start: the log-domain mean, with the geometry's information at its own estimate
        Hg = H * rho_hat.clamp_min(floor) ** 2
        if pr is not None:
            wp = self._prior_pixel_weight(Hg, wp)
        num = Hg * l_geo + wp * lp + wi_ * li_
        den = Hg + wp + wi_
        l = num / den.clamp_min(1e-30)
        # where nothing is known: a smooth fill of the known log depths (normalised convolution)
        lf = self._fill(l, den)
        wf = torch.full_like(den, 1.0 / o.fill_sigma ** 2)
        l = (num + wf * lf) / (den + wf)
        for _ in range(6):  # Gauss-Newton on the exact per-pixel objective
            rho = torch.exp(-l)
            g = -H * (rho - rho_hat) * rho + wp * (l - lp) + wi_ * (l - li_) + wf * (l - lf)
            h = H * rho * rho + wp + wi_ + wf
            step = torch.where(h > 0, g / h.clamp_min(1e-30), torch.zeros_like(g)).clamp(-1.0, 1.0)
            l = (l - step).clamp(lmin, lmax)
        Hlog = H * torch.exp(-2 * l)
        return {"rho_hat": rho_hat, "H": H, "Hlog": Hlog, "l0": l, "prior": None if pr is None else lp, "wp": wp,
                "li": li, "wi": wi, "lf": lf, "wf": wf, "rms": rms, "lmin": lmin, "lmax": lmax}

    def _confidence(self, l: np.ndarray, term: dict[str, Any]) -> np.ndarray:
        """(h, w) output confidence of a frame with final log depth ``l`` (h, w) (module docstring, 3.)."""
        o = self.opt
        Il = np.nan_to_num(term["Hlog"].cpu().numpy(), nan=0.0, posinf=1e12).clip(0.0, 1e12)
        conf = Il / (Il + o.conf_sigma ** -2)
        if o.conf_rms:
            conf = conf * np.exp(-(term["rms"].cpu().numpy() / o.conf_rms) ** 2)
        if o.conf_grad:
            g = np.hypot(cv2.Sobel(l, cv2.CV_32F, 1, 0), cv2.Sobel(l, cv2.CV_32F, 0, 1)) / 8.0
            conf = conf * np.exp(-cv2.dilate(g, np.ones((5, 5), np.uint8)) / o.conf_grad)
        return conf.astype(np.float32)

    def _fill(self, l: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Smooth fill (h, w) of log depths ``l`` known with weights ``w`` (h, w): normalised
        Gaussian convolution with sigma ``fill_radius`` x the image diagonal (the weighted mean
        of ``l`` where even that sees nothing)."""
        wn = w / w.max().clamp_min(1e-30)
        total = float(wn.sum())
        if total <= 0:
            return torch.full_like(l, -math.log(self.last_ref))
        mean = float((wn * l).sum()) / total
        sigma = max(1.0, self.opt.fill_radius * math.hypot(self.h, self.w))
        k = int(2 * math.ceil(2.5 * sigma) + 1)
        x = np.stack([(wn * l).cpu().numpy(), wn.cpu().numpy()])
        num, den = (cv2.GaussianBlur(a, (k, k), sigma, borderType=cv2.BORDER_REFLECT) for a in x)
        m = den / max(float(den.max()), 1e-30)
        out = np.where(m > 1e-4, num / np.maximum(den, 1e-30), mean)
        return torch.from_numpy(out.astype(np.float32)).to(self.dev)

    def _consistency_pairs(self, ids: list[int], done: dict[int, np.ndarray],
                           tri_w: dict[tuple[int, int], torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Batched data of the consistency term: source/target indices, rotated rays, translations, weights.

        Targets index the concatenation of the chunk's log depths and the fixed
        (already finished) frames listed in ``fixed``.
        """
        pos = {k: n for n, k in enumerate(ids)}
        fixed_ids: list[int] = []
        src, tgt, Rs, ts, ws = [], [], [], [], []
        for k in ids:
            for g in self.cgaps:
                for j in (k - g, k + g):
                    if (k, j) not in tri_w or (j not in pos and j not in done):
                        continue
                    if j in pos:
                        tgt.append(pos[j])
                    else:
                        if j not in fixed_ids:
                            fixed_ids.append(j)
                        tgt.append(len(ids) + fixed_ids.index(j))
                    src.append(pos[k])
                    R, t = self._relative(k, j)
                    Rs.append(R)
                    ts.append(t)
                    ws.append(tri_w[(k, j)])
        if not src:
            return None
        R = torch.as_tensor(np.stack(Rs), dtype=torch.float32, device=self.dev)  # (P, 3, 3)
        rx, ry = self.rays[..., 0], self.rays[..., 1]
        A = torch.stack([R[:, r, 0, None, None] * rx + R[:, r, 1, None, None] * ry + R[:, r, 2, None, None]
                         for r in range(3)], -1)  # (P, h, w, 3): R ray
        fixed = (torch.from_numpy(np.stack([done[j] for j in fixed_ids])).to(self.dev) if fixed_ids
                 else torch.zeros(0, self.h, self.w, device=self.dev))
        return {"src": torch.as_tensor(src, device=self.dev), "tgt": torch.as_tensor(tgt, device=self.dev),
                    "A": A, "t": torch.as_tensor(np.stack(ts), dtype=torch.float32, device=self.dev),
                    "w": torch.stack(ws), "fixed": fixed}

    def _cons_targets(self, cons: dict[str, torch.Tensor], l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target log depths of the consistency pairs at the current log depths ``l`` (n, h, w).

        Returns:
            ``target`` (P, h, w): the target frame's log depth (bilinear, pixel centres at
            integers) where each source pixel's 3D point lands, and ``inside`` (P, h, w)
            1 where that point is in front of and inside the target frame, else 0.
        """
        fx, fy, cx, cy = (float(v) for v in self.K)
        D = torch.exp(l)[cons["src"]]
        Y = cons["A"] * D[..., None] + cons["t"][:, None, None, :]
        z = Y[..., 2]
        front = z > 1e-6
        zs = torch.where(front, z, torch.ones_like(z))
        u = fx * Y[..., 0] / zs + cx
        v = fy * Y[..., 1] / zs + cy
        inside = (front & (u >= 0) & (u <= self.w - 1) & (v >= 0) & (v <= self.h - 1)).float()
        grid = torch.stack([2 * u / (self.w - 1) - 1, 2 * v / (self.h - 1) - 1], -1).clamp(-2, 2)
        lj = torch.cat([l, cons["fixed"]])[cons["tgt"]]
        target = torch.nn.functional.grid_sample(lj[:, None], grid, mode="bilinear", padding_mode="border",
                                                 align_corners=True)[:, 0]
        return target, inside

    def _optimise(self, ids: list[int], terms: list[dict[str, Any]], done: dict[int, np.ndarray],
                  tri_w: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
        """Adam on the chunk's log depths (n, h, w) (see the module docstring)."""
        o = self.opt
        n = len(ids)
        l = torch.stack([t["l0"] for t in terms]).clone().requires_grad_(True)
        lo = torch.tensor([t["lmin"] for t in terms], dtype=l.dtype, device=self.dev)[:, None, None]
        hi = torch.tensor([t["lmax"] for t in terms], dtype=l.dtype, device=self.dev)[:, None, None]
        if o.iters <= 0:
            return l.detach()
        zero = torch.zeros(self.h, self.w, device=self.dev)

        def stack(key: str) -> torch.Tensor:
            return torch.stack([t[key] if t[key] is not None else zero for t in terms])

        rho_hat, H, lp, wp, li, wi, lf, wf = (stack(k) for k in ("rho_hat", "H", "prior", "wp", "li", "wi", "lf", "wf"))
        any_p = any(t["prior"] is not None for t in terms)
        any_i = any(t["li"] is not None for t in terms)
        grey = torch.from_numpy(np.stack([self.frames[k].grey for k in ids])).to(self.dev)
        gx = torch.exp(-(grey[:, :, 1:] - grey[:, :, :-1]).abs() / o.edge_sigma)
        gy = torch.exp(-(grey[:, 1:, :] - grey[:, :-1, :]).abs() / o.edge_sigma)
        # smoothness on the log depth, or on its difference to the prior's where the prior has values
        pdx = torch.zeros_like(gx)
        pdy = torch.zeros_like(gy)
        if any_p and o.smooth_prior_gradients:
            pv = (wp > 0).float()
            pdx = (lp[:, :, 1:] - lp[:, :, :-1]) * pv[:, :, 1:] * pv[:, :, :-1]
            pdy = (lp[:, 1:, :] - lp[:, :-1, :]) * pv[:, 1:, :] * pv[:, :-1, :]
        cons = self._consistency_pairs(ids, done, tri_w) if o.consistency_sigma else None
        npix = float(n * self.h * self.w)
        opt = torch.optim.Adam([l], lr=o.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(o.iters), eta_min=o.lr / 10)
        for it in range(int(o.iters)):
            opt.zero_grad(set_to_none=True)
            loss = (H * (torch.exp(-l) - rho_hat) ** 2).sum()
            if any_p:
                loss = loss + (wp * _huber(l - lp, o.huber_k * o.prior_sigma)).sum()
            if any_i:
                loss = loss + (wi * _huber(l - li, o.huber_k * o.init_sigma)).sum()
            if o.fill_sigma:
                loss = loss + (wf * (l - lf) ** 2).sum()
            if o.smooth_weight > 0:
                dx = l[:, :, 1:] - l[:, :, :-1] - pdx
                dy = l[:, 1:, :] - l[:, :-1, :] - pdy
                sm = (gx * torch.sqrt(dx * dx + 1e-6)).sum() + (gy * torch.sqrt(dy * dy + 1e-6)).sum()
                loss = loss + o.smooth_weight * sm
            if cons is not None:
                if it % max(1, int(o.consistency_regrid)) == 0:
                    with torch.no_grad():
                        target, inside = self._cons_targets(cons, l)
                        cw = cons["w"] * inside
                D = torch.exp(l)[cons["src"]]  # (P, h, w)
                z = cons["A"][..., 2] * D + cons["t"][:, 2, None, None]
                r = torch.log(z.clamp_min(1e-6)) - target
                cs = float(o.consistency_sigma)
                loss = loss + (cw * _huber(r, o.huber_k * cs)).sum() / cs ** 2
            (loss / npix).backward()
            l.grad.nan_to_num_(0.0, 0.0, 0.0)  # a degenerate pixel must not poison the chunk
            opt.step()
            sched.step()
            with torch.no_grad():
                l.copy_(torch.maximum(torch.minimum(l, hi), lo))
        return l.detach()

    # ------------------------------------------------------------------ driver
    def run(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(index, depth (H, W) float32, confidence (H, W) float32)`` for every frame, in order.

        Frames are read lazily from ``frames`` (only the current chunk and its
        neighbours are held); frames beyond ``len(poses)`` are not read.

        Raises:
            InputError: fewer frames than poses, inconsistent frame sizes, or a
                single frame without prior or initial depth.
        """
        o = self.opt
        N = len(self.poses)
        it = iter(frames)
        self.frames: dict[int, _Frame] = {}
        self.pairs: dict[tuple[int, int], _Pair] = {}
        self.last_st: tuple[float, float] | None = None
        self.align_how: dict[int, str] = {}
        self.last_ref = 1.0
        done: dict[int, np.ndarray] = {}
        loaded = 0
        gmax = max(self.gaps)
        if N == 0:
            return
        for a in range(0, N, o.chunk):
            b = min(N, a + o.chunk)
            while loaded < min(N, b + gmax):
                try:
                    img = np.asarray(next(it))
                except StopIteration:
                    raise InputError(f"video depth: {N} poses but only {loaded} frames") from None
                if loaded == 0:
                    self._setup(img.shape[0], img.shape[1])
                self.frames[loaded] = self._load(loaded, img)
                loaded += 1
            ids = list(range(a, b))
            cur: dict[int, np.ndarray] = dict(done)
            for k in ids:
                if self.frames[k].init_log is not None and np.isfinite(self.frames[k].init_log).mean() > 0.5:
                    il = self.frames[k].init_log
                    cur[k] = np.where(np.isfinite(il), il, np.nanmedian(il)).astype(np.float32)
            tri: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {k: [] for k in ids}
            tri_w: dict[tuple[int, int], torch.Tensor] = {}
            terms: list[dict[str, Any]] = []
            for g in self.gaps:
                for k in ids:
                    for j in (k - g, k + g):
                        if 0 <= j < N:
                            flow, conf = self._flow(k, j, cur)
                            t0 = time.perf_counter()
                            rho, H, w = self._triangulate(k, j, flow, conf)
                            tri[k].append((rho, H, w))
                            tri_w[(k, j)] = w
                            self.stats["fuse_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                terms = []
                for k in ids:
                    rho_hat, H, rms = self._fuse([x[0] for x in tri[k]], [x[1] for x in tri[k]],
                                                 [x[2] for x in tri[k]])
                    terms.append(self._estimate(k, rho_hat, H, rms))
                    cur[k] = terms[-1]["l0"].cpu().numpy()
                self.stats["fuse_s"] += time.perf_counter() - t0
            if N == 1 and terms[0]["prior"] is None and terms[0]["li"] is None:
                raise InputError("video depth of a single frame needs a depth prior or an initial depth")
            t0 = time.perf_counter()
            logd = self._optimise(ids, terms, done, tri_w)
            self.stats["optimise_s"] += time.perf_counter() - t0
            for n_, k in enumerate(ids):
                lk = logd[n_].cpu().numpy().astype(np.float32)
                done[k] = lk
                conf = self._confidence(lk, terms[n_])
                if (self.w, self.h) != (self.W, self.H):
                    lk = cv2.resize(lk, (self.W, self.H), interpolation=cv2.INTER_LINEAR)
                    conf = cv2.resize(conf, (self.W, self.H), interpolation=cv2.INTER_LINEAR)
                if k in self.align_how:
                    key = f"prior_aligned_{self.align_how.pop(k)}"
                    self.stats[key] = self.stats.get(key, 0) + 1
                yield k, np.exp(lk).astype(np.float32), np.clip(conf, 0.0, 1.0)
            # forget what later chunks no longer need
            for key in [key for key in self.pairs if key[1] < b]:
                del self.pairs[key]
            for k in [k for k in done if k < b - gmax]:
                del done[k]
            for k in [k for k in self.frames if k < b - gmax]:
                del self.frames[k]


def iter_video_depth(frames: Iterable[np.ndarray], poses: np.ndarray, intrinsics: Sequence[float] | Intrinsics, *,
                     prior: DepthPrior | None = None, initial_depth: Sequence[np.ndarray | None] | None = None,
                     options: VideoDepthOptions | Any = None, align: AlignOptions | Any = None,
                     stats: dict | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Streaming :func:`estimate_video_depth`: yields ``(index, depth (H, W), confidence (H, W))`` per frame.

    ``stats``, when given, is filled with timings and counts once the iterator is exhausted.
    """
    est = VideoDepthEstimator(poses, intrinsics, prior=prior, initial_depth=initial_depth, options=options,
                              align=align)
    yield from est.run(frames)
    if stats is not None:
        stats.update(est.stats)
        stats["working_size"] = (est.w, est.h) if hasattr(est, "w") else None


def estimate_video_depth(frames: Iterable[np.ndarray], poses: np.ndarray, intrinsics: Sequence[float] | Intrinsics,
                         *, prior: DepthPrior | None = None,
                         initial_depth: Sequence[np.ndarray | None] | None = None,
                         options: VideoDepthOptions | Any = None, align: AlignOptions | Any = None,
                         progress: Callable[[int, int], None] | None = None) -> VideoDepth:
    """Dense, temporally consistent depth of every frame with fixed poses and intrinsics.

    Args:
        frames: the N frames, (H, W, 3) uint8 RGB each (list or iterator; read lazily).
        poses: (N, 4, 4) camera-to-world poses, OpenCV camera axes (x right, y down, z forward).
        intrinsics: ``[fx, fy, cx, cy]`` in pixels of the frames (pixel centres at integer coordinates).
        prior: optional monocular prior (:mod:`slam.depth.prior`), aligned in scale and shift per frame.
        initial_depth: optional per-frame depth in the poses' units (e.g.
            :class:`slam.depth.keyframes.KeyframeDepth`); None entries allowed.
        options: :class:`VideoDepthOptions` or a mapping (``configs/depth/video.yaml``).
        align: :class:`~slam.depth.align.AlignOptions` of the prior alignment.
        progress: optional callback ``(frames done, N)``.
    Returns:
        :class:`VideoDepth` with depth (N, H, W) float32 in the poses' units and confidence (N, H, W).
    """
    t0 = time.perf_counter()
    stats: dict = {}
    depth, conf = None, None
    N = len(poses)
    for k, d, c in iter_video_depth(frames, poses, intrinsics, prior=prior, initial_depth=initial_depth,
                                    options=options, align=align, stats=stats):
        if depth is None:
            depth = np.zeros((N,) + d.shape, np.float32)
            conf = np.zeros((N,) + d.shape, np.float32)
        depth[k], conf[k] = d, c
        if progress is not None:
            progress(k + 1, N)
    stats["wall_s"] = time.perf_counter() - t0
    if depth is None:
        depth = conf = np.zeros((0, 0, 0), np.float32)
    return VideoDepth(depth, conf, tuple(stats.get("working_size") or (0, 0)), stats)
