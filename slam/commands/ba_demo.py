"""``slam ba-demo``: dense BA on a generated problem, printing its convergence."""
from __future__ import annotations

import argparse

HELP = "dense bundle adjustment on a generated problem with ground truth; prints its convergence"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Hydra overrides of configs/ba_demo.yaml, e.g. problem.frames=25 ba.iters=5 device=cuda")


def main(args: argparse.Namespace) -> int:
    import time

    import torch

    from slam.ba.dense_ba import DenseBA
    from slam.ba.synthetic import make_problem
    from slam.config import load_config, lm_options
    from slam.geometry.lie import geodesic_errors

    cfg = load_config("ba_demo", args.overrides)
    pc = cfg.problem
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    p = make_problem(pc.frames, pc.edges, pc.height, pc.width, noise_px=pc.noise_px,
                     outlier_fraction=pc.outlier_fraction, focal_error=pc.focal_error,
                     rot_noise_deg=pc.rot_noise_deg, trans_noise=pc.trans_noise, seed=pc.seed,
                     dtype=dtype, device=cfg.device)
    print(f"problem: {pc.frames} keyframes, {p.ii.numel()} edges, {pc.height}x{pc.width} inverse depths, "
          f"{pc.noise_px} px noise, {100 * pc.outlier_fraction:.0f}% outliers, focal {100 * pc.focal_error:+.0f}%")
    opts = lm_options(cfg.ba)
    ba = DenseBA(p.ii, p.jj, p.target, p.weight, pc.frames, fixed=cfg.fixed,
                 optimize_focal=cfg.optimize_focal, options=opts)

    def report(tag: str, poses, K, cost: float, dt: float | None = None) -> None:
        rot, tr = geodesic_errors(poses, p.poses_gt)
        ferr = 100 * (K[0].item() / p.K_gt[0].item() - 1)
        t = f"  {1000 * dt:7.1f} ms" if dt is not None else ""
        print(f"{tag:>6}  cost {cost:12.5g}  rot err {rot.max().item():9.5f} deg  "
              f"trans err {tr.max().item() / p.scene_scale:9.2e} x scene  focal err {ferr:+8.4f}%{t}")

    poses, disps, K = p.poses_init, p.disps_init, p.K_init
    report("start", poses, K, ba.cost(poses, disps, K))
    one = lm_options(cfg.ba)
    one.iters = 1
    ba.opt = one
    total = 0.0
    for it in range(opts.iters):
        t = time.perf_counter()
        res = ba.run(poses, disps, K)
        dt = time.perf_counter() - t
        total += dt
        improved = res.costs[-1] < res.costs[0]
        poses, disps, K = res.poses, res.disps, res.intrinsics
        report(f"it {it + 1}", poses, K, res.costs[-1], dt)
        if not improved or (res.costs[0] - res.costs[-1]) <= opts.rel_tol * res.costs[0]:
            break
    print(f"converged in {total:.2f} s")
    return 0
