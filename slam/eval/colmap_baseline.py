"""COLMAP incremental structure-from-motion on the same frames, as a baseline.

:func:`run_colmap` writes the frames (resized to the processing resolution)
as PNG to a work folder and runs pycolmap's SIFT extraction (CPU), sequential
matching and incremental mapping with one shared PINHOLE camera.  When the
intrinsics are known they are given to COLMAP and held fixed (no focal,
principal point or distortion refinement); otherwise COLMAP estimates one
focal length (SIMPLE_PINHOLE, refined).

COLMAP puts the centre of the top-left pixel at ``(0.5, 0.5)``, this package
at ``(0, 0)``: the principal point is passed with ``+0.5``.

The largest model is used; frames it does not register get NaN poses.  The
pipeline runs in a child interpreter (``python -m slam.eval.colmap_baseline
JOB.json``, which imports neither torch nor the rest of the system) so that
its peak memory (the child's maximum resident set size) is measured on its
own and a crash of COLMAP cannot take the caller down.  ``wall_s`` covers
writing the frames, starting the child and the whole pipeline.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from slam.memory import peak_rss_mb, reset_peak_rss

if TYPE_CHECKING:  # the child process must not import torch (via slam.geometry.camera)
    from slam.data.sequence import Frame
    from slam.geometry.camera import Intrinsics

#: Offset from this package's pixel coordinates to COLMAP's.
COLMAP_PIXEL_OFFSET: float = 0.5


@dataclass
class ColmapOptions:
    """Tunables of the baseline (defaults mirror ``configs/eval.yaml``'s ``colmap`` node).

    Attributes:
        num_threads: CPU threads for every COLMAP stage.
        max_num_features: SIFT features per image.
        overlap: sequential matching window (each image is matched to the next ``overlap``).
        quadratic_overlap: also match images ``2^k`` apart within the window.
        min_num_matches: fewest verified matches for an image pair to be used.
        min_model_size: fewest registered images for a model to be kept.
        max_runtime_s: stop the mapper after this many seconds (None: no limit).
        timeout_s: kill the isolated COLMAP process after this many seconds (None: no limit).
        seed: random seed of COLMAP's RANSAC and mapper.
        isolate: run in a spawned child process (measures COLMAP's own peak memory).
        verbose: let COLMAP log its progress.
    """

    num_threads: int = 2
    max_num_features: int = 4096
    overlap: int = 10
    quadratic_overlap: bool = True
    min_num_matches: int = 15
    min_model_size: int = 3
    max_runtime_s: float | None = None
    timeout_s: float | None = None
    seed: int = 0
    isolate: bool = True
    verbose: bool = False


@dataclass
class ColmapResult:
    """Output of :func:`run_colmap`.

    Attributes:
        timestamps: (F,) timestamps of every frame.
        poses: (F, 4, 4) camera-to-world poses; NaN for unregistered frames.
        registered: (F,) bool.
        intrinsics: (4,) ``[fx, fy, cx, cy]`` used (or estimated) at ``image_size``,
            this package's pixel convention.
        image_size: ``(W, H)`` of the frames given to COLMAP.
        wall_s: seconds, frame writing included.
        peak_rss_mb: peak resident memory of the COLMAP process (MB).
        num_points: 3D points of the model.
        num_models: models COLMAP built (the largest is used).
    """

    timestamps: np.ndarray
    poses: np.ndarray
    registered: np.ndarray
    intrinsics: np.ndarray
    image_size: tuple[int, int]
    wall_s: float
    peak_rss_mb: float
    num_points: int
    num_models: int

    @property
    def registered_fraction(self) -> float:
        """Fraction of frames with a pose (COLMAP's tracked fraction)."""
        return float(self.registered.mean()) if self.registered.size else 0.0

    @property
    def fps(self) -> float:
        """Frames per second of wall time."""
        return len(self.timestamps) / self.wall_s if self.wall_s > 0 else float("nan")


def frame_name(k: int) -> str:
    """PNG name of the ``k``-th frame in the work folder."""
    return f"frame_{k:06d}.png"


def _sfm(image_dir: str, work: str, names: list[str], camera_model: str, params: list[float],
         refine_focal: bool, opts: dict[str, Any]) -> dict[str, Any]:
    """Run extraction, sequential matching and mapping; poses by image name.

    Runs in the child process when ``isolate`` (module-level so that it pickles).
    """
    import pycolmap

    reset_peak_rss()  # in-process runs (isolate=False) measure this run only
    pycolmap.logging.minloglevel = 0 if opts["verbose"] else 2
    pycolmap.set_random_seed(int(opts["seed"]))
    n = int(opts["num_threads"])
    db = str(Path(work) / "database.db")
    out = Path(work) / "sparse"
    out.mkdir(parents=True, exist_ok=True)

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    reader.camera_params = ",".join(f"{p:.10g}" for p in params)
    extract = pycolmap.FeatureExtractionOptions()
    extract.num_threads = n
    extract.use_gpu = False
    extract.sift.max_num_features = int(opts["max_num_features"])
    pycolmap.extract_features(db, image_dir, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=extract, device=pycolmap.Device.cpu)

    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = n
    match.use_gpu = False
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = int(opts["overlap"])
    pairing.quadratic_overlap = bool(opts["quadratic_overlap"])
    pairing.loop_detection = False
    pairing.num_threads = n
    pycolmap.match_sequential(db, matching_options=match, pairing_options=pairing, device=pycolmap.Device.cpu)

    pipe = pycolmap.IncrementalPipelineOptions()
    pipe.num_threads = n
    pipe.random_seed = int(opts["seed"])
    pipe.min_num_matches = int(opts["min_num_matches"])
    pipe.min_model_size = int(opts["min_model_size"])
    pipe.extract_colors = False
    pipe.ba_refine_focal_length = refine_focal
    pipe.ba_refine_principal_point = False
    pipe.ba_refine_extra_params = False
    pipe.mapper.abs_pose_refine_focal_length = refine_focal
    pipe.mapper.abs_pose_refine_extra_params = False
    pipe.mapper.num_threads = n
    pipe.mapper.random_seed = int(opts["seed"])
    pipe.triangulation.random_seed = int(opts["seed"])
    if opts["max_runtime_s"]:
        pipe.max_runtime_seconds = max(1, int(round(float(opts["max_runtime_s"]))))
    models = pycolmap.incremental_mapping(db, image_dir, str(out), options=pipe)

    poses: dict[str, list] = {}
    params_out = list(params)
    num_points = 0
    if models:
        best = max(models.values(), key=lambda r: r.num_reg_images())
        num_points = int(best.num_points3D())
        for image in best.images.values():
            if image.has_pose:
                poses[image.name] = np.asarray(image.cam_from_world().matrix(), dtype=np.float64).tolist()
        cam = next(iter(best.cameras.values()))
        params_out = [float(p) for p in cam.params]
    return {"poses": poses, "params": params_out, "num_points": num_points, "num_models": len(models),
            "peak_rss_mb": peak_rss_mb()}


def _intrinsics_from_params(model: str, params: list[float]) -> np.ndarray:
    o = COLMAP_PIXEL_OFFSET
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = params[:3]
        return np.array([f, f, cx - o, cy - o])
    fx, fy, cx, cy = params[:4]
    return np.array([fx, fy, cx - o, cy - o])


def _run_child(args: tuple, work: Path, verbose: bool, timeout_s: float | None) -> dict[str, Any]:
    """Run :func:`_sfm` in a fresh interpreter (``python -m slam.eval.colmap_baseline``)."""
    import json
    import os
    import subprocess

    job, result = work / "job.json", work / "result.json"
    job.write_text(json.dumps({"args": list(args), "result": str(result)}))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run([sys.executable, "-m", "slam.eval.colmap_baseline", str(job)], env=env,
                              stdout=None if verbose else subprocess.PIPE,
                              stderr=None if verbose else subprocess.STDOUT, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"COLMAP did not finish within {timeout_s} s") from None
    if proc.returncode != 0 or not result.is_file():
        tail = "" if verbose else "\n" + "\n".join((proc.stdout or "").strip().splitlines()[-15:])
        raise RuntimeError(f"COLMAP failed (exit status {proc.returncode}){tail}")
    return json.loads(result.read_text())


def _child_main(job_path: str) -> None:
    import json

    job = json.loads(Path(job_path).read_text())
    res = _sfm(*job["args"])
    Path(job["result"]).write_text(json.dumps(res))


def run_colmap(frames: Iterable[Frame], intrinsics: Intrinsics | None = None, *,
               size: tuple[int, int] | None = None, options: ColmapOptions | None = None,
               workdir: str | Path | None = None) -> ColmapResult:
    """Run COLMAP on ``frames`` and return per-frame camera-to-world poses.

    Args:
        frames: a :class:`~slam.data.sequence.Sequence` or any iterable of frames.
        intrinsics: the camera; held fixed.  None: the frames' own intrinsics if
            known (held fixed), else COLMAP estimates the focal length.
        size: ``(W, H)`` given to COLMAP (the SLAM run's processing resolution);
            None: ``intrinsics``' size, else the frames' size.
        options: tunables (:class:`ColmapOptions` defaults when None).
        workdir: folder for images, database and model (kept); a temporary folder
            (removed afterwards) when None.
    Returns:
        a :class:`ColmapResult`; all poses NaN when nothing could be registered.
    """
    from slam.geometry.camera import Intrinsics
    from slam.geometry.pose import invert

    opts = options or ColmapOptions()
    t0 = time.perf_counter()
    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="slam_colmap_")
    work = Path(workdir if workdir is not None else tmp)
    image_dir = work / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    try:
        import cv2

        names: list[str] = []
        stamps: list[float] = []
        K = None
        W = H = 0
        for k, frame in enumerate(frames):
            img = frame.image
            if k == 0:  # the first frame fixes the size and the camera
                W, H = size or (intrinsics.size if intrinsics is not None else (img.shape[1], img.shape[0]))
                src = intrinsics if intrinsics is not None else frame.intrinsics
                K = None if src is None else (src if src.size == (W, H) else src.scaled(W, H))
            if img.shape[:2] != (H, W):
                interp = cv2.INTER_AREA if W < img.shape[1] else cv2.INTER_LINEAR
                img = cv2.resize(img, (int(W), int(H)), interpolation=interp)
            name = frame_name(k)
            if not cv2.imwrite(str(image_dir / name), cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {image_dir / name}")
            names.append(name)
            stamps.append(float(frame.timestamp))
        if not names:
            raise ValueError("no frames given to COLMAP")
        o = COLMAP_PIXEL_OFFSET
        if K is not None:
            model, params, refine = "PINHOLE", [K.fx, K.fy, K.cx + o, K.cy + o], False
        else:
            guess = Intrinsics.default_for(W, H)
            model, params, refine = "SIMPLE_PINHOLE", [guess.fx, guess.cx + o, guess.cy + o], True
        args = (str(image_dir), str(work), names, model, params, refine, asdict(opts))
        res = _run_child(args, work, opts.verbose, opts.timeout_s) if opts.isolate else _sfm(*args)
        F = len(names)
        poses = np.full((F, 4, 4), np.nan)
        registered = np.zeros(F, dtype=bool)
        for k, name in enumerate(names):
            if name in res["poses"]:
                T_cw = np.eye(4)
                T_cw[:3] = np.asarray(res["poses"][name])
                poses[k] = invert(T_cw)
                registered[k] = True
        return ColmapResult(np.asarray(stamps), poses, registered, _intrinsics_from_params(model, res["params"]),
                            (int(W), int(H)), time.perf_counter() - t0, float(res["peak_rss_mb"]),
                            int(res["num_points"]), int(res["num_models"]))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # the isolated COLMAP process, see _run_child
    _child_main(sys.argv[1])
