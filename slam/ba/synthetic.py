"""Generated bundle-adjustment problems with exact ground truth.

Used by the tests, ``tools/bench_ba.py`` and ``slam ba-demo``.  The scene is a
smooth random inverse-depth field seen by cameras on a gently curving path;
targets are the exact reprojections plus Gaussian pixel noise, and a fraction
of them are gross outliers whose weights are set to zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import pypose as pp
import torch

from slam.geometry.projective import project_edges


@dataclass
class SyntheticBAProblem:
    """A BA problem and its ground truth (all tensors on one device/dtype).

    Attributes:
        poses_gt, poses_init: (N, 7) SE3 world-to-camera.
        disps_gt, disps_init: (N, H, W) inverse depths.
        K_gt, K_init: (4,) intrinsics ``[fx, fy, cx, cy]``.
        ii, jj: (E,) edges.  target, weight: (E, H, W, 2).
        outliers: (E, H, W) bool, the corrupted targets.
        scene_scale: mean scene depth (metres), the unit of translation errors.
    """

    poses_gt: pp.LieTensor
    poses_init: pp.LieTensor
    disps_gt: torch.Tensor
    disps_init: torch.Tensor
    K_gt: torch.Tensor
    K_init: torch.Tensor
    ii: torch.Tensor
    jj: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    outliers: torch.Tensor
    scene_scale: float


def smooth_field(n: int, height: int, width: int, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """(n, H, W) smooth random field in [0, 1] (a sum of low-frequency bumps)."""
    coarse = torch.rand(n, 1, max(2, height // 6), max(2, width // 6), generator=g, dtype=dtype)
    f = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[:, 0]
    f = f - f.amin(dim=(1, 2), keepdim=True)
    return f / f.amax(dim=(1, 2), keepdim=True).clamp(min=1e-6)


def look_at(centres: torch.Tensor, target: torch.Tensor) -> pp.LieTensor:
    """(n, 7) camera-to-world poses at ``centres`` (n, 3) whose z axis points at
    ``target`` (3,), with the image y axis pointing down (world y is down)."""
    z = torch.nn.functional.normalize(target - centres, dim=-1)
    down = torch.tensor([0.0, 1.0, 0.0], dtype=centres.dtype).expand_as(z)
    x = torch.nn.functional.normalize(torch.cross(down, z, dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], -1)
    T = torch.eye(4, dtype=centres.dtype).repeat(len(centres), 1, 1)
    T[:, :3, :3] = R
    T[:, :3, 3] = centres
    return pp.mat2SE3(T)


def random_edges(n: int, n_edges: int, g: torch.Generator, max_gap: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_edges`` distinct directed edges (i != j), preferring nearby frames.

    All pairs are used when ``n_edges >= n (n - 1)``; otherwise pairs with a
    frame gap up to ``max_gap`` are sampled (all adjacent pairs always kept).
    """
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    keep = ii != jj
    if max_gap is not None:
        keep &= (ii - jj).abs() <= max_gap
    ii, jj = ii[keep], jj[keep]
    if n_edges >= ii.numel():
        return ii, jj
    adjacent = (ii - jj).abs() == 1
    rest = torch.nonzero(~adjacent)[:, 0]
    pick = rest[torch.randperm(rest.numel(), generator=g)[: max(0, n_edges - int(adjacent.sum()))]]
    sel = torch.cat([torch.nonzero(adjacent)[:, 0], pick])[:n_edges]
    sel = sel.sort().values
    return ii[sel], jj[sel]


def make_problem(n_frames: int = 8, n_edges: int | None = None, height: int = 30, width: int = 40, *,
                 noise_px: float = 0.5, outlier_fraction: float = 0.1, rot_noise_deg: float = 1.0,
                 trans_noise: float = 0.05, disp_noise: float = 0.1, focal_error: float = 0.0,
                 arc_step_deg: float = 4.0, focal_factor: float = 1.0,
                 depth_range: tuple[float, float] = (2.0, 5.0),
                 seed: int = 0, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> SyntheticBAProblem:
    """Build a synthetic dense BA problem.

    Args:
        n_frames, n_edges: graph size (``None`` = all ordered pairs).
        height, width: inverse-depth map size (feature resolution).
        noise_px: std of the Gaussian noise added to the targets (pixels).
        outlier_fraction: share of targets replaced by random pixels, with weight 0.
        rot_noise_deg, trans_noise: perturbation of the initial poses (degrees;
            fraction of the scene scale).  The first two poses stay exact.
        disp_noise: relative perturbation of the initial inverse depths.
        focal_error: relative error of the initial focal (e.g. 0.2).
        arc_step_deg: angle between consecutive cameras on their arc around the scene.
    """
    g = torch.Generator().manual_seed(seed)
    f = focal_factor * width
    K = torch.tensor([f, f, (width - 1) / 2, (height - 1) / 2], dtype=dtype)
    depth = depth_range[0] + (depth_range[1] - depth_range[0]) * smooth_field(n_frames, height, width, g, dtype)
    disps = 1.0 / depth
    scale = float(depth.mean())
    # cameras on an arc around the scene centre, looking at it (strong perspective
    # change, which makes the focal length observable), with a little vertical wobble
    k = torch.arange(n_frames, dtype=dtype)
    theta = torch.deg2rad(torch.tensor(arc_step_deg, dtype=dtype)) * (k - (n_frames - 1) / 2)
    radius = scale
    centres = torch.stack([radius * torch.sin(theta), 0.05 * scale * torch.sin(2.0 * k),
                           radius * (1.0 - torch.cos(theta))], -1)
    look = torch.tensor([0.0, 0.0, radius], dtype=dtype)
    T_wc = look_at(centres, look)
    poses = T_wc.Inv()
    if n_edges is None:
        n_edges = n_frames * (n_frames - 1)
    ii, jj = random_edges(n_frames, n_edges, g, max_gap=None if n_frames <= 12 else 6)
    pr = project_edges(poses, disps, K, ii, jj)
    noise = noise_px * torch.randn(pr.coords.shape, generator=g, dtype=dtype)
    target = pr.coords + noise
    E = ii.numel()
    out = torch.rand(E, height, width, generator=g, dtype=dtype) < outlier_fraction
    junk = torch.rand(E, height, width, 2, generator=g, dtype=dtype) * torch.tensor([width, height], dtype=dtype)
    target = torch.where(out[..., None], junk, target)
    inview = (pr.coords[..., 0] > -0.5) & (pr.coords[..., 0] < width - 0.5) & \
             (pr.coords[..., 1] > -0.5) & (pr.coords[..., 1] < height - 0.5) & pr.valid
    weight = (inview & ~out).to(dtype)[..., None].expand(-1, -1, -1, 2).clone()
    # perturbed start
    xi = torch.zeros(n_frames, 6, dtype=dtype)
    xi[:, :3] = trans_noise * scale * torch.randn(n_frames, 3, generator=g, dtype=dtype)
    xi[:, 3:] = torch.deg2rad(torch.tensor(rot_noise_deg, dtype=dtype)) * torch.randn(n_frames, 3, generator=g, dtype=dtype)
    xi[:2] = 0.0
    poses_init = pp.se3(xi).Exp() * poses
    disps_init = disps * (1.0 + disp_noise * torch.randn(disps.shape, generator=g, dtype=dtype)).clamp(min=0.5)
    K_init = K.clone()
    K_init[:2] *= 1.0 + focal_error
    to = dict(device=device)
    return SyntheticBAProblem(
        poses_gt=pp.SE3(poses.tensor().to(**to)), poses_init=pp.SE3(poses_init.tensor().to(**to)),
        disps_gt=disps.to(**to), disps_init=disps_init.to(**to), K_gt=K.to(**to), K_init=K_init.to(**to),
        ii=ii.to(**to), jj=jj.to(**to), target=target.to(**to), weight=weight.to(**to),
        outliers=out.to(**to), scene_scale=scale)
