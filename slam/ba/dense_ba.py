"""Dense bundle adjustment: Levenberg-Marquardt over keyframe poses, per-pixel
inverse depths and (optionally) one shared focal length.

Problem
-------
Variables: N world-to-camera poses ``G`` (SE3), inverse-depth maps ``d``
(N, H, W) and optionally the focal ``f`` (``fx = f``, ``fy = a f``).  For each
frame-graph edge ``(i, j)`` and pixel ``p`` of frame i the residual is

    r_ijp = target_ijp - pi(G_j G_i^{-1}, d_ip)            (2-vector, pixels)

weighted by per-pixel, per-coordinate weights ``w_ijp`` (zero for outliers or
invalid points).  An optional prior ``alpha_p (d_p - d_prior_p)^2`` pulls
inverse depths towards a monocular estimate.  The cost is
``sum w rho(r^2) + sum alpha (d - d_prior)^2`` with ``rho`` the identity, or
a robust loss of each residual coordinate (``LMOptions.robust``: Huber or
Cauchy at scale ``robust_px``), minimised by iteratively reweighted least
squares: every linearisation multiplies the weights by ``rho'(r^2)`` at the
current residuals, and steps are accepted on the robust cost.  Per-pixel
depths absorb a wrong correspondence along its epipolar line on one edge, but
not on the other edges of the same pixel: confident gross errors (aliasing
that passes a forward-backward check) show up as residuals there.

Solver
------
Each iteration linearises once, then solves the damped normal equations

    [ B + lambda diag(B) + eps    E                        ] [dx]   [v]
    [ E^T                         C (1 + lambda) + eta     ] [dd] = [w]

where ``x`` stacks the free poses' left twists ``[tau, phi]`` (and the focal).
The depth block C is diagonal, so it is eliminated with the Schur complement
``S = B - E C^{-1} E^T``; ``S`` is dense (6N+1)^2 and solved by Cholesky.
The step is accepted when the cost decreases (lambda shrinks) and otherwise
rejected and re-solved with a larger lambda, without re-linearising.

Gauge: the poses listed as fixed (by default the first one) are held.
Inverse depths are clamped to at least ``min_disp`` after each step.

Two drivers share this one linearisation and Schur solve
(:meth:`DenseBA.linearize`, :meth:`DenseBA.solve`, :meth:`DenseBA.apply`):

* :meth:`DenseBA.run` / :func:`bundle_adjust`: adaptive Levenberg-Marquardt
  on detached copies of the inputs (the SLAM system's solver);
* :meth:`DenseBA.gauss_newton` / :func:`ba_steps`: a fixed number of damped
  Gauss-Newton steps that keeps the autograd graph, so that a loss on the
  result back-propagates to ``target``, ``weight``, the per-pixel depth
  damping ``eta`` (the network's aggregate head) and the initial estimate
  (training of the correspondence network, as in DROID-SLAM).  ``eta``
  (N, H, W) is added to the depth block: ``C (1 + lambda) + eps + eta``.

The assembly uses only batched tensor ops and ``index_add_`` (no Python loops
over pixels or edges) and runs on whatever device/dtype the inputs live on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pypose as pp
import torch

from slam.geometry.lie import retract
from slam.geometry.projective import DEFAULT_MIN_DEPTH_RATIO, project_edges


@dataclass
class LMOptions:
    """Tunables of the solver.

    The defaults are the plain solver (least squares, as the unit tests and
    :func:`bundle_adjust` use it); the system's settings, with comments, are
    ``configs/ba/default.yaml``, which differs in ``robust`` (``cauchy``) and
    ``robust_px`` (0.1 feature px).
    """

    iters: int = 10                #: linearisations (LM iterations)
    lambda_init: float = 1e-4      #: initial LM damping (relative to the diagonal)
    lambda_up: float = 10.0        #: damping multiplier after a rejected step
    lambda_down: float = 0.1       #: damping multiplier after an accepted step
    lambda_max: float = 1e6        #: give up the iteration beyond this damping
    max_tries: int = 8             #: re-solves per iteration before giving up
    eps_pose: float = 1e-6         #: absolute damping on the pose/focal block
    eps_disp: float = 1e-6         #: absolute damping on the depth block
    min_disp: float = 1e-6         #: inverse depths are clamped to >= this (0 = points at infinity)
    min_depth_ratio: float = DEFAULT_MIN_DEPTH_RATIO  #: validity threshold (see projective)
    rel_tol: float = 1e-8          #: stop when the relative cost decrease is below this
    adaptive: bool = True          #: accept/reject steps; False = plain damped Gauss-Newton
    focal_max_std: float = 0.03    #: hold the focal when its relative marginal std exceeds this (0: never)
    focal_max_step: float = 0.2    #: largest relative focal change per step
    focal_noise_px: float = 0.1    #: smallest correspondence noise (feature px, unit weight) assumed by focal_std
    focal_range: tuple[float, float] = (0.2, 5.0)  #: focal bounds in multiples of the larger image side
    robust: str = "none"           #: robust loss on each residual coordinate: none | huber | cauchy
    robust_px: float = 1.0         #: its scale (feature px): residuals beyond it lose weight

    def __post_init__(self) -> None:
        if self.robust not in ("none", "huber", "cauchy"):
            raise ValueError(f"unknown robust loss {self.robust!r}; expected none, huber or cauchy")
        if not self.robust_px > 0:
            raise ValueError(f"robust_px must be positive, got {self.robust_px}")


@dataclass
class BAResult:
    """Output of :func:`bundle_adjust`.

    Attributes:
        poses: (N, 7) SE3 world-to-camera.
        disps: (N, H, W) inverse depths.
        intrinsics: (4,) ``[fx, fy, cx, cy]``.
        costs: cost after each accepted iteration (index 0 = initial cost).
        iterations: number of linearisations done.
        focal_information: the focal entry of the Schur complement at the last
            linearisation (how strongly the data constrain ``f``; 0 if fixed).
        focal_std: relative marginal standard deviation of the focal at the
            solution (:meth:`DenseBA.focal_std`; nan when not estimated).
        focal_held: True when the focal was to be estimated but held because
            ``focal_std`` exceeded ``LMOptions.focal_max_std``.
    """

    poses: pp.LieTensor
    disps: torch.Tensor
    intrinsics: torch.Tensor
    costs: list[float] = field(default_factory=list)
    iterations: int = 0
    focal_information: float = 0.0
    focal_std: float = float("nan")
    focal_held: bool = False


def _group_slots(ii: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """Rank of each edge among the edges leaving the same frame, and the max out-degree."""
    E = ii.numel()
    order = torch.argsort(ii * (E + 1) + torch.arange(E, device=ii.device))
    counts = torch.bincount(ii, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(ii)
    rank[order] = torch.arange(E, device=ii.device) - starts[ii[order]]
    return rank, int(counts.max().item()) if E else 0


def _cholesky(A: torch.Tensor, tries: int = 6) -> torch.Tensor | None:
    """Lower Cholesky factor of the symmetric (n, n) ``A``, or None.

    Rounding can leave a reduced BA system slightly indefinite along its
    near-null directions (the monocular scale); a diagonal jitter growing from
    1e-9 of the mean diagonal keeps the factorisation a Cholesky (LAPACK's
    least-squares and eigen drivers are not reproducible from run to run on
    such systems, and the LM iterations then end in different minima).
    """
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return L
    jitter = 1e-9 * float(torch.diagonal(A).detach().abs().mean()) + 1e-12  # a constant, also in training
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    for _ in range(tries):
        L, info = torch.linalg.cholesky_ex(A + jitter * eye)
        if int(info) == 0:
            return L
        jitter *= 100.0
    return None


class DenseBA:
    """A dense BA problem with a fixed frame graph; see the module docstring.

    Args:
        ii, jj: (E,) long edge endpoints (source i, target j), ``i != j``.
        target: (E, H, W, 2) target pixel coordinates in frame j.
        weight: (E, H, W, 2) non-negative weights (0 = ignore).
        n_frames: N.
        fixed: indices (or a bool mask of shape (N,)) of poses held constant.
        optimize_focal: also estimate the shared focal length.
        disp_prior: optional (N, H, W) prior inverse depths.
        prior_weight: optional (N, H, W) or scalar weight alpha of the prior, or
            a function ``(C, disps, C_geo) -> alpha`` (all (N, H, W)) of the
            depth Hessian diagonal ``C`` (with the robust loss's IRLS factors)
            and ``C_geo`` (without them: the parallax the measurements offer
            whatever the current residuals), evaluated once, at the first
            linearisation (MegaSaM's rule: weak parallax, strong prior).
        options: :class:`LMOptions`.
        optimize_disps: False holds the inverse depths constant (pose-only
            refinement, e.g. the trajectory filler).
    """

    def __init__(self, ii: torch.Tensor, jj: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                 n_frames: int, fixed: torch.Tensor | list[int] | int = 1, optimize_focal: bool = False,
                 disp_prior: torch.Tensor | None = None, prior_weight: torch.Tensor | float | None = None,
                 options: LMOptions | None = None, optimize_disps: bool = True) -> None:
        if (ii == jj).any():
            raise ValueError("edges must join two different frames")
        self.ii, self.jj = ii.long(), jj.long()
        self.target, self.weight = target, weight
        E = self.ii.numel()
        self._target_cf = target.reshape(E, -1, 2).transpose(1, 2).contiguous()  # (E, 2, P)
        self._weight_cf = weight.reshape(E, -1, 2).transpose(1, 2).contiguous()
        self.N = n_frames
        self.opt = options or LMOptions()
        self.optimize_focal = optimize_focal
        self.optimize_disps = optimize_disps
        dev = target.device
        mask = torch.zeros(n_frames, dtype=torch.bool, device=dev)
        if isinstance(fixed, int):
            mask[:fixed] = True
        elif isinstance(fixed, torch.Tensor) and fixed.dtype == torch.bool:
            mask = fixed.to(dev).clone()
        else:
            mask[torch.as_tensor(fixed, dtype=torch.long, device=dev)] = True
        self.fixed_mask = mask
        self.disp_prior = disp_prior if optimize_disps else None  # held depths: the prior is a constant
        if prior_weight is not None and not torch.is_tensor(prior_weight) and not callable(prior_weight):
            prior_weight = torch.as_tensor(float(prior_weight), dtype=target.dtype, device=dev)
        self.prior_weight = prior_weight if self.disp_prior is not None else None
        # Free variables of the reduced system: 6 per free pose, then the focal.
        D = 6 * n_frames + 1
        free = torch.arange(D, device=dev).view(-1)
        keep = torch.ones(D, dtype=torch.bool, device=dev)
        keep[:-1] = ~mask.repeat_interleave(6)
        keep[-1] = optimize_focal
        self.free = free[keep]
        self.D = D
        self.rank, self.maxdeg = _group_slots(self.ii, n_frames)
        self._build_index()

    # ------------------------------------------------------------------ indexing
    def _build_index(self) -> None:
        """Global variable index of every row of the per-frame E blocks and per-edge H blocks."""
        N, D, dev = self.N, self.D, self.ii.device
        S = 1 + self.maxdeg
        c6 = torch.arange(6, device=dev)
        gidx = torch.full((N, S, 6), D, dtype=torch.long, device=dev)  # D = dump row
        gidx[:, 0] = 6 * torch.arange(N, device=dev)[:, None] + c6
        gidx[self.ii, 1 + self.rank] = 6 * self.jj[:, None] + c6
        self.row_index = torch.cat([gidx.view(N, 6 * S),
                                    torch.full((N, 1), D - 1, dtype=torch.long, device=dev)], 1)  # (N, R)
        self.edge_index = torch.cat([6 * self.ii[:, None] + c6, 6 * self.jj[:, None] + c6,
                                     torch.full_like(self.ii[:, None], D - 1)], 1)  # (E, 13)

    # ---------------------------------------------------------------- evaluation
    def cost(self, poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor) -> float:
        """Weighted squared error at the given estimate (plus the depth prior)."""
        pr = project_edges(poses, disps, intrinsics, self.ii, self.jj, min_depth_ratio=self.opt.min_depth_ratio)
        w = self.weight * pr.valid[..., None]
        c = (w * self._rho((self.target - pr.coords) ** 2)).sum(dtype=torch.float64)
        if self.disp_prior is not None:
            c = c + (self.prior_weight * (disps - self.disp_prior) ** 2).sum(dtype=torch.float64)
        return float(c)

    def _rho(self, s: torch.Tensor) -> torch.Tensor:
        """Robust loss of squared residuals ``s`` (feature px^2): ``s`` itself when
        ``robust="none"``; Huber ``2 d sqrt(s) - d^2`` beyond ``d = robust_px``;
        Cauchy ``d^2 log(1 + s / d^2)``."""
        kind, d2 = self.opt.robust, self.opt.robust_px ** 2
        if kind == "none":
            return s
        if kind == "huber":
            return torch.where(s <= d2, s, 2.0 * (d2 * s).clamp(min=0).sqrt() - d2)
        return d2 * torch.log1p(s / d2)  # cauchy (LMOptions validates the kind)

    def _rho_prime(self, s: torch.Tensor) -> torch.Tensor:
        """Derivative of :meth:`_rho` (the IRLS weight factor, in (0, 1])."""
        kind, d2 = self.opt.robust, self.opt.robust_px ** 2
        if kind == "huber":
            return torch.where(s <= d2, torch.ones_like(s), (d2 / s.clamp(min=1e-30)).sqrt())
        if kind == "cauchy":
            return 1.0 / (1.0 + s / d2)
        return torch.ones_like(s)

    def linearize(self, poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor) -> dict:
        """Assemble the normal equations at the current estimate.

        Returns a dict with ``H`` (D+1, D+1) pose/focal block (last row = dump),
        ``g`` (D+1,), ``C`` (N, HW) depth diagonal, ``w`` (N, HW) depth gradient,
        ``Q`` (N, R, HW) pose/focal-depth coupling rows and ``cost``.
        """
        N, D = self.N, self.D
        ii, jj = self.ii, self.jj
        E = ii.numel()
        pr = project_edges(poses, disps, intrinsics, ii, jj, jacobians=True,
                           min_depth_ratio=self.opt.min_depth_ratio)
        H_, W_ = disps.shape[-2:]
        P = H_ * W_
        # channels first, pixels last (contiguous): the reductions over pixels below are
        # matrix products and two-term sums instead of strided reductions
        wt = self._weight_cf * pr.valid.view(E, 1, P)  # (E, 2, P)
        r = self._target_cf - pr.coords_cf.view(E, 2, P)
        r2 = r * r
        cost = (wt * self._rho(r2)).sum(dtype=torch.float64)
        wt0 = wt  # before the robust factors (the depth prior's weight rule)
        if self.opt.robust != "none":  # iteratively reweighted least squares: weights x rho'(r^2), held constant
            wt = wt * self._rho_prime(r2.detach())
        Jd = pr.Jd_cf.view(E, 2, P)
        # Only [Jj | Jf] is formed per pixel; since Ji = -Jj Ad(G_ij), every block
        # involving pose i follows from the 7x7 moments through M = [[-Ad, I, 0], [0, 0, 1]].
        J7 = pr.J7.view(E, 7, 2 * P)
        J7w = J7 * wt.view(E, 1, 2 * P)
        H7 = J7w @ J7.transpose(1, 2)  # (E, 7, 7)
        g7 = (J7w @ r.view(E, 2 * P, 1))[..., 0]  # (E, 7)
        M = torch.zeros(E, 7, 13, dtype=r.dtype, device=r.device)
        M[:, :6, :6] = -pr.adj
        M[:, :6, 6:12] = torch.eye(6, dtype=r.dtype, device=r.device)
        M[:, 6, 12] = 1.0
        Mt = M.transpose(1, 2)
        He = Mt @ H7 @ M  # (E, 13, 13) over [xi_i, xi_j, f]
        ge = (Mt @ g7[..., None])[..., 0]
        idx = self.edge_index
        Hflat = torch.zeros((D + 1) * (D + 1), dtype=r.dtype, device=r.device)
        Hflat.index_add_(0, (idx[:, :, None] * (D + 1) + idx[:, None, :]).reshape(-1), He.reshape(-1))
        g = torch.zeros(D + 1, dtype=r.dtype, device=r.device)
        g.index_add_(0, idx.reshape(-1), ge.reshape(-1))
        if not self.optimize_disps:  # pose-only: the depth block and its coupling are never used
            return {"H": Hflat.view(D + 1, D + 1), "g": g, "C": None, "w": None, "Q": None,
                    "cost": float(cost.detach()), "weight_sum": self._weight_sum(wt)}
        # depth diagonal and gradient
        wJd = wt * Jd
        C = torch.zeros(N, P, dtype=r.dtype, device=r.device)
        C.index_add_(0, ii, wJd[:, 0] * Jd[:, 0] + wJd[:, 1] * Jd[:, 1])
        w = torch.zeros(N, P, dtype=r.dtype, device=r.device)
        w.index_add_(0, ii, wJd[:, 0] * r[:, 0] + wJd[:, 1] * r[:, 1])
        # coupling rows E7 = sum_c [Jj | Jf]^T w Jd -> (E, 7, P); pose-i rows = -Ad^T E7[:6]
        J7w4 = J7w.view(E, 7, 2, P)
        E7 = J7w4[:, :, 0] * Jd[:, None, 0] + J7w4[:, :, 1] * Jd[:, None, 1]
        Ej = E7[:, :6]
        Ei = -(pr.adj.transpose(1, 2) @ Ej)
        # Q (N, R, P), R = 6 S + 1: rows of pose i itself, of its S - 1 neighbours (by rank), of the focal
        S = 1 + self.maxdeg
        Q = torch.zeros(N, 6 * S + 1, P, dtype=r.dtype, device=r.device)
        Q[:, :6].index_add_(0, ii, Ei)
        Q[:, :6 * S].view(N, S, 6, P)[ii, 1 + self.rank] = Ej
        Q[:, 6 * S].index_add_(0, ii, E7[:, 6])
        if self.disp_prior is not None:
            if callable(self.prior_weight):  # rule on the geometric depth Hessian, fixed at the first linearisation
                # also without the robust loss's IRLS factors: how much parallax the measurements offer at
                # all, whatever the current residuals (far from convergence the factors are small everywhere)
                if self.opt.robust == "none":
                    Cg = C
                else:
                    Cg = torch.zeros(N, P, dtype=r.dtype, device=r.device)
                    Cg.index_add_(0, ii, wt0[:, 0] * Jd[:, 0] * Jd[:, 0] + wt0[:, 1] * Jd[:, 1] * Jd[:, 1])
                self.prior_weight = self.prior_weight(C.detach().view_as(disps), disps.detach(),
                                                      Cg.detach().view_as(disps))
            a = self.prior_weight.expand_as(disps).reshape(N, P)
            C = C + a
            w = w + a * (self.disp_prior - disps).reshape(N, P)
            cost = cost + (a * (disps.reshape(N, P) - self.disp_prior.reshape(N, P)) ** 2).sum(dtype=torch.float64)
        return {"H": Hflat.view(D + 1, D + 1), "g": g, "C": C, "w": w, "Q": Q, "cost": float(cost.detach()),
                "weight_sum": self._weight_sum(wt)}

    def _weight_sum(self, wt: torch.Tensor) -> float | None:
        """Sum of the residual weights (the focal's noise estimate needs it; None without a free focal,
        which spares a device sync per iteration)."""
        return float(wt.sum(dtype=torch.float64).detach()) if self.optimize_focal else None

    # --------------------------------------------------------------------- solve
    def solve(self, lin: dict, lam: float, eta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Damped Schur-complement solve.

        Args:
            lin: :meth:`linearize` output.
            lam: LM damping, relative to the diagonal.
            eta: optional (N, H, W) extra absolute damping of the depth block
                (non-negative; differentiable).

        Returns:
            ``(dx (D,), dd (N, HW), focal_information)`` where dx holds all
            pose twists and the focal step (zeros for fixed variables).
        """
        o = self.opt
        D = self.D
        g, C, w, Q = lin["g"], lin["C"], lin["w"], lin["Q"]
        ridx = self.row_index
        Cinv = None
        if Q is not None:
            Cd = C * (1.0 + lam) + o.eps_disp
            if eta is not None:
                Cd = Cd + eta.reshape(Cd.shape)
            Cinv = 1.0 / Cd
        # the reduced system is small ((6N+1)^2) but ill-conditioned (monocular scale, weak
        # parallax): formed and solved in double precision, float32 steps vary with the
        # summation order of multithreaded kernels and LM then ends in different minima
        S, rhs = self._reduce(lin, Cinv)
        free = self.free
        Sf = S[free][:, free]
        diag = torch.diagonal(Sf)
        Sf = Sf + torch.diag(lam * diag.clamp(min=0) + o.eps_pose)
        dx = torch.zeros(D + 1, dtype=g.dtype, device=g.device)
        if free.numel():
            L = _cholesky(Sf)
            if L is not None:
                sol = torch.cholesky_solve(rhs[free][:, None], L)[:, 0]
            else:
                sol = torch.linalg.lstsq(Sf, rhs[free][:, None]).solution[:, 0]
            dx[free] = sol.to(g.dtype)
        dx[D] = 0.0
        if Q is None:
            dd = torch.zeros(self.N, self.target.shape[1] * self.target.shape[2], dtype=g.dtype, device=g.device)
        else:
            dd = Cinv * (w - (Q * dx[ridx][..., None]).sum(1))
        f_info = float(S[D - 1, D - 1].detach()) if self.optimize_focal else 0.0
        return dx[:D], dd, f_info

    def _reduce(self, lin: dict, Cinv: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced system ``(S (D, D), rhs (D + 1,))`` with the depths eliminated
        (Schur complement with the inverse depth block ``Cinv`` (N, HW); None: pose-only),
        computed in double precision."""
        D, ridx, dtype = self.D, self.row_index, torch.float64
        H, g, w, Q = lin["H"], lin["g"], lin["w"], lin["Q"]
        H, g = H.to(dtype), g.to(dtype)
        Sflat = H.reshape(-1).clone()
        rhs = g.clone()
        if Q is not None:
            Q, w, Cinv = Q.to(dtype), w.to(dtype), Cinv.to(dtype)
            M = (Q * Cinv[:, None]) @ Q.transpose(1, 2)  # (N, R, R)
            v = (Q @ (Cinv * w)[..., None])[..., 0]  # (N, R)
            Sflat.index_add_(0, (ridx[:, :, None] * (D + 1) + ridx[:, None, :]).reshape(-1), -M.reshape(-1))
            rhs.index_add_(0, ridx.reshape(-1), -v.reshape(-1))
        return Sflat.view(D + 1, D + 1)[:D, :D], rhs

    def focal_std(self, lin: dict, intrinsics: torch.Tensor, sigma: float | None = None) -> float:
        """Relative marginal standard deviation ``std(f) / f`` of the focal length.

        The focal's variance is the last diagonal entry of the inverse of the
        reduced (depths eliminated, poses kept) information matrix, undamped,
        times ``sigma^2``, the correspondence noise at unit weight (feature
        px; :meth:`run` passes the rms weighted residual of its solution,
        at least ``LMOptions.focal_noise_px``).  Large values
        mean that the data do not constrain the focal (little parallax and
        rotation, e.g. forward motion along the optical axis or a near-static
        camera); MegaSaM likewise holds the focal where its Hessian is weak.

        Returns:
            ``std(f) / f`` (inf when the system is singular); nan when the
            focal is not a variable.
        """
        if not self.optimize_focal:
            return float("nan")
        # undamped, in double precision: the Schur complement of a float32 system can lose definiteness
        Cinv = None if lin["Q"] is None else 1.0 / (lin["C"].double() + self.opt.eps_disp)
        S, _ = self._reduce(lin, Cinv)
        Sf = S[self.free][:, self.free]
        # the monocular scale is a null direction of S (the focal is independent of it):
        # a tiny relative damping makes the inverse exist without changing the focal's variance
        Sf = Sf + torch.diag(1e-9 * torch.diagonal(Sf).clamp(min=0) + self.opt.eps_pose)
        L = _cholesky(Sf)
        if L is None:
            return float("inf")
        e = torch.zeros(Sf.shape[0], 1, dtype=Sf.dtype, device=Sf.device)
        e[-1] = 1.0
        var = float(torch.cholesky_solve(e, L)[-1, 0])
        sigma = self.opt.focal_noise_px if sigma is None else sigma
        return float((max(var, 0.0) * sigma ** 2) ** 0.5 / float(intrinsics[0]))

    def _focal_bounds(self, disps: torch.Tensor) -> tuple[float, float]:
        """Focal range in pixels: ``focal_range`` times the larger side of the (N, H, W) depth maps."""
        side = float(max(disps.shape[-2:]))
        return self.opt.focal_range[0] * side, self.opt.focal_range[1] * side

    def hold_focal(self) -> None:
        """Stop estimating the focal (it keeps its current value)."""
        self.optimize_focal = False
        self.free = self.free[self.free != self.D - 1]

    def apply(self, poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor,
              dx: torch.Tensor, dd: torch.Tensor) -> tuple[pp.LieTensor, torch.Tensor, torch.Tensor]:
        """Retract poses on the left, add depth steps (clamped), and update the focal."""
        xi = dx[:-1].view(self.N, 6)
        new_poses = retract(poses, xi)
        new_disps = (disps + dd.view_as(disps)).clamp(min=self.opt.min_disp)
        K = intrinsics
        if self.optimize_focal:
            step = self.opt.focal_max_step * K[0]
            f = K[0] + torch.maximum(torch.minimum(dx[-1], step), -step)
            f = f.clamp(*self._focal_bounds(disps))
            K = torch.stack([f, f * K[1] / K[0], K[2], K[3]])
        return new_poses, new_disps, K

    def gauss_newton(self, poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor, iters: int = 2,
                     lam: float = 0.0, eta: torch.Tensor | None = None
                     ) -> tuple[pp.LieTensor, torch.Tensor, torch.Tensor]:
        """``iters`` damped Gauss-Newton steps, every one accepted, keeping the autograd graph.

        Same linearisation and solve as :meth:`run` (one LM iteration of
        :meth:`run` with ``adaptive=False`` and ``lambda_init = lam`` is one
        step here).  Nothing is detached: gradients flow from the result to
        ``target``, ``weight``, ``eta`` and the inputs.

        Args:
            poses: (N, 7) SE3 world-to-camera.
            disps: (N, H, W) inverse depths.
            intrinsics: (4,) ``[fx, fy, cx, cy]``.
            iters: Gauss-Newton steps.
            lam: damping relative to the diagonal (0 = plain Gauss-Newton;
                ``eps_pose`` / ``eps_disp`` of the options still apply).
            eta: optional (N, H, W) per-pixel damping of the inverse depths.
        Returns:
            ``(poses (N, 7), disps (N, H, W), intrinsics (4,))``.
        """
        for _ in range(iters):
            lin = self.linearize(poses, disps, intrinsics)
            dx, dd, _ = self.solve(lin, lam, eta)
            poses, disps, intrinsics = self.apply(poses, disps, intrinsics, dx, dd)
        return poses, disps, intrinsics

    def run(self, poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor) -> BAResult:
        """Iterate Levenberg-Marquardt from the given estimate (inputs are not modified).

        Each iteration linearises once and tries up to ``max_tries`` damped
        steps; it stops when no step lowers the cost, or when an undamped
        (``lambda <= lambda_init``) step lowers it by less than ``rel_tol``.

        When the focal is a variable and ``focal_max_std > 0``, its relative
        standard deviation is judged at the solution (:meth:`focal_std`, with
        the residual noise of the fit); if the data leave it too uncertain,
        the problem is solved again from the start with the focal held; so it
        is when the estimate ends on a bound of ``focal_range`` (the data then
        pulled it out of any plausible range).
        """
        res, lin = self._levenberg_marquardt(poses, disps, intrinsics)
        if self.optimize_focal and lin is not None:
            sigma = max((res.costs[-1] / max(lin["weight_sum"], 1e-12)) ** 0.5, self.opt.focal_noise_px)
            std = self.focal_std(lin, res.intrinsics, sigma)
            f = float(res.intrinsics[0])
            at_bound = min(abs(f - b) for b in self._focal_bounds(disps)) < 1e-4 * f
            if at_bound or (self.opt.focal_max_std > 0 and not std <= self.opt.focal_max_std):
                self.hold_focal()
                res, _ = self._levenberg_marquardt(poses, disps, intrinsics)
                res.focal_held = True
            res.focal_std = std
        return res

    def _levenberg_marquardt(self, poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor
                             ) -> tuple[BAResult, dict | None]:
        """The LM iterations of :meth:`run`; also returns the last linearisation (None if none)."""
        o = self.opt
        lam = o.lambda_init
        poses, disps, K = poses.detach().clone(), disps.detach().clone(), intrinsics.detach().clone()
        res = BAResult(poses, disps, K)
        lin = None
        for it in range(o.iters):
            lin = self.linearize(poses, disps, K)
            if not res.costs:
                res.costs.append(lin["cost"])
            res.iterations = it + 1
            accepted = False
            for _ in range(o.max_tries if o.adaptive else 1):
                dx, dd, res.focal_information = self.solve(lin, lam)
                cand = self.apply(poses, disps, K, dx, dd)
                new_cost = self.cost(*cand)
                if not o.adaptive or new_cost < lin["cost"]:
                    poses, disps, K = cand
                    accepted = True
                    break
                lam *= o.lambda_up
                if lam > o.lambda_max:
                    break
            if not accepted:
                break
            res.costs.append(new_cost)
            small = (lin["cost"] - new_cost) <= o.rel_tol * lin["cost"]
            if o.adaptive:
                small = small and lam <= o.lambda_init
                lam = max(lam * o.lambda_down, 1e-12)
            if small:
                break
        res.poses, res.disps, res.intrinsics = poses, disps, K
        return res, lin


def bundle_adjust(poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor,
                  ii: torch.Tensor, jj: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, *,
                  fixed: torch.Tensor | list[int] | int = 1, optimize_focal: bool = False,
                  disp_prior: torch.Tensor | None = None, prior_weight: torch.Tensor | float | None = None,
                  options: LMOptions | None = None, optimize_disps: bool = True) -> BAResult:
    """Run dense BA; see :class:`DenseBA` for the arguments and the module doc for the model.

    Args:
        poses: (N, 7) SE3 world-to-camera initial poses.
        disps: (N, H, W) initial inverse depths.
        intrinsics: (4,) ``[fx, fy, cx, cy]`` at the resolution of ``disps``.
    """
    ba = DenseBA(ii, jj, target, weight, poses.shape[0], fixed=fixed, optimize_focal=optimize_focal,
                 disp_prior=disp_prior, prior_weight=prior_weight, options=options,
                 optimize_disps=optimize_disps)
    return ba.run(poses, disps, intrinsics)


def ba_steps(poses: pp.LieTensor, disps: torch.Tensor, intrinsics: torch.Tensor, ii: torch.Tensor,
             jj: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, fixed: torch.Tensor | list[int] | int = 1,
             iters: int = 2, eta: torch.Tensor | None = None, *, lam: float = 1e-4,
             options: LMOptions | None = None) -> tuple[pp.LieTensor, torch.Tensor]:
    """Differentiable dense BA: ``iters`` damped Gauss-Newton steps (:meth:`DenseBA.gauss_newton`).

    Used in training: a loss on the returned poses / inverse depths (or on
    their reprojections) back-propagates into ``target``, ``weight`` and
    ``eta`` (and into ``poses`` / ``disps`` if they require gradients).  The
    focal length is held.

    Args:
        poses: (N, 7) SE3 world-to-camera poses.
        disps: (N, H, W) inverse depths.
        intrinsics: (4,) ``[fx, fy, cx, cy]`` at the resolution of ``disps``.
        ii, jj: (E,) long edge endpoints.
        target: (E, H, W, 2) target pixel coordinates in frame j.
        weight: (E, H, W, 2) non-negative weights.
        fixed: gauge (see :class:`DenseBA`).
        iters: Gauss-Newton steps.
        eta: optional (N, H, W) non-negative damping of the depth block.
        lam: damping relative to the diagonal of both blocks.
        options: eps_pose / eps_disp / min_disp / min_depth_ratio (iteration
            fields are ignored).
    Returns:
        ``(poses (N, 7), disps (N, H, W))``.
    """
    ba = DenseBA(ii, jj, target, weight, poses.shape[0], fixed=fixed, options=options)
    poses, disps, _ = ba.gauss_newton(poses, disps, intrinsics, iters=iters, lam=lam, eta=eta)
    return poses, disps
