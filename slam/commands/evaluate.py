"""``slam eval``: run the system on sequences with ground truth and report accuracy and cost.

``slam eval INPUT --out DIR [--methods a,b] [--with-colmap] [KEY=VALUE ...]``

* ``INPUT`` is one sequence (anything :func:`slam.data.detect.open_sequence`
  opens) or a folder whose entries are sequences (entries that do not open
  are skipped with a message).  Frames are selected with the run config's
  ``input`` node (``input.max_frames=100 input.stride=2``), as ``slam run`` does.
* Every correspondence source of ``--methods`` (default: the run config's) is
  run through :func:`slam.system.runner.run_sequence`; its outputs go to
  ``DIR/<sequence>/<method>/`` (:func:`slam.io.outputs.write_outputs`).
* ``--with-colmap`` adds COLMAP on the same frames (method ``colmap``,
  :mod:`slam.eval.colmap_baseline`), its trajectory in ``DIR/<sequence>/colmap/``.
* Results: a markdown table on stdout, ``DIR/metrics.json`` (a list of rows,
  see :data:`ROW_KEYS`; rewritten after every sequence) and
  ``DIR/<sequence>.png`` (top view of the ground truth and every aligned estimate).
* Peak memory: on Linux the process's peak-memory mark is reset at the start
  of every run (:func:`slam.memory.reset_peak_rss`, in the runner), so each
  row reports its own run's peak; COLMAP's is that of its own child process.

Overrides starting with ``eval.`` set ``configs/eval.yaml``; the others set
``configs/run.yaml``.  Exit status: 0 when at least one run was evaluated, 1
when runs happened but none could be evaluated, 2 (InputError) when no
sequence had ground truth, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from omegaconf import DictConfig

    from slam.data.sequence import Sequence
    from slam.system.result import Reconstruction

HELP = "run the system on sequences with ground truth; ATE/RPE, speed and memory (optionally against COLMAP)"

#: Keys of every row of ``metrics.json`` (``focal_error`` and ``motion_iou`` only when measurable).
ROW_KEYS: tuple[str, ...] = (
    "sequence", "method", "ate_rmse_m", "ate_pct_path", "rpe_trans_m", "rpe_rot_deg", "tracked_fraction",
    "fps", "wall_s", "peak_rss_mb", "path_length_m", "frames", "evaluated_frames", "keyframes", "scale",
    "focal_estimated", "interrupted", "note")

#: Columns of the printed table: (header, row key, format).
TABLE: tuple[tuple[str, str, str], ...] = (
    ("sequence", "sequence", "s"), ("method", "method", "s"), ("ATE RMSE [m]", "ate_rmse_m", ".4f"),
    ("ATE % of path", "ate_pct_path", ".2f"), ("RPE trans [m]", "rpe_trans_m", ".4f"),
    ("RPE rot [deg]", "rpe_rot_deg", ".3f"), ("tracked %", "tracked_pct", ".1f"), ("fps", "fps", ".2f"),
    ("wall [s]", "wall_s", ".1f"), ("peak [MB]", "peak_rss_mb", ".0f"))


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (metrics.json, plots, runs); required")
    p.add_argument("--methods", default=None, metavar="A,B",
                   help="correspondence sources to compare (comma-separated); default: the run config's")
    p.add_argument("--with-colmap", action="store_true", help="also run COLMAP (pycolmap, CPU) on the same frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(p: argparse.ArgumentParser) -> None:
    p.usage = "slam eval INPUT --out DIR [--methods A,B] [--with-colmap] [--no-progress] [KEY=VALUE ...]"
    _add_options(p)
    p.add_argument("input", metavar="INPUT", help="a sequence (video, image folder, dataset sequence) "
                                                  "or a folder of sequences, with ground truth")
    # REMAINDER so that options may also follow INPUT (argparse cannot interleave them with
    # a second positional); main() parses them out of it again.
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="Hydra overrides: eval.* for configs/eval.yaml, anything else for configs/run.yaml")


def parse_trailing_options(args: argparse.Namespace) -> argparse.Namespace:
    """Move options given after INPUT from ``args.overrides`` to ``args``.

    Raises:
        InputError: an unknown option, or no ``--out``.
    """
    from slam.data.sequence import InputError

    inner = argparse.ArgumentParser(prog="slam eval", add_help=False)
    _add_options(inner)
    try:
        ns, rest = inner.parse_known_args(list(args.overrides or []))
    except SystemExit:  # argparse already printed the problem
        raise InputError("bad options after INPUT") from None
    for key in ("out", "methods"):
        if getattr(ns, key) is not None:
            setattr(args, key, getattr(ns, key))
    for key in ("with_colmap", "no_progress"):
        setattr(args, key, bool(getattr(args, key, False) or getattr(ns, key)))
    unknown = [r for r in rest if r.startswith("-")]
    if unknown:
        raise InputError(f"unknown option {unknown[0]} (overrides are KEY=VALUE)")
    args.overrides = rest
    if not args.out:
        raise InputError("--out DIR is required")
    return args


# ------------------------------------------------------------------ seams (patched by tests)
def run_sequence(sequence: "Sequence", cfg: "DictConfig", *, progress: bool = True) -> "Reconstruction":
    """Run the system on one sequence (:func:`slam.system.runner.run_sequence`)."""
    from slam.system.runner import run_sequence as run

    return run(sequence, cfg, progress=progress)


def load_run_config(overrides: list[str]) -> "DictConfig":
    """``configs/run.yaml`` with ``overrides``."""
    from slam.config import load_config

    return load_config("run", overrides)


# ------------------------------------------------------------------ helpers
def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``(eval overrides without the eval. prefix, run overrides)``; Hydra's ``+``/``++``/``~`` prefixes are kept."""
    ev, run = [], []
    for o in overrides:
        head = o[:2] if o.startswith("++") else o[:1] if o[:1] in "+~" else ""
        body = o[len(head):]
        if body.startswith("eval."):
            ev.append(head + body[len("eval."):])
        else:
            run.append(o)
    return ev, run


def _is_override_of(override: str, key: str) -> bool:
    body = override.lstrip("+~")
    return body.split("=", 1)[0] == key


def frame_selection(cfg: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`~slam.data.detect.open_sequence` from the run config's ``input`` node
    (``start, end, stride, max_frames, calib``; absent keys keep the reader's defaults)."""
    node = cfg.get("input", None) if hasattr(cfg, "get") else None
    if node is None:
        return {}
    return {k: node[k] for k in ("start", "end", "stride", "max_frames", "calib") if k in node}


def find_sequences(path: Path, select: dict[str, Any]) -> list["Sequence"]:
    """``path`` as one sequence, else its entries that open as sequences (sorted by name).

    Raises:
        InputError: ``path`` is not a sequence and contains none.
    """
    from slam.data.detect import open_sequence
    from slam.data.sequence import InputError

    try:
        return [open_sequence(path, **select)]
    except InputError as first:
        if not path.is_dir():
            raise
        found = []
        for child in sorted(path.iterdir()):
            if child.name.startswith("."):
                continue
            try:
                found.append(open_sequence(child, **select))
            except InputError as e:
                print(f"slam eval: skipping {child}: {e}")
        if not found:
            raise InputError(f"{path}: neither a sequence nor a folder of sequences ({first})") from None
        return found


def _unique_name(seq: "Sequence", used: set[str]) -> str:
    base = (seq.name or Path(seq.path).stem or "sequence").replace("/", "_").replace("\\", "_").replace(" ", "_")
    name, n = base, 2
    while name in used:
        name, n = f"{base}_{n}", n + 1
    used.add(name)
    return name


def _num(v: Any) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return v


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``rows`` (columns :data:`TABLE`); missing numbers are ``-``."""
    from slam.eval.report import markdown_table

    return markdown_table(({**r, "tracked_pct": 100.0 * _num(r.get("tracked_fraction"))} for r in rows), TABLE)


def make_row(sequence: str, method: str, evaluation: Any, *, frames: int, tracked_fraction: float,
             wall_s: float | None, fps: float | None, peak_rss_mb: float | None, note: str | None = None,
             **extra: Any) -> dict[str, Any]:
    """One ``metrics.json`` row; ``evaluation`` is a :class:`~slam.eval.metrics.TrajectoryEvaluation` or None."""
    nan = float("nan")
    m = evaluation.metrics if evaluation is not None else {}
    if fps is None and wall_s:
        fps = frames / wall_s
    row: dict[str, Any] = {
        "sequence": sequence, "method": method,
        "ate_rmse_m": m.get("ate_rmse_m", nan), "ate_pct_path": m.get("ate_pct_path", nan),
        "rpe_trans_m": m.get("rpe_trans_m", nan), "rpe_rot_deg": m.get("rpe_rot_deg", nan),
        "tracked_fraction": m.get("tracked_fraction", tracked_fraction),
        "fps": fps, "wall_s": wall_s, "peak_rss_mb": peak_rss_mb,
        "path_length_m": m.get("path_length_m", nan), "frames": frames,
        "evaluated_frames": m.get("evaluated_frames", 0), "scale": m.get("scale", nan),
        "keyframes": None, "focal_estimated": None, "interrupted": False, "note": note,
    }
    row.update(extra)
    return row


# ------------------------------------------------------------------ the evaluation
class _Evaluator:
    """Runs every method on every sequence, collecting rows and writing results."""

    def __init__(self, out: Path, ecfg: dict[str, Any], run_overrides: list[str], methods: list[str] | None,
                 with_colmap: bool, progress: bool):
        self.out = out
        self.ecfg = ecfg
        self.run_overrides = run_overrides
        self.methods = methods
        self.with_colmap = with_colmap
        self.progress = progress
        self.rows: list[dict[str, Any]] = []
        self.interrupted = False
        self.configs = self._configs()  # up front: bad overrides fail before any run

    # ---------------------------------------------------------------- plumbing
    def write_metrics(self) -> Path:
        from slam.io.outputs import write_json

        return write_json(self.out / "metrics.json", self.rows)

    def _evaluate(self, timestamps, poses, seq, tracked=None):
        """``(TrajectoryEvaluation or None, note or None)``."""
        from slam.eval.metrics import MetricsError, evaluate_trajectory

        mc = self.ecfg["metrics"]
        try:
            return evaluate_trajectory(timestamps, poses, seq.timestamps, seq.gt_poses, tracked=tracked,
                                       max_time_diff=float(mc["max_time_diff"]),
                                       rpe_delta=int(mc["rpe_delta"])), None
        except MetricsError as e:
            return None, str(e)

    def _configs(self) -> list[tuple[str | None, "DictConfig"]]:
        if not self.methods:
            return [(None, load_run_config(self.run_overrides))]
        base = [o for o in self.run_overrides if not _is_override_of(o, "correspondence")]
        return [(m, load_run_config(base + [f"correspondence={m}"])) for m in self.methods]

    # ---------------------------------------------------------------- one sequence
    def sequence(self, seq: "Sequence", name: str) -> None:
        import numpy as np

        from slam.eval.metrics import find_dynamic_masks, focal_error, motion_iou

        if not seq.has_ground_truth:
            print(f"slam eval: skipping {name}: no ground truth (needs e.g. groundtruth.txt / pose_left.txt)")
            return
        gt_ok = np.isfinite(np.asarray(seq.gt_poses).reshape(len(seq.gt_poses), -1)).all(1)
        if gt_ok.sum() < 3:
            print(f"slam eval: skipping {name}: fewer than 3 frames with ground truth")
            return
        print(f"== {name}: {len(seq)} frames ({seq.kind})")
        curves: dict[str, np.ndarray] = {}
        first_recon = None
        for method, cfg in self.configs:
            t0 = time.perf_counter()
            recon = run_sequence(seq, cfg, progress=self.progress)
            wall = time.perf_counter() - t0
            method = method or _cfg_method(cfg) or recon.correspondence
            if first_recon is None:
                first_recon = recon
            oc = self.ecfg["outputs"]
            if oc["write"]:
                from slam.io.outputs import write_outputs

                write_outputs(recon, self.out / name / method, colmap=bool(oc["colmap"]), fuse=oc["fuse"])
            ev, note = self._evaluate(recon.timestamps, recon.poses, seq, tracked=recon.tracked)
            stats = dict(recon.stats or {})
            tracked = np.asarray(recon.tracked, dtype=bool)
            extra: dict[str, Any] = {"keyframes": int(len(recon.kf_indices)),
                                     "focal_estimated": bool(recon.focal_estimated),
                                     "interrupted": bool(recon.interrupted)}
            if seq.intrinsics is not None and recon.focal_estimated:
                ref = seq.intrinsics.scaled(*recon.input_size) if seq.intrinsics.size != tuple(recon.input_size) \
                    else seq.intrinsics
                extra["focal_error"] = focal_error(recon.input_intrinsics, ref.as_array())
            masks = find_dynamic_masks(seq.path, len(recon.timestamps)) if recon.motion is not None else None
            if masks is not None:
                extra["motion_iou"] = motion_iou(recon.motion, masks, float(cfg.motion.mask_thresh))
            row = make_row(name, method, ev, frames=len(recon.timestamps),
                           tracked_fraction=float(tracked.mean()) if tracked.size else 0.0,
                           wall_s=stats.get("wall_s", wall), fps=stats.get("fps"),
                           peak_rss_mb=stats.get("peak_rss_mb"), note=note, **extra)
            self._report(row)
            if ev is not None:
                curves[method] = ev.est_xyz
            if recon.interrupted:
                self.interrupted = True
                break
        if self.with_colmap and not self.interrupted:
            ev = self.colmap(seq, name, first_recon)
            if ev is not None:
                curves["colmap"] = ev.est_xyz
        if self.ecfg["plot"]:
            from slam.eval.plot import plot_trajectories

            gt_xyz = np.asarray(seq.gt_poses)[gt_ok, :3, 3]
            plot_trajectories(self.out / f"{name}.png", gt_xyz, curves, title=name)

    def colmap(self, seq: "Sequence", name: str, recon: "Reconstruction | None"):
        """Run the COLMAP baseline on ``seq`` (at ``recon``'s processing size); its evaluation or None."""
        from slam.eval.colmap_baseline import ColmapOptions, run_colmap
        from slam.io.tum import write_tum

        cc = {k: v for k, v in self.ecfg["colmap"].items() if k != "enabled"}
        size = tuple(int(v) for v in recon.image_size) if recon is not None else None
        K = seq.intrinsics.scaled(*size) if (seq.intrinsics is not None and size) else seq.intrinsics
        print(f"   colmap: {len(seq)} frames" + (f" at {size[0]}x{size[1]}" if size else ""))
        try:
            res = run_colmap(seq, K, size=size, options=ColmapOptions(**cc))
        except RuntimeError as e:
            row = make_row(name, "colmap", None, frames=len(seq), tracked_fraction=0.0, wall_s=None, fps=None,
                           peak_rss_mb=None, note=str(e).splitlines()[0])
            self._report(row)
            return None
        ok = res.registered
        write_tum(self.out / name / "colmap" / "trajectory.txt", res.timestamps[ok], res.poses[ok])
        ev, note = self._evaluate(res.timestamps, res.poses, seq, tracked=ok)
        extra: dict[str, Any] = {"focal_estimated": K is None, "interrupted": False, "keyframes": int(ok.sum())}
        if K is None and seq.intrinsics is not None:
            extra["focal_error"] = float(res.intrinsics[0] / seq.intrinsics.scaled(*res.image_size).fx - 1)
        row = make_row(name, "colmap", ev, frames=len(res.timestamps), tracked_fraction=res.registered_fraction,
                       wall_s=res.wall_s, fps=res.fps, peak_rss_mb=res.peak_rss_mb, note=note, **extra)
        row["num_points"] = res.num_points
        self._report(row)
        return ev

    def _report(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        ate = _num(row["ate_rmse_m"])
        msg = f"ATE {ate:.4f} m ({_num(row['ate_pct_path']):.2f}% of path)" if math.isfinite(ate) else \
            f"not evaluated: {row['note']}"
        print(f"   {row['method']}: {msg}, tracked {100 * _num(row['tracked_fraction']):.1f}%")


def _cfg_method(cfg: Any) -> str | None:
    try:
        return str(cfg.correspondence.name)
    except Exception:  # noqa: BLE001 - any config without that key
        return None


def main(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from slam.config import load_config
    from slam.data.sequence import InputError

    args = parse_trailing_options(args)
    eval_over, run_over = split_overrides(list(args.overrides))
    ecfg = OmegaConf.to_container(load_config("eval", eval_over), resolve=True)
    methods = ecfg.get("methods")
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    elif isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    with_colmap = bool(args.with_colmap or ecfg["colmap"]["enabled"])
    out = Path(args.out)
    ev = _Evaluator(out, ecfg, run_over, list(methods) if methods else None, with_colmap, not args.no_progress)
    sequences = find_sequences(Path(args.input), frame_selection(ev.configs[0][1]))
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    try:
        for seq in sequences:
            name = _unique_name(seq, used)
            try:
                ev.sequence(seq, name)
            except InputError as e:  # a problem with this sequence only (e.g. an unreadable frame)
                print(f"slam eval: skipping {name}: {e}")
            if ev.rows:
                ev.write_metrics()
            if ev.interrupted:
                break
    finally:
        if ev.rows:
            path = ev.write_metrics()
            print()
            print(format_table(ev.rows))
            for r in ev.rows:
                if r.get("note"):
                    print(f"note: {r['sequence']} / {r['method']}: {r['note']}")
            print(f"\nwrote {path}")
    if not ev.rows:
        raise InputError(f"{args.input}: no sequence with ground truth was evaluated")
    if ev.interrupted:
        return 130
    return 0 if any(math.isfinite(_num(r["ate_rmse_m"])) for r in ev.rows) else 1
