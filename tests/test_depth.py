"""Depth priors (folder, ONNX, network stub), alignment, BA weight rule, video depth, writers, metrics."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from slam.data.sequence import InputError
from slam.data.synthetic import make_world
from slam.depth import (
    DepthWriter,
    KeyframeDepth,
    align_scale_shift,
    depth_metrics,
    estimate_video_depth,
    fuse_depth_cloud,
    iter_video_depth,
    make_prior,
    prior_weight_from_hessian,
    read_depth,
    read_depth_folder,
)
from slam.depth.align import AlignOptions, PriorWeightOptions
from slam.depth.prior import DepthPrior, FolderPriorOptions, OnnxPrior, OnnxPriorOptions
from slam.depth.video_depth import VIDEO_CONFIG_EXTRAS, VideoDepthOptions

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "depth"


@pytest.fixture
def one_thread():
    """Single-threaded torch (the video-depth loop is many small ops; threads only contend on shared CPUs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth (H, W, 3) uint8 RGB test image."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([255 * u / max(w - 1, 1), 255 * v / max(h - 1, 1), 128 + 60 * np.sin(u / 7 + seed)], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _planes(n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w) positive depth maps: slanted planes, different per frame."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([2.0 + k * 0.5 + 0.01 * u + 0.02 * v for k in range(n)]).astype(np.float32)


# ------------------------------------------------------------------- folder prior
def test_folder_prior_npy(tmp_path):
    d = _planes(3, 24, 32)
    for k in range(3):
        np.save(tmp_path / f"d{k:03d}.npy", d[k])
    prior = make_prior({"kind": "folder", "folder": {"path": str(tmp_path)}}, n_frames=3)
    assert isinstance(prior, DepthPrior) and prior.name == "folder"
    inv, conf = prior.predict(_image(24, 32), 1)
    assert inv.shape == (24, 32) and inv.dtype == np.float32 and conf.dtype == np.float32
    np.testing.assert_allclose(inv, 1.0 / d[1], rtol=1e-6)
    np.testing.assert_array_equal(conf, 1.0)
    # resized to the image handed in (bilinear on a plane's inverse depth stays close)
    inv2, _conf2 = prior.predict(_image(48, 64), 2)
    assert inv2.shape == (48, 64)
    ref = cv2.resize(1.0 / d[2], (64, 48), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(inv2, ref, rtol=1e-5)
    # inverse-depth maps are taken as they are; invalid values get confidence 0
    bad = d[0].copy()
    bad[0, 0] = np.nan
    np.save(tmp_path / "d000.npy", 1.0 / bad)
    p2 = make_prior({"kind": "folder", "folder": {"path": str(tmp_path), "npy_kind": "inverse_depth"}})
    inv3, conf3 = p2.predict(_image(24, 32), 0)
    assert conf3[0, 0] == 0 and inv3[0, 0] == 0 and conf3[1:, 1:].min() == 1.0
    np.testing.assert_allclose(inv3[1:, 1:], 1.0 / d[0][1:, 1:], rtol=1e-6)


def test_folder_prior_png_by_index(tmp_path):
    d = _planes(4, 20, 30)
    for k in range(4):  # every 2nd input frame, numbered like TartanAir
        v = np.rint(d[k] * 1000).astype(np.uint16)
        v[0, :3] = 0  # no value
        cv2.imwrite(str(tmp_path / f"{2 * k:06d}_left_depth.png"), v)
    cfg = {"kind": "folder", "folder": {"path": str(tmp_path), "match": "index", "stride": 2, "png_scale": 1000.0}}
    prior = make_prior(cfg)
    inv, conf = prior.predict(_image(20, 30), 3)  # frame 3 -> file number 6
    np.testing.assert_allclose(inv[1:], 1.0 / d[3][1:], rtol=1e-3)
    assert (conf[0, :3] == 0).all() and (inv[0, :3] == 0).all() and conf[1:].min() == 1.0
    with pytest.raises(InputError, match="frame number 8"):
        prior.predict(_image(20, 30), 4)
    cfg["folder"]["missing"] = "empty"
    inv, conf = make_prior(cfg).predict(_image(20, 30), 4)
    assert not conf.any() and not inv.any()
    # the scale comes from the sidecar when not configured
    (tmp_path / "depth_png.json").write_text(json.dumps({"scale": 500.0}))
    cfg["folder"]["png_scale"] = None
    inv, _ = make_prior(cfg).predict(_image(20, 30), 0)
    np.testing.assert_allclose(inv[1:], 0.5 / d[0][1:], rtol=1e-3)


def test_folder_prior_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        make_prior({"kind": "folder", "folder": {"path": str(tmp_path / "nope")}})
    with pytest.raises(InputError, match="not set"):
        make_prior({"kind": "folder"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .npy or .png"):
        make_prior({"kind": "folder", "folder": {"path": str(empty)}})
    good = tmp_path / "good"
    good.mkdir()
    for k in range(2):
        np.save(good / f"{k}.npy", np.ones((4, 4), np.float32))
    with pytest.raises(InputError, match="2 depth maps but the sequence has 3 frames"):
        make_prior({"kind": "folder", "folder": {"path": str(good)}}, n_frames=3)
    with pytest.raises(InputError, match="no map for frame 5"):
        make_prior({"kind": "folder", "folder": {"path": str(good)}}).predict(_image(4, 4), 5)
    (good / "2.npy").write_bytes(b"this is not numpy")
    with pytest.raises(InputError, match=r"2\.npy: cannot read"):
        make_prior({"kind": "folder", "folder": {"path": str(good)}}).predict(_image(4, 4), 2)
    pngs = tmp_path / "png8"
    pngs.mkdir()
    cv2.imwrite(str(pngs / "0.png"), np.full((4, 4), 9, np.uint8))
    with pytest.raises(InputError, match="16-bit"):
        make_prior({"kind": "folder", "folder": {"path": str(pngs)}}).predict(_image(4, 4), 0)
    with pytest.raises(InputError, match="unknown option"):
        make_prior({"kind": "folder", "folder": {"path": str(good), "colour": 1}})
    with pytest.raises(InputError, match="kind must be one of"):
        make_prior({"kind": "lidar"})


# --------------------------------------------------------------------- onnx prior
class _Grey(torch.nn.Module):
    """depth = 2 + mean of the (already normalised) channels: an image-derived map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 3.0)
            self.conv.bias.fill_(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _export(path: Path, h: int, w: int, dynamic: bool = False) -> Path:
    kw = {"dynamic_axes": {"image": {2: "h", 3: "w"}, "depth": {2: "h", 3: "w"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Grey().eval(), (torch.zeros(1, 3, h, w),), str(path), input_names=["image"],
                          output_names=["depth"], dynamo=False, **kw)
    return path


def test_onnx_prior(tmp_path):
    model = _export(tmp_path / "grey.onnx", 24, 32)
    cfg = {"kind": "onnx", "onnx": {"path": str(model), "mean": [0, 0, 0], "std": [1, 1, 1], "output": "depth"}}
    prior = make_prior(cfg)
    assert isinstance(prior, OnnxPrior) and prior.static_size == (24, 32)
    img = _image(60, 80)
    inv, conf = prior.predict(img, 0)
    assert inv.shape == (60, 80) and conf.shape == (60, 80) and inv.dtype == np.float32
    assert conf.min() == 1.0
    expected = 1.0 / (2.0 + img.astype(np.float64).mean(-1) / 255.0)
    assert np.abs(inv - expected).max() < 0.01  # resized to 32x24 and back: smooth image, small error
    # the same through the dynamic-axes export, fed at the image size rounded to `multiple`
    dyn = _export(tmp_path / "dyn.onnx", 24, 32, dynamic=True)
    cfg["onnx"].update(path=str(dyn), multiple=8, value_range="0-255", mean=[0, 0, 0], std=[255, 255, 255])
    p2 = make_prior(cfg)
    assert p2.static_size is None and p2.input_size(60, 80) == (64, 80)
    inv2, _ = p2.predict(img, 0)
    assert inv2.shape == (60, 80) and np.abs(inv2 - expected).max() < 0.01
    # output kinds: inverse depth / disparity are taken as they are
    cfg["onnx"]["output"] = "disparity"
    inv3, _ = make_prior(cfg).predict(img, 0)
    assert np.abs(inv3 - 1.0 / expected).max() < 0.05


def test_onnx_prior_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        make_prior({"kind": "onnx", "onnx": {"path": str(tmp_path / "missing.onnx")}})
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model" * 10)
    with pytest.raises(InputError, match="cannot load ONNX depth model"):
        make_prior({"kind": "onnx", "onnx": {"path": str(bad)}})
    model = _export(tmp_path / "grey.onnx", 8, 8)
    with pytest.raises(InputError, match="no input named"):
        OnnxPrior(OnnxPriorOptions(path=str(model), input_name="rgb"))
    with pytest.raises(InputError, match="output must be one of"):
        make_prior({"kind": "onnx", "onnx": {"path": str(model), "output": "normals"}})


def test_network_prior_with_shipped_weights(tmp_path):
    """The shipped monodepth network, on worlds it never saw, gives depth closer to the truth
    than a flat map (median-scaled); bad checkpoints give one-line errors."""
    from slam.depth.metrics import depth_metrics

    prior = make_prior({"kind": "network"})
    pred, gt = [], []
    for seed, scene in ((7, "room"), (8, "clutter"), (9, "street")):
        w = make_world(seed=seed, scene=scene, motion="handheld", frames=4, width=160, height=120)
        inv, conf = prior.predict(w[2].image, 2)
        assert inv.shape == (120, 160) and (inv >= 0).all() and (conf == 1).all()
        d = w.depth(2)
        ok = d > 0  # inverse depth up to scale and shift: aligned to the truth, as the system aligns it
        s, t = align_scale_shift(inv[ok], 1.0 / d[ok], None, {"loss": "l2"})
        pred.append(np.clip(1.0 / np.maximum(s * inv + t, 1e-9), d[ok].min(), d[ok].max()))
        gt.append(d)
    net = depth_metrics(np.stack(pred), np.stack(gt))
    flat = depth_metrics(np.ones_like(np.stack(gt)), np.stack(gt))
    assert net["abs_rel"] < 0.8 * flat["abs_rel"] and net["delta_1.25"] > flat["delta_1.25"]
    with pytest.raises(InputError, match="not found"):
        make_prior({"kind": "network", "network": {"weights": str(tmp_path / "none.pt")}})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        make_prior({"kind": "network", "network": {"weights": str(bad)}})
    torch.save({"kind": "corrnet"}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a monodepth checkpoint"):
        make_prior({"kind": "network", "network": {"weights": str(tmp_path / "other.pt")}})


def test_network_prior_uses_the_checkpoints_training_size(tmp_path):
    """An adapted checkpoint records the size it was trained at (slam adapt-depth writes
    provenance["train_size"]); the prior feeds the network that size unless told otherwise."""
    from slam.depth.monodepth import SHIPPED_TRAIN_SIZE, load_monodepth, save_monodepth

    assert make_prior({"kind": "network"}).size == SHIPPED_TRAIN_SIZE == (128, 96)
    adapted = tmp_path / "adapted.pt"
    save_monodepth(adapted, load_monodepth(), {"command": "test", "train_size": [64, 48]})
    prior = make_prior({"kind": "network", "network": {"weights": str(adapted)}})
    assert prior.size == (64, 48)
    calls = []
    orig = prior.model.predict
    prior.model.predict = lambda image, size: calls.append(size) or orig(image, size)
    inv, _ = prior.predict(np.zeros((120, 160, 3), np.uint8), 0)
    assert calls == [(64, 48)] and inv.shape == (120, 160)
    assert make_prior({"kind": "network", "network": {"weights": str(adapted), "size": [96, 64]}}).size == (96, 64)
    assert make_prior({"kind": "network", "network": {"weights": str(adapted), "size": None}}).size is None
    for bad in ("big", [96], [96, -1], ["a", 64]):
        with pytest.raises(InputError, match="size"):
            make_prior({"kind": "network", "network": {"size": bad}})


def test_prior_none():
    assert make_prior({"kind": "none"}) is None and make_prior(None) is None and make_prior("none") is None
    assert make_prior(OmegaConf.load(CONFIGS / "prior.yaml")) is None  # the shipped default: no prior


# ---------------------------------------------------------- alignment and weights
def test_align_scale_shift_with_outliers():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.2, 2.0, 5000)
    s, t = 0.37, 0.21
    target = s * pred + t + 0.002 * rng.standard_normal(pred.size)
    out = rng.random(pred.size) < 0.25  # a quarter of gross outliers
    target[out] = rng.uniform(0, 3, out.sum())
    s_hat, t_hat = align_scale_shift(pred, target, np.ones_like(pred))
    assert abs(s_hat - s) < 5e-3 and abs(t_hat - t) < 5e-3
    s_l2, _t_l2 = align_scale_shift(pred, target, None, AlignOptions(loss="l2"))
    assert abs(s_l2 - s) > 0.05  # plain least squares is pulled away by the outliers
    s_c, t_c = align_scale_shift(torch.as_tensor(pred), torch.as_tensor(target), None, {"loss": "cauchy"})
    assert abs(s_c - s) < 5e-3 and abs(t_c - t) < 5e-3
    # weights: a zero weight removes the outliers exactly
    s_w, t_w = align_scale_shift(pred, target, (~out).astype(float), {"loss": "l2"})
    assert abs(s_w - s) < 1e-3 and abs(t_w - t) < 1e-3
    # constant prediction: scale only
    assert align_scale_shift(np.full(10, 2.0), np.full(10, 3.0)) == pytest.approx((1.5, 0.0))
    with pytest.raises(ValueError):
        align_scale_shift(pred, target, np.zeros_like(pred))


@pytest.mark.parametrize("mode", ["linear", "smooth"])
def test_prior_weight_rule(mode):
    cfg = PriorWeightOptions(mode=mode, w_max=2.0, h_thresh=10.0, h_lo=0.5)
    h = np.concatenate([[0.0], np.geomspace(1e-4, 1e3, 300)]).reshape(1, 1, -1)
    w = prior_weight_from_hessian(h, cfg)
    assert isinstance(w, np.ndarray) and w.shape == h.shape
    w = w.ravel()
    assert w[0] == pytest.approx(2.0)
    assert np.all(np.diff(w) <= 1e-12)  # monotone non-increasing
    assert np.all(w[h.ravel() >= 10.0] == 0.0) and np.all(w[h.ravel() < 10.0] > 0)
    # torch in, torch out (device and dtype kept); mapping config
    ht = torch.as_tensor(h, dtype=torch.float64)
    wt = prior_weight_from_hessian(ht, {"mode": mode, "w_max": 2.0, "h_thresh": 10.0, "h_lo": 0.5})
    assert torch.is_tensor(wt) and wt.dtype == torch.float64
    np.testing.assert_allclose(wt.numpy().ravel(), w)
    # scale-invariant form: the rule on H * disp^2, weight divided by disp^2
    disp = np.full_like(h, 0.5)
    ws = prior_weight_from_hessian(h, cfg, disp=disp)
    np.testing.assert_allclose(ws, prior_weight_from_hessian(h * 0.25, cfg) / 0.25)
    with pytest.raises(InputError):
        prior_weight_from_hessian(h, {"mode": "step"})


# -------------------------------------------------------------------- video depth
class DistortedPrior(DepthPrior):
    """Ground-truth inverse depth x a smooth multiplicative field x noise, with a random scale and shift."""

    name = "distorted"

    def __init__(self, gt: np.ndarray, amplitude: float = 0.3, noise: float = 0.05) -> None:
        self.gt, self.amplitude, self.noise = gt, amplitude, noise

    def predict(self, image: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(index)
        d = self.gt[index]
        h, w = d.shape
        v, u = np.mgrid[0:h, 0:w] / max(h, w)
        field = np.exp(self.amplitude * np.sin(2 * np.pi * (u * rng.uniform(0.5, 1.5) + rng.uniform()))
                       * np.cos(2 * np.pi * (v * rng.uniform(0.5, 1.5) + rng.uniform())))
        inv = np.where(d > 0, 1 / np.maximum(d, 1e-6), 0) * field * (1 + self.noise * rng.standard_normal(d.shape))
        inv = rng.uniform(0.5, 2) * inv + rng.uniform(0, 0.2)
        return inv.astype(np.float32), (d > 0).astype(np.float32)


@pytest.fixture(scope="module")
def orbit():
    from slam.data.synthetic import make_world

    seq = make_world(seed=1, scene="table", motion="orbit", frames=10, width=128, height=96)
    images = [seq[k].image for k in range(len(seq))]
    gt = np.stack([seq[k].depth for k in range(len(seq))])
    return seq, images, gt


def test_video_depth_beats_prior(orbit, one_thread):
    seq, images, gt = orbit
    prior = DistortedPrior(gt)
    raw = np.stack([1.0 / np.maximum(prior.predict(im, k)[0], 1e-6) for k, im in enumerate(images)])
    m_prior = depth_metrics(raw, gt)
    res = estimate_video_depth(iter(images), seq.gt_poses, seq.intrinsics, prior=prior,
                               options={"iters": 60, "chunk": 6})
    assert res.depth.shape == gt.shape and res.depth.dtype == np.float32
    assert res.confidence.shape == gt.shape and 0 <= res.confidence.min() and res.confidence.max() <= 1
    assert res.working_size == (128, 96) and res.stats["flow_pairs"] > 0
    m = depth_metrics(res.depth, gt)
    assert m["abs_rel"] < 0.08 and m["abs_rel"] < 0.6 * m_prior["abs_rel"], (m, m_prior)
    assert m["delta_1.25"] > 0.93 and m["delta_1.25"] > m_prior["delta_1.25"]
    # poses carry the scale: the output is in their units without median scaling
    assert abs(m["scale"] - 1.0) < 0.05
    # confident pixels are more accurate than the rest
    conf = res.confidence > 0.5
    assert conf.mean() > 0.1
    assert depth_metrics(res.depth, gt, conf)["abs_rel"] < m["abs_rel"]


def test_video_depth_working_resolution_and_initial_depth(orbit, one_thread):
    seq, images, gt = orbit
    n = 6
    K = seq.intrinsics
    # initial depth from "keyframes": ground truth every 3rd frame at 1/4 resolution, warped to the others
    kf = np.arange(0, n, 3)
    small = np.stack([cv2.resize(gt[k], (32, 24), interpolation=cv2.INTER_NEAREST) for k in kf])
    Ks = K.scaled(32, 24).as_array()
    init = KeyframeDepth(kf, np.where(small > 0, 1.0 / np.maximum(small, 1e-6), 0.0), Ks, seq.gt_poses[:n])
    assert len(init) == n and init[1].shape == (24, 32)
    m_init = depth_metrics(np.stack([cv2.resize(init[k], (128, 96)) for k in range(n)]), gt[:n])
    assert m_init["abs_rel"] < 0.1
    stats: dict = {}
    out = list(iter_video_depth(images[:n], seq.gt_poses[:n], K.as_array(), initial_depth=init,
                                options={"iters": 30, "max_pixels": 64 * 48, "texture_mode": "tensor"}, stats=stats))
    assert [k for k, _, _ in out] == list(range(n)) and stats["working_size"] == (64, 48)
    depth = np.stack([d for _, d, _ in out])
    assert depth.shape == (n, 96, 128)
    m = depth_metrics(depth, gt[:n])
    assert m["abs_rel"] < 0.08 and abs(m["scale"] - 1.0) < 0.05, m


def test_video_depth_errors():
    poses = np.tile(np.eye(4), (3, 1, 1))
    with pytest.raises(InputError, match="3 poses but only 2 frames"):
        estimate_video_depth([_image(16, 16)] * 2, poses, [16, 16, 7.5, 7.5])
    with pytest.raises(InputError, match="is 8x8 but frame 0"):
        estimate_video_depth([_image(16, 16), _image(8, 8), _image(16, 16)], poses, [16, 16, 7.5, 7.5])
    with pytest.raises(InputError, match="single frame"):
        estimate_video_depth([_image(16, 16)], poses[:1], [16, 16, 7.5, 7.5])
    with pytest.raises(InputError, match="unknown option"):
        estimate_video_depth([_image(16, 16)], poses[:1], [16, 16, 7.5, 7.5], options={"gap": 3})


# ------------------------------------------------------------------ writers, cloud
def test_writers_round_trip(tmp_path):
    d = _planes(3, 20, 30) * 1.7
    d[0, 0, 0] = 0.0  # unknown
    w = DepthWriter(tmp_path / "depth")
    for k in range(3):
        w.write(10 + k, d[k])
    w.close()
    side = json.loads((tmp_path / "depth" / "depth_png.json").read_text())
    scale = side["scale"]
    assert side["clipped_pixels"] == 0 and scale * d.max() < 65535
    idx, npy = read_depth_folder(tmp_path / "depth", "npy")
    np.testing.assert_array_equal(idx, [10, 11, 12])
    np.testing.assert_array_equal(npy, d)
    _, png = read_depth_folder(tmp_path / "depth", "png")
    assert np.abs(png - d).max() <= 0.5 / scale + 1e-6 and png[0, 0, 0] == 0
    assert cv2.imread(str(tmp_path / "depth" / "depth_000011.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    np.testing.assert_allclose(read_depth(tmp_path / "depth" / "depth_000012.png"), png[2])
    # the folder is a depth prior: png through its sidecar, npy preferred when both exist
    for ext in ("png", "npy"):
        prior = make_prior({"kind": "folder", "folder": {"path": str(tmp_path / "depth"), "ext": ext,
                                                         "match": "index", "start": 10}})
        inv, _conf = prior.predict(_image(20, 30), 1)
        np.testing.assert_allclose(inv, 1.0 / d[1], rtol=1e-3)
    # a fixed scale clips what does not fit
    w2 = DepthWriter(tmp_path / "fixed", formats=("png",), png_scale=20000.0)
    w2.write(0, d[0])
    w2.close()
    assert json.loads((tmp_path / "fixed" / "depth_png.json").read_text())["clipped_pixels"] > 0
    with pytest.raises(InputError):
        DepthWriter(tmp_path / "x", formats=("exr",))


def test_fuse_depth_cloud_plane():
    # cameras at z ~ 0 looking at the plane z = 4 (world), moving sideways
    n, h, w = 4, 24, 32
    K = np.array([30.0, 30.0, 15.5, 11.5])
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = np.linspace(-0.3, 0.3, n)
    depth = np.full((n, h, w), 4.0, np.float32)
    depth[1, :4, :4] = 9.0  # inconsistent with the neighbours: removed by the check
    images = np.stack([_image(h * 2, w * 2, k) for k in range(n)])  # colours at another resolution
    xyz, rgb = fuse_depth_cloud(depth, images, poses, K, pixel_stride=1, neighbours=1, min_views=1)
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8 and xyz.shape == rgb.shape
    np.testing.assert_allclose(xyz[:, 2], 4.0, atol=1e-5)
    assert len(xyz) < n * h * w and len(xyz) > 0.7 * n * h * w
    # the lifted pixel (u, v) of frame 0 is at x = (u - cx) / fx * 4 + tx
    xyz0, _ = fuse_depth_cloud(depth[:1], None, poses[:1], K, pixel_stride=1, min_views=0)
    u = (xyz0[:, 0] - poses[0, 0, 3]) / 4.0 * K[0] + K[2]
    np.testing.assert_allclose(np.sort(np.unique(np.round(u, 4))), np.arange(w), atol=1e-3)
    sub, _ = fuse_depth_cloud(depth, images, poses, K, pixel_stride=2, min_views=0, max_points=100)
    assert len(sub) == 100


def test_keyframe_depth_plane():
    n, h, w = 5, 24, 32
    K = np.array([30.0, 30.0, 15.5, 11.5])
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = np.linspace(0.0, 0.4, n)
    poses[:, 2, 3] = np.linspace(0.0, 0.5, n)  # moving towards the plane z = 4
    kd = KeyframeDepth([0, 4], np.stack([np.full((h, w), 1 / 4.0), np.full((h, w), 1 / 3.5)]), K, poses)
    # keyframe 4 sees the plane at depth 3.5: its inverse depth is 1 / 3.5
    np.testing.assert_allclose(kd[4], 3.5, rtol=1e-6)
    mid = kd[2]
    np.testing.assert_allclose(mid, 4.0 - poses[2, 2, 3], rtol=1e-5)


# ------------------------------------------------------------------------ metrics
def test_depth_metrics():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 10, (3, 8, 8))
    m = depth_metrics(2.5 * gt, gt)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12) and m["delta_1.25"] == 1.0 and m["frames"] == 3
    pred = gt * np.array([1.0, 2.0, 3.0])[:, None, None]
    assert depth_metrics(pred, gt)["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert depth_metrics(pred, gt, per_frame=False)["abs_rel"] > 0.2  # one scale cannot fit all frames
    noisy = gt * 1.1
    noisy[:, 0, 0] = gt[:, 0, 0] * 5  # one pixel per frame far off
    m = depth_metrics(noisy, gt)
    assert m["delta_1.25"] == pytest.approx(63 / 64)
    valid = np.ones_like(gt, bool)
    valid[:, 0, 0] = False
    assert depth_metrics(noisy, gt, valid)["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    gt0 = gt.copy()
    gt0[0] = 0  # no ground truth in frame 0: not counted
    assert depth_metrics(gt0 * 2, gt0)["frames"] == 2
    assert np.isnan(depth_metrics(gt, np.zeros_like(gt))["abs_rel"])
    assert depth_metrics(gt[0], gt[0])["frames"] == 1


# ------------------------------------------------------------------------ configs
@pytest.mark.parametrize("cls,node", [(VideoDepthOptions, "video"), (FolderPriorOptions, "prior.folder"),
                                      (OnnxPriorOptions, "prior.onnx"), (AlignOptions, "prior.align"),
                                      (PriorWeightOptions, "prior.weight")])
def test_configs_mirror_defaults(cls, node):
    import dataclasses

    name, *path = node.split(".")
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    for p in path:
        cfg = cfg[p]
    extras = set(VIDEO_CONFIG_EXTRAS) if cls is VideoDepthOptions else set()
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    assert set(cfg) - extras == set(fields)
    for k, v in fields.items():
        got = tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]
        assert got == v, k


def test_slam_run_writes_consistent_video_depth(tmp_path):
    """`slam run ... depth.video.enabled=true`: one depth map per frame at input resolution
    (.npy and 16-bit PNG reading back the same), within an error bound of the ground truth,
    fused into points.ply."""
    import json

    from slam.cli import main as cli
    from slam.depth.io import read_depth
    from slam.depth.metrics import depth_metrics
    from slam.io.ply import read_ply

    seq = tmp_path / "seq"
    assert cli(["synth", str(seq), "--seed", "5", "--frames", "20", "--size", "160x120", "--scene", "table",
                "--motion", "orbit", "--depth", "--quiet"]) == 0
    out = tmp_path / "run"
    assert cli(["run", str(seq), "--out", str(out), "--no-progress", "correspondence=oracle",
                "depth.video.enabled=true"]) == 0
    npy = sorted((out / "depth").glob("depth_*.npy"))
    png = sorted((out / "depth").glob("depth_*.png"))
    conf = sorted((out / "depth").glob("confidence_*.png"))
    assert len(npy) == len(png) == len(conf) == 20
    d0 = read_depth(npy[0])
    assert d0.shape == (120, 160) and (d0 > 0).mean() > 0.9
    p0 = read_depth(png[0])
    ok = d0 > 0
    np.testing.assert_allclose(p0[ok], d0[ok], atol=1.0 / json.loads((out / "depth" / "depth_png.json").read_text())["scale"])
    gt = np.stack([np.load(f) for f in sorted((seq / "depth").glob("*.npy"))])
    m = depth_metrics(np.stack([read_depth(f) for f in npy]), gt)
    assert m["abs_rel"] < 0.12 and m["delta_1.25"] > 0.9
    xyz, rgb = read_ply(out / "points.ply")
    summary = json.loads((out / "summary.json").read_text())
    assert len(xyz) == summary["points"] > 10000 and summary["points_from"] == "video_depth"
    assert summary["video_depth"]["frames"] == 20 and rgb is not None


def _world_with_prior(tmp_path, motion: str, seed: int, frames: int):
    """A 160x120 room world with its depth maps, and a folder prior: its ground-truth
    inverse depth in another scale and shift (what a monocular network knows at best)."""
    from slam.cli import main as cli

    seq_dir = tmp_path / motion
    assert cli(["synth", str(seq_dir), "--seed", str(seed), "--frames", str(frames), "--size", "160x120",
                "--scene", "room", "--motion", motion, "--depth", "--quiet"]) == 0
    gt = [np.load(f) for f in sorted((seq_dir / "depth").glob("*.npy"))]
    prior_dir = tmp_path / "prior"
    prior_dir.mkdir()
    for k, g in enumerate(gt):
        np.save(prior_dir / f"{k:06d}.npy", (3.0 / g + 0.2).astype(np.float32))
    return seq_dir, gt, prior_dir


def test_depth_prior_holds_on_pure_rotation(tmp_path):
    """A rotating camera gives no parallax: without a prior the keyframe depths are
    unconstrained and drift; with a (scale- and shift-distorted) prior from a folder they
    start from it and BA keeps them there, while the rotations stay accurate."""
    from slam.config import load_config
    from slam.data.detect import open_sequence
    from slam.depth.metrics import depth_metrics
    from slam.system.runner import run_sequence

    seq_dir, gt, prior_dir = _world_with_prior(tmp_path, "rotation", 7, 40)
    seq = open_sequence(seq_dir)

    def run(extra):
        cfg = load_config("run", ["correspondence=classical", "frontend.filter_thresh=1.0"] + extra)
        r = run_sequence(seq, cfg, progress=False)
        h, w = r.kf_disps.shape[1:]
        ref = np.stack([cv2.resize(gt[int(f)], (w, h), interpolation=cv2.INTER_AREA) for f in r.kf_indices])
        m = depth_metrics(1.0 / np.maximum(r.kf_disps, 1e-9), ref)
        rot = max(np.degrees(np.arccos(np.clip((np.trace(
            (r.poses[0, :3, :3].T @ a[:3, :3]).T @ (seq.gt_poses[0][:3, :3].T @ b[:3, :3])) - 1) / 2, -1, 1)))
            for a, b in zip(r.poses, seq.gt_poses))
        return m, rot, len(r.kf_indices)

    m0, rot0, n0 = run([])
    m1, rot1, n1 = run(["depth.prior.kind=folder", f"depth.prior.folder.path={prior_dir}",
                        "depth.prior.folder.npy_kind=inverse_depth"])
    assert n1 >= 3
    assert m1["abs_rel"] < 0.1 and m1["delta_1.25"] > 0.9
    assert m0["abs_rel"] > 5 * m1["abs_rel"]
    assert rot1 < 0.5


def test_prior_trust():
    """The trust in an aligned prior comes from the pixels where the geometry is strong:
    1 for a prior that agrees with the depths there, small for one that does not, the
    pooled value for a keyframe without enough such pixels, 1 when none has any."""
    from slam.depth.align import prior_trust

    g = torch.Generator().manual_seed(0)
    N, h, w = 3, 30, 40
    disps = torch.rand(N, h, w, generator=g, dtype=torch.float64) + 0.5
    conf = torch.ones(N, h, w, dtype=torch.float64)
    H = torch.full((N, h, w), 100.0, dtype=torch.float64)  # h = H d^2 >= 25 > h_thresh everywhere
    H[2] = 0.0  # keyframe 2: no strong pixel (a new keyframe with few edges)
    cfg = PriorWeightOptions(h_thresh=4.0, check_sigma=0.1, check_pixels=50)
    noise = torch.randn(N, h, w, generator=g, dtype=torch.float64)
    good = disps * torch.exp(0.01 * noise)  # 1 % log error
    bad = disps * torch.exp(0.5 * noise)  # 50 %
    t = prior_trust(H, disps, good, conf, cfg)
    assert t.shape == (N,) and t.dtype == torch.float64 and bool((t > 0.97).all())
    t = prior_trust(H, disps, torch.stack([good[0], bad[1], bad[2]]), conf, cfg)
    assert t[0] > 0.97 and t[1] < 0.1
    pooled = torch.log(torch.stack([good[0], bad[1]]) / disps[:2]).abs().median()  # keyframes 0 and 1
    assert t[1] < t[2] < t[0] and float(t[2]) == pytest.approx(1 / (1 + (1.4826 * float(pooled) / 0.1) ** 4))
    assert bool((prior_trust(torch.zeros_like(H), disps, bad, conf, cfg) == 1).all())  # nothing to check against
    assert bool((prior_trust(H, disps, bad, conf, PriorWeightOptions(check_sigma=0.0)) == 1).all())  # off


def test_prior_gate():
    """The problem gate is 1 when no confident pixel is constrained by the geometry, 1/2 when
    the share of such pixels equals gate_share, about 0 when most are, and 1 when off."""
    from slam.depth.align import prior_gate

    N, h, w = 2, 30, 40
    disps = torch.full((N, h, w), 0.5, dtype=torch.float64)
    conf = torch.ones(N, h, w, dtype=torch.float64)
    cfg = PriorWeightOptions(h_thresh=4.0, gate_share=0.05, gate_power=4.0)
    H = torch.zeros(N, h, w, dtype=torch.float64)
    assert prior_gate(H, disps, conf, cfg) == 1.0  # pure rotation: nothing constrained
    strong = 20.0  # h = H d^2 = 5 >= h_thresh
    H.view(N, -1)[:, : int(0.05 * h * w)] = strong
    assert prior_gate(H, disps, conf, cfg) == pytest.approx(0.5)
    H.view(N, -1)[:, : int(0.5 * h * w)] = strong
    assert prior_gate(H, disps, conf, cfg) < 1e-3
    conf.view(N, -1)[:, : int(0.5 * h * w)] = 0.0  # the strong pixels without prior confidence do not count
    assert prior_gate(H, disps, conf, cfg) == 1.0
    assert prior_gate(H * 0 + strong, disps, conf, PriorWeightOptions(gate_share=0.0)) == 1.0  # off
    assert prior_gate(H * 0 + strong, disps, conf * 0 + 1, PriorWeightOptions(gate_power=1000.0)) == 0.0  # no overflow
    target_only = torch.zeros(1, h, w, dtype=torch.float64)  # a keyframe that is only an edge's target: no say
    H2 = torch.cat([H * 0, target_only])
    H2[0].view(-1)[: int(0.05 * h * w)] = strong
    both = prior_gate(H2, torch.cat([disps, disps[:1]]), torch.ones(N + 1, h, w, dtype=torch.float64), cfg)
    assert both == pytest.approx(prior_gate(H2[:1], disps[:1], torch.ones(1, h, w, dtype=torch.float64), cfg))
    with pytest.raises(InputError):
        prior_gate(H, disps, conf, PriorWeightOptions(gate_power=0.0))


def test_prior_gate_in_tracking(tmp_path, monkeypatch):
    """In tracking the gate keeps the prior's BA term for a camera without parallax and
    switches it off for a translating one, whose geometry has a scale of its own."""
    import slam.system.depth_prior as depth_prior
    from slam.config import load_config
    from slam.data.detect import open_sequence
    from slam.system.runner import run_sequence

    gates = []
    gate = depth_prior.prior_gate

    def spy(*args, **kwargs):
        gates.append(gate(*args, **kwargs))
        return gates[-1]

    monkeypatch.setattr(depth_prior, "prior_gate", spy)
    medians = {}
    for motion, seed in (("rotation", 7), ("handheld", 9)):
        seq_dir, _, prior_dir = _world_with_prior(tmp_path / motion, motion, seed, 40)
        gates.clear()
        cfg = load_config("run", ["correspondence=classical", "frontend.filter_thresh=1.0", "depth.prior.kind=folder",
                                  f"depth.prior.folder.path={prior_dir}", "depth.prior.folder.npy_kind=inverse_depth"])
        run_sequence(open_sequence(seq_dir), cfg, progress=False)
        assert len(gates) >= 5
        medians[motion] = float(np.median(gates))
    assert medians["rotation"] > 0.9 and medians["handheld"] < 0.05


def test_two_view_seed_keeps_the_prior_depths(tmp_path, monkeypatch):
    """A translating camera starts from the two-view reconstruction; with a depth prior
    the seed keyframes get the prior's shape (aligned to the triangulation) instead of
    the triangulation's median on every pixel it does not cover."""
    from slam.config import load_config
    from slam.data.detect import open_sequence
    from slam.depth.metrics import depth_metrics
    from slam.system.frontend import Frontend
    from slam.system.runner import run_sequence

    seq_dir, gt, prior_dir = _world_with_prior(tmp_path, "handheld", 9, 30)
    seeds = []
    two_view = Frontend._two_view_seed

    def spy(self, n0):  # the seed depths as the two-view start leaves them, before any BA
        ok = two_view(self, n0)
        if ok:
            seeds.append((self.store.frame_index[:n0].clone(), self.store.disps[:n0].clone()))
        return ok

    monkeypatch.setattr(Frontend, "_two_view_seed", spy)
    cfg = load_config("run", ["correspondence=classical", "depth.prior.kind=folder",
                              f"depth.prior.folder.path={prior_dir}", "depth.prior.folder.npy_kind=inverse_depth"])
    run_sequence(open_sequence(seq_dir), cfg, progress=False)
    assert len(seeds) == 1
    idx, disps = seeds[0]
    h, w = disps.shape[1:]
    ref = np.stack([cv2.resize(gt[int(f)], (w, h), interpolation=cv2.INTER_AREA) for f in idx])
    m = depth_metrics(1.0 / np.maximum(disps.numpy(), 1e-9), ref)
    assert m["abs_rel"] < 0.1 and m["delta_1.25"] > 0.95  # (the median-filled triangulation: 0.27, 0.80)
