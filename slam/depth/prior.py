"""Monocular depth priors behind one interface.

A :class:`DepthPrior` maps an RGB frame to an **inverse depth known up to scale
and shift** (what affine-invariant monocular networks predict; align it with
:func:`slam.depth.align.align_scale_shift`) and a per-pixel confidence in
``[0, 1]`` (0 where the prior has no value).  Both are ``(H, W)`` float32 at
the resolution of the image handed in, pixel-centre convention of
:mod:`slam.geometry.camera` (maps are resized with ``cv2.resize``, which uses
the same convention).

Kinds (:func:`make_prior`, ``configs/depth/prior.yaml``):

``folder``
    precomputed maps from a folder: ``.npy`` float depth or inverse depth, or
    16-bit ``.png`` storing ``depth * png_scale`` (0 = no value); matched to
    frames by sorted order or by the frame number in the file name.
``onnx``
    an ONNX model run with onnxruntime on the CPU.
``network``
    the project's own monodepth network (:mod:`slam.depth.monodepth`, shipped
    weights ``weights/monodepth_small.pt``).

Every user-facing problem (missing folder or model, count mismatch, unreadable
file) raises :class:`slam.data.sequence.InputError` with a one-line message.
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from slam.data.sequence import InputError
from slam.depth.options import options_from, to_plain

#: Prior kinds understood by :func:`make_prior` (``none`` gives no prior).
PRIOR_KINDS: tuple[str, ...] = ("none", "folder", "onnx", "network")

#: Name of the sidecar file holding the scale of 16-bit PNG depth maps (:mod:`slam.depth.io`).
PNG_SIDECAR: str = "depth_png.json"


class DepthPrior(ABC):
    """A monocular depth prior (see the module docstring)."""

    #: Short name used in logs and summaries.
    name: str = "prior"

    @abstractmethod
    def predict(self, image: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Inverse depth and confidence of one frame.

        Args:
            image: (H, W, 3) uint8 RGB.
            index: frame index in the sequence as yielded (0, 1, ...).
        Returns:
            ``(inverse_depth, confidence)``: (H, W) float32 each; inverse depth up
            to an unknown scale and shift (larger = closer), confidence in ``[0, 1]``
            (0 where there is no value; the inverse depth is 0 there).
        Raises:
            InputError: the prior cannot produce a map for this frame.
        """

    def close(self) -> None:
        """Release resources (sessions, files); the prior is unusable afterwards."""


def _check_image(image: np.ndarray) -> tuple[int, int]:
    """``(H, W)`` of an (H, W, 3) uint8 image, ValueError otherwise."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return int(image.shape[0]), int(image.shape[1])


def to_inverse(values: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert a raw map to ``(inverse_depth, valid)``.

    Args:
        values: (H, W) map.
        kind: ``depth`` (inverted), ``inverse_depth`` or ``disparity`` (both taken
            as proportional to inverse depth up to scale and shift).
    Returns:
        (H, W) float32 inverse depth (0 where invalid) and (H, W) bool validity
        (finite, and positive for ``depth``).
    """
    v = values.astype(np.float32, copy=False)
    valid = np.isfinite(v)
    if kind == "depth":
        valid &= v > 0
        inv = np.where(valid, 1.0 / np.where(valid, v, 1.0), 0.0)
    elif kind in ("inverse_depth", "disparity"):
        inv = np.where(valid, v, 0.0)
    else:
        raise InputError(f"unknown depth map kind {kind!r}; expected depth, inverse_depth or disparity")
    return inv.astype(np.float32), valid


def resize_prior(inv: np.ndarray, conf: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an inverse depth map and its confidence to ``width x height``.

    Bilinear on both, normalised by the resized validity so that invalid pixels
    (confidence 0) do not bleed into valid ones; pixels that mix in any invalid
    neighbour keep a proportionally lower confidence.

    Returns:
        (height, width) float32 inverse depth and confidence.
    """
    h, w = inv.shape
    if (h, w) == (height, width):
        return inv.astype(np.float32), conf.astype(np.float32)
    valid = (conf > 0).astype(np.float32)
    interp = cv2.INTER_AREA if width < w and height < h else cv2.INTER_LINEAR
    num = cv2.resize(inv.astype(np.float32) * valid, (width, height), interpolation=interp)
    den = cv2.resize(valid, (width, height), interpolation=interp)
    c = cv2.resize(conf.astype(np.float32), (width, height), interpolation=interp)
    out = np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    c = np.where(den > 0.999, c, c * den * (den > 1e-6)).astype(np.float32)
    return out, np.clip(c, 0.0, 1.0)


# ----------------------------------------------------------------------- folder
@dataclass
class FolderPriorOptions:
    """Tunables of the ``folder`` prior (``configs/depth/prior.yaml``, ``folder``)."""

    path: str | None = None        #: folder holding one depth map per frame
    ext: str | None = None         #: npy | png; None: whatever is there (npy preferred when both)
    npy_kind: str = "depth"        #: what .npy files hold: depth | inverse_depth | disparity
    png_scale: float | None = None  #: 16-bit PNG value = depth * png_scale; None: sidecar depth_png.json, else 1000
    match: str = "sorted"          #: sorted: k-th file = k-th frame; index: frame number in the file name
    start: int = 0                 #: match=index: frame k uses file number start + k * stride
    stride: int = 1                #: match=index: see start
    missing: str = "error"         #: match=index, no file for a frame: error | empty (confidence 0)


_NUMBER = re.compile(r"(\d+)")


def file_number(name: str) -> int | None:
    """Frame number of a file name: the last run of digits of its stem (``frame_0012.png`` -> 12)."""
    found = _NUMBER.findall(Path(name).stem)
    return int(found[-1]) if found else None


class FolderPrior(DepthPrior):
    """Precomputed per-frame maps from a folder (see :class:`FolderPriorOptions`).

    Args:
        options: the tunables (``path`` is required).
        n_frames: number of frames of the sequence, when known: with
            ``match=sorted`` the folder must hold exactly that many maps.
    Raises:
        InputError: missing/empty folder, count mismatch, duplicate frame numbers, bad options.
    """

    name = "folder"

    def __init__(self, options: FolderPriorOptions | Any, n_frames: int | None = None) -> None:
        self.opt = opt = options_from(FolderPriorOptions, options, "depth.prior.folder")
        if not opt.path:
            raise InputError("depth.prior.folder.path is not set (kind=folder needs a folder of depth maps)")
        root = Path(opt.path).expanduser()
        if not root.is_dir():
            raise InputError(f"depth prior folder {root} does not exist or is not a folder")
        if opt.match not in ("sorted", "index"):
            raise InputError(f"depth.prior.folder.match must be sorted or index, got {opt.match!r}")
        if opt.missing not in ("error", "empty"):
            raise InputError(f"depth.prior.folder.missing must be error or empty, got {opt.missing!r}")
        if opt.npy_kind not in ("depth", "inverse_depth", "disparity"):
            raise InputError(f"depth.prior.folder.npy_kind must be depth, inverse_depth or disparity, "
                             f"got {opt.npy_kind!r}")
        npy = sorted(p for p in root.iterdir() if p.suffix.lower() == ".npy" and not p.name.startswith("."))
        png = sorted(p for p in root.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
        if opt.ext is None:
            files = npy or png
        elif opt.ext in ("npy", "png"):
            files = npy if opt.ext == "npy" else png
        else:
            raise InputError(f"depth.prior.folder.ext must be npy, png or null, got {opt.ext!r}")
        if not files:
            want = "." + opt.ext if opt.ext else ".npy or .png"
            raise InputError(f"depth prior folder {root} holds no {want} depth maps")
        self.root = root
        self.files = files
        self.png_scale = self._png_scale(root) if any(f.suffix.lower() == ".png" for f in files) else None
        self.by_number: dict[int, Path] = {}
        if opt.match == "index":
            for f in files:
                n = file_number(f.name)
                if n is None:
                    raise InputError(f"{f}: no frame number in the file name (depth.prior.folder.match=index)")
                if n in self.by_number:
                    raise InputError(f"{f}: frame number {n} also used by {self.by_number[n].name}")
                self.by_number[n] = f
        elif n_frames is not None and len(files) != n_frames:
            raise InputError(f"depth prior folder {root} has {len(files)} depth maps but the sequence has "
                             f"{n_frames} frames (set depth.prior.folder.match=index to match by frame number)")

    def _png_scale(self, root: Path) -> float:
        if self.opt.png_scale is not None:
            if not float(self.opt.png_scale) > 0:
                raise InputError(f"depth.prior.folder.png_scale must be > 0, got {self.opt.png_scale}")
            return float(self.opt.png_scale)
        side = root / PNG_SIDECAR
        if side.is_file():
            try:
                scale = float(json.loads(side.read_text())["scale"])
            except (OSError, ValueError, KeyError, TypeError):
                raise InputError(f"{side}: unreadable sidecar (expected JSON with a numeric 'scale')") from None
            if not scale > 0:
                raise InputError(f"{side}: scale must be > 0, got {scale}")
            return scale
        return 1000.0

    def file_for(self, index: int) -> Path | None:
        """The file of frame ``index`` (None when ``match=index`` finds none and ``missing=empty``)."""
        if self.opt.match == "sorted":
            if not 0 <= index < len(self.files):
                raise InputError(f"depth prior folder {self.root} has {len(self.files)} depth maps, "
                                 f"no map for frame {index}")
            return self.files[index]
        number = self.opt.start + index * self.opt.stride
        f = self.by_number.get(number)
        if f is None and self.opt.missing == "error":
            raise InputError(f"depth prior folder {self.root}: no depth map with frame number {number} "
                             f"(frame {index})")
        return f

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """``(inverse_depth, valid)`` of one file at its own resolution."""
        if path.suffix.lower() == ".npy":
            try:
                a = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise InputError(f"{path}: cannot read depth map ({e.__class__.__name__})") from None
            a = np.squeeze(a)
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
                raise InputError(f"{path}: depth map must be a 2-D numeric array, found {a.dtype} {a.shape}")
            return to_inverse(a, self.opt.npy_kind)
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise InputError(f"{path}: cannot read depth map (not an image)")
        if a.ndim != 2 or a.dtype != np.uint16:
            raise InputError(f"{path}: expected a single-channel 16-bit PNG depth map, found {a.dtype} {a.shape}")
        d = a.astype(np.float32) / np.float32(self.png_scale)
        d[a == 0] = np.nan
        return to_inverse(d, "depth")

    def predict(self, image: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        H, W = _check_image(image)
        f = self.file_for(int(index))
        if f is None:
            return np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
        inv, valid = self.read(f)
        return resize_prior(inv, valid.astype(np.float32), H, W)


# ------------------------------------------------------------------------- onnx
@dataclass
class OnnxPriorOptions:
    """Tunables of the ``onnx`` prior (``configs/depth/prior.yaml``, ``onnx``)."""

    path: str | None = None               #: the .onnx model file
    input_name: str | None = None         #: model input fed with the image; None: the first input
    output_name: str | None = None        #: model output read as the map; None: the first output
    confidence_output: str | None = None  #: optional output read as confidence in [0, 1] (clipped)
    size: tuple[int, int] | None = None   #: (W, H) fed to a model with dynamic spatial axes; None: image size
    multiple: int = 1                     #: dynamic models: round the fed size to a multiple of this
    layout: str = "nchw"                  #: input layout: nchw | nhwc
    channels: str = "rgb"                 #: channel order fed: rgb | bgr
    value_range: str = "0-1"              #: pixel scale before normalisation: 0-1 | 0-255
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  #: subtracted per channel (after scaling)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)   #: divided per channel (after subtracting mean)
    output: str = "inverse_depth"         #: what the output is: depth | inverse_depth | disparity
    threads: int = 0                      #: onnxruntime intra-op threads (0: its default)


class OnnxPrior(DepthPrior):
    """A monodepth model exported to ONNX, run with onnxruntime's CPU provider.

    The image is resized to the model's static input size when it has one
    (else ``size``, else the image size rounded to ``multiple``), scaled to
    ``value_range``, normalised with ``mean`` / ``std``, fed as a float32 batch of
    one; the output (``(1, 1, h, w)``, ``(1, h, w)`` or ``(h, w)``) is converted
    to inverse depth and resized back to the image size.

    Raises:
        InputError: missing or unloadable model, unknown input/output names, bad options.
    """

    name = "onnx"

    def __init__(self, options: OnnxPriorOptions | Any) -> None:
        self.opt = opt = options_from(OnnxPriorOptions, options, "depth.prior.onnx")
        if not opt.path:
            raise InputError("depth.prior.onnx.path is not set (kind=onnx needs a model file)")
        path = Path(opt.path).expanduser()
        if not path.is_file():
            raise InputError(f"ONNX depth model {path} does not exist")
        for key, val, allowed in (("layout", opt.layout, ("nchw", "nhwc")), ("channels", opt.channels, ("rgb", "bgr")),
                                  ("value_range", opt.value_range, ("0-1", "0-255")),
                                  ("output", opt.output, ("depth", "inverse_depth", "disparity"))):
            if val not in allowed:
                raise InputError(f"depth.prior.onnx.{key} must be one of {', '.join(allowed)}, got {val!r}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError("the onnx depth prior needs onnxruntime (pip install onnxruntime)") from None
        so = ort.SessionOptions()
        if opt.threads:
            so.intra_op_num_threads = int(opt.threads)
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for corrupt models
            msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise InputError(f"cannot load ONNX depth model {path}: {msg[:200]}") from None
        self.path = path
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self.input_name = opt.input_name or next(iter(inputs))
        self.output_name = opt.output_name or outputs[0]
        if self.input_name not in inputs:
            raise InputError(f"{path}: no input named {self.input_name!r} (inputs: {', '.join(inputs)})")
        for out in (self.output_name, opt.confidence_output):
            if out is not None and out not in outputs:
                raise InputError(f"{path}: no output named {out!r} (outputs: {', '.join(outputs)})")
        shape = list(inputs[self.input_name].shape)
        if len(shape) != 4:
            raise InputError(f"{path}: input {self.input_name!r} must be 4-D (batch, ...), found shape {shape}")
        hw = shape[2:4] if opt.layout == "nchw" else shape[1:3]
        #: (H, W) static input size of the model, or None when its spatial axes are dynamic.
        self.static_size: tuple[int, int] | None = (
            (int(hw[0]), int(hw[1])) if all(isinstance(v, int) and v > 0 for v in hw) else None)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` fed to the model for an image of ``height x width``."""
        if self.static_size is not None:
            return self.static_size
        if self.opt.size is not None:
            w, h = (int(v) for v in self.opt.size)
        else:
            h, w = height, width
        m = max(1, int(self.opt.multiple))
        return max(m, round(h / m) * m), max(m, round(w / m) * m)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> the model's float32 input batch of one."""
        H, W = _check_image(image)
        h, w = self.input_size(H, W)
        img = image
        if (h, w) != (H, W):
            interp = cv2.INTER_AREA if w < W and h < H else cv2.INTER_LINEAR
            img = cv2.resize(image, (w, h), interpolation=interp)
        x = img.astype(np.float32)
        if self.opt.channels == "bgr":
            x = x[..., ::-1]
        if self.opt.value_range == "0-1":
            x = x / 255.0
        x = (x - np.asarray(self.opt.mean, np.float32)) / np.asarray(self.opt.std, np.float32)
        x = x[None] if self.opt.layout == "nhwc" else x.transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x, dtype=np.float32)

    @staticmethod
    def _as_map(a: np.ndarray, what: str) -> np.ndarray:
        a = np.asarray(a)
        while a.ndim > 2 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2:
            raise InputError(f"ONNX depth model: {what} must be one map per image, found shape {a.shape}")
        return a.astype(np.float32)

    def predict(self, image: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        H, W = _check_image(image)
        names = [self.output_name] + ([self.opt.confidence_output] if self.opt.confidence_output else [])
        res = self.session.run(names, {self.input_name: self.preprocess(image)})
        inv, valid = to_inverse(self._as_map(res[0], f"output {self.output_name!r}"), self.opt.output)
        conf = valid.astype(np.float32)
        if self.opt.confidence_output:
            c = self._as_map(res[1], f"output {self.opt.confidence_output!r}")
            if c.shape != inv.shape:
                c = cv2.resize(c, (inv.shape[1], inv.shape[0]), interpolation=cv2.INTER_LINEAR)
            conf = np.where(valid, np.clip(np.nan_to_num(c), 0.0, 1.0), 0.0).astype(np.float32)
        return resize_prior(inv, conf, H, W)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


# ---------------------------------------------------------------------- network
@dataclass
class NetworkPriorOptions:
    """Options of :class:`NetworkPrior` (``configs/depth/prior.yaml``, ``network``)."""

    weights: str | None = None             #: checkpoint (None: the shipped weights/monodepth_small.pt)
    size: tuple[int, int] | str | None = "checkpoint"  #: (W, H) the image is resized to; "checkpoint": the
                                                        #: checkpoint's training size; None: as is
    device: str = "cpu"                    #: torch device of the network


class NetworkPrior(DepthPrior):
    """The project's own monodepth network (:mod:`slam.depth.monodepth`); confidence 1 everywhere."""

    name = "network"

    def __init__(self, options: NetworkPriorOptions | Any = None) -> None:
        from slam.depth.monodepth import load_monodepth

        self.opt = options_from(NetworkPriorOptions, options, "depth.prior.network")
        self.model = load_monodepth(self.opt.weights, self.opt.device)
        size = self.opt.size
        if isinstance(size, str):
            if size != "checkpoint":
                raise InputError(f"depth.prior.network.size must be [W, H], null or checkpoint, not {size!r}")
            size = self.model.train_size
        try:
            ok = not size or (len(size) == 2 and min(int(v) for v in size) > 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"depth.prior.network.size must be [W, H] (positive), null or checkpoint, not {size!r}")
        #: (W, H) the network sees, or None (the image as is): an adapted checkpoint's own training size
        self.size: tuple[int, int] | None = (int(size[0]), int(size[1])) if size else None

    def predict(self, image: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        _check_image(image)
        inv = self.model.predict(image, self.size).astype(np.float32)
        return inv, np.ones_like(inv)


# ---------------------------------------------------------------------- factory
#: Keys of the prior config node that are not options of a prior kind.
_OTHER_KEYS: tuple[str, ...] = ("kind", "folder", "onnx", "network", "align", "weight", "min_disp_ratio")


def make_prior(cfg: Any, n_frames: int | None = None) -> DepthPrior | None:
    """The depth prior described by a ``configs/depth/prior.yaml`` node.

    Args:
        cfg: mapping / OmegaConf node with ``kind`` (``none | folder | onnx |
            network``) and a sub-node of options per kind (``folder``, ``onnx``,
            ``network``); the ``align`` and ``weight`` sub-nodes are ignored here.
            A plain string is taken as the kind.
        n_frames: frames in the sequence, when known (checked by ``folder``).
    Returns:
        the prior, or None for ``kind: none`` (or a None config).
    Raises:
        InputError: unknown kind, missing/bad folder, model or network weights.
    """
    if cfg is None:
        return None
    cfg = to_plain(cfg)
    if isinstance(cfg, str):
        cfg = {"kind": cfg}
    if not isinstance(cfg, dict):
        raise InputError(f"depth.prior: expected a mapping, got {type(cfg).__name__}")
    kind = cfg.get("kind", "none")
    kind = "none" if kind is None else str(kind)
    if kind not in PRIOR_KINDS:
        raise InputError(f"depth.prior.kind must be one of {', '.join(PRIOR_KINDS)}, got {kind!r}")
    unknown = sorted(set(cfg) - set(_OTHER_KEYS))
    if unknown:
        raise InputError(f"depth.prior: unknown option(s) {', '.join(unknown)}")
    if kind == "none":
        return None
    if kind == "folder":
        return FolderPrior(cfg.get("folder"), n_frames=n_frames)
    if kind == "onnx":
        return OnnxPrior(cfg.get("onnx"))
    return NetworkPrior(cfg.get("network"))
