"""The correspondence network (slam.net): shapes, gradients, correlation, upsampling, checkpoints."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from slam.corr.base import identity_coords
from slam.data.sequence import InputError
from slam.net import (
    STRIDE,
    AllPairsCorr,
    CorrNet,
    NetConfig,
    OnDemandCorr,
    UpdateBlock,
    bilinear_mask,
    fmap_pyramid,
    load_checkpoint,
    load_net_config,
    pool_per_frame,
    read_checkpoint,
    save_checkpoint,
    upsample,
)

SMALL = load_net_config("small")
GRUS = ("conv3", "sep", "dwsep")


def images(n: int, H: int = 64, W: int = 96, seed: int = 0) -> torch.Tensor:
    """(n, 3, H, W) float images in [0, 255]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, H, W, generator=g) * 255


def random_coords(E: int, h: int, w: int, scale: float, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Identity + noise; some pixels far out of bounds, some just outside the border."""
    g = torch.Generator().manual_seed(seed)
    c = identity_coords(E, h, w, dtype) + scale * torch.randn(E, h, w, 2, generator=g, dtype=dtype)
    c[:, 0, :, 1] = -0.7            # first row looks up just above the map (partly in-bounds taps)
    c[:, :, -1, 0] = w - 0.3        # last column: just right of the map
    c[:, 1, 1] = torch.tensor([-50.0, 3.0], dtype=dtype)   # far outside
    c[:, 2, 2] = torch.tensor([1e7, -1e7], dtype=dtype)   # absurdly far outside
    return c


# --- configs -----------------------------------------------------------------------------

def test_presets_load_and_default_is_small():
    assert NetConfig() == SMALL
    large = load_net_config("large")
    assert large.hidden_dim == 128 and large.feature_dim == 128
    for cfg in (SMALL, large):
        n = CorrNet(cfg).num_parameters()
        assert n * 4 <= 25e6, (cfg.name, n)  # fp32 weights fit 25 MB
    assert NetConfig.from_dict(SMALL.to_dict()) == SMALL


def test_bad_configs_raise_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="unknown network config keys: bogus"):
        NetConfig.from_dict({**SMALL.to_dict(), "bogus": 1})
    with pytest.raises(InputError, match="multiply to"):
        NetConfig.from_dict({**SMALL.to_dict(), "enc_strides": [2, 2, 2, 2]})
    with pytest.raises(InputError, match="unknown network preset"):
        load_net_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("feature_dim: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_net_config(bad)


# --- shapes ------------------------------------------------------------------------------

def test_encoder_shapes_and_ranges():
    model = CorrNet(SMALL)
    fmap, net, inp = model.encode(images(2))
    assert fmap.shape == (2, SMALL.feature_dim, 8, 12)
    assert net.shape == (2, SMALL.hidden_dim, 8, 12) and inp.shape == (2, SMALL.context_dim, 8, 12)
    assert net.abs().max() < 1 and inp.min() >= 0
    assert torch.equal(model.encode_features(images(2)), fmap)


@pytest.mark.parametrize("gru", GRUS)
def test_update_block_heads_shapes(gru: str):
    cfg = replace(SMALL, gru=gru, gru_kernel=3)
    block = UpdateBlock(cfg)
    E, h, w = 5, 6, 7
    net = torch.tanh(torch.randn(E, cfg.hidden_dim, h, w))
    out = block(net, torch.rand(E, cfg.context_dim, h, w), torch.randn(E, cfg.corr_channels, h, w),
                torch.randn(E, 2, h, w))
    assert out.net.shape == net.shape
    assert out.delta.shape == (E, h, w, 2) and out.weight.shape == (E, h, w, 2)
    assert out.motion_logit.shape == (E, h, w)
    assert (out.weight > 0).all() and (out.weight < 1).all()
    assert block.flow_mask(out.net).shape == (E, 9 * STRIDE * STRIDE, h, w)
    agg = block.aggregate(out.net, torch.tensor([4, 2, 4, 9, 2]))
    assert agg.frames.tolist() == [2, 4, 9]
    assert agg.eta.shape == (3, h, w) and (agg.eta > 0).all()
    assert agg.mask.shape == (3, 9 * STRIDE * STRIDE, h, w)


def test_step_revises_coords():
    model = CorrNet(SMALL)
    fmap, net, inp = model.encode(images(3))
    ii, jj = torch.tensor([0, 1, 2, 1]), torch.tensor([1, 0, 1, 2])
    corr = model.correlation(fmap, ii, jj)
    assert corr.channels == SMALL.corr_channels
    coords = random_coords(4, 8, 12, 1.0, torch.float32)
    out = model.step(net[ii], inp[ii], corr, coords)
    assert out.net.shape == (4, SMALL.hidden_dim, 8, 12)
    assert torch.equal(out.target, coords + out.delta)
    assert out.weight.shape == (4, 8, 12, 2) and out.motion_logit.shape == (4, 8, 12)
    assert model.upsample_flow(out.net, out.target).shape == (4, 2, 64, 96)


# --- gradients ---------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["small", "small-conv3", "small-sep"])
def test_gradients_reach_every_parameter(preset: str):
    cfg = SMALL if preset == "small" else replace(SMALL, gru=preset.split("-")[1])
    torch.manual_seed(0)
    model = CorrNet(cfg)
    fmap, net0, inp0 = model.encode(images(3))
    ii, jj = torch.tensor([0, 1, 1, 2]), torch.tensor([1, 0, 2, 1])
    corr = model.correlation(fmap, ii, jj)
    coords = random_coords(4, 8, 12, 2.0, torch.float32)
    net = net0[ii]
    loss = torch.zeros(())
    for _ in range(2):  # two iterations: gradients also pass through the recurrence
        out = model.step(net, inp0[ii], corr, coords)
        net, coords = out.net, out.target
        loss = loss + out.delta.square().mean() + out.weight.mean() + out.motion_logit.mean()
    loss = loss + model.upsample_flow(net, coords).square().mean()
    agg = model.aggregate(net, ii)
    disp = torch.rand(agg.mask.shape[0], 1, 8, 12, generator=torch.Generator().manual_seed(1))
    loss = loss + agg.eta.mean() + upsample(disp, agg.mask).square().mean()
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not bad, bad


# --- correlation -------------------------------------------------------------------------

def brute_force_lookup(f1: torch.Tensor, f2: torch.Tensor, coords: torch.Tensor, levels: int, radius: int,
                       e: int, v: int, u: int) -> torch.Tensor:
    """The lookup of one source pixel by explicit pooling, bilinear weights and dot products."""
    C = f1.shape[1]
    out = []
    target = f2[e]
    for lvl in range(levels):
        if lvl:
            target = F.avg_pool2d(target[None], 2)[0]
        _, hl, wl = target.shape
        cx, cy = (coords[e, v, u] / 2 ** lvl).tolist()
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                x, y = cx + dx, cy + dy
                x0, y0 = math.floor(x), math.floor(y)
                val = torch.zeros((), dtype=f1.dtype)
                for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                    wgt = (1 - abs(x - xi)) * (1 - abs(y - yi))
                    if 0 <= xi < wl and 0 <= yi < hl:
                        val = val + wgt * (f1[e, :, v, u] @ target[:, yi, xi]) / math.sqrt(C)
                out.append(val)
    return torch.stack(out)


def test_allpairs_conventions_against_brute_force():
    torch.manual_seed(0)
    E, C, h, w, L, r = 2, 5, 11, 13, 3, 2
    f1 = torch.randn(E, C, h, w, dtype=torch.float64)
    f2 = torch.randn(E, C, h, w, dtype=torch.float64)
    coords = random_coords(E, h, w, 2.0, torch.float64)
    corr = AllPairsCorr(f1, f2, L, r)
    out = corr(coords)
    assert out.shape == (E, L * (2 * r + 1) ** 2, h, w)
    for e, v, u in [(0, 3, 4), (1, 0, 5), (1, 7, w - 1), (0, 1, 1), (1, 2, 2), (0, h - 1, 0)]:
        ref = brute_force_lookup(f1, f2, coords, L, r, e, v, u)
        assert torch.allclose(out[e, :, v, u], ref, atol=1e-12), (e, v, u)
    # at identity coords the centre tap of level 0 is the plain scaled dot product
    centre = corr(identity_coords(E, h, w, torch.float64))[:, 2 * r * (r + 1)]
    assert torch.allclose(centre, (f1 * f2).sum(1) / math.sqrt(C))
    assert (out[:, :, 2, 2] == 0).all() and (out[:, :, 1, 1] == 0).all()  # far out of bounds


@pytest.mark.parametrize("strategy", OnDemandCorr.STRATEGIES)
def test_on_demand_equals_all_pairs(strategy: str):
    torch.manual_seed(1)
    F_, C, h, w = 4, 16, 13, 18  # odd sizes: floor pooling
    fmaps = torch.randn(F_, C, h, w, dtype=torch.float64)
    ii, jj = torch.tensor([0, 1, 1, 2, 3, 0, 2]), torch.tensor([1, 0, 2, 3, 1, 3, 2])
    coords = random_coords(7, h, w, 6.0, torch.float64)
    ref = AllPairsCorr.from_frames(fmaps, ii, jj)(coords)
    # several chunks (max_elements small), frame-level pyramid passed in
    od = OnDemandCorr.from_frames(fmaps, ii, jj, max_elements=h * w * 64 * C * 2, strategy=strategy,
                                  pyramid=fmap_pyramid(fmaps, 4))
    assert torch.allclose(od(coords), ref, atol=1e-12, rtol=0)
    # per-edge constructor, float32
    f1, f2, c32 = fmaps[ii].float(), fmaps[jj].float(), coords.float()
    out32 = OnDemandCorr(f1, f2, strategy=strategy)(c32)
    assert torch.allclose(out32, AllPairsCorr(f1, f2)(c32), atol=1e-4, rtol=0)
    assert torch.allclose(out32.double(), ref, atol=1e-4, rtol=0)


def test_on_demand_gradients_equal_all_pairs():
    torch.manual_seed(2)
    f = torch.randn(3, 8, 10, 12, dtype=torch.float64, requires_grad=True)
    ii, jj = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    coords = random_coords(3, 10, 12, 3.0, torch.float64)
    probe = torch.randn(3, 4 * 49, 10, 12, dtype=torch.float64)
    grads = []
    for corr in (AllPairsCorr.from_frames(f, ii, jj), OnDemandCorr.from_frames(f, ii, jj, strategy="window")):
        (g,) = torch.autograd.grad((corr(coords) * probe).sum(), f)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], atol=1e-10)


def test_correlation_rejects_bad_shapes():
    with pytest.raises(ValueError, match="too small"):
        AllPairsCorr(torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6), levels=4)
    corr = AllPairsCorr(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="coords shape"):
        corr(identity_coords(1, 8, 8))


# --- per-frame pooling and upsampling ------------------------------------------------------

def test_pool_per_frame():
    x = torch.arange(12.0).view(4, 3)
    ii = torch.tensor([5, 1, 5, 5])
    frames, mean = pool_per_frame(x, ii)
    assert frames.tolist() == [1, 5]
    assert torch.equal(mean, torch.stack([x[1], x[[0, 2, 3]].mean(0)]))
    _, mx = pool_per_frame(-x, ii, reduce="amax")
    assert torch.equal(mx, torch.stack([-x[1], -x[0]]))


def test_upsample_constant_stays_constant():
    g = torch.Generator().manual_seed(0)
    mask = 3 * torch.randn(2, 9 * 64, 5, 6, generator=g)
    x = torch.full((2, 3, 5, 6), 2.5)
    up = upsample(x, mask)
    assert up.shape == (2, 3, 40, 48)
    assert torch.allclose(up, torch.full_like(up, 2.5))


def test_upsample_linear_field_stays_linear_in_interior():
    h, w, s = 5, 7, STRIDE
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    field = torch.stack([0.3 * u - 1.2 * v + 2.0, 0.7 * u + 0.1 * v])[None]          # (1, 2, h, w)
    up = upsample(field, bilinear_mask(h, w, s, torch.float64))
    V, U = torch.meshgrid(torch.arange(h * s, dtype=torch.float64), torch.arange(w * s, dtype=torch.float64),
                          indexing="ij")
    uf, vf = (U - (s - 1) / 2) / s, (V - (s - 1) / 2) / s                               # pixel-centre convention
    expect = torch.stack([0.3 * uf - 1.2 * vf + 2.0, 0.7 * uf + 0.1 * vf])[None]
    b = s // 2  # the outer half feature pixel extrapolates (replicated border)
    assert torch.allclose(up[..., b:-b, b:-b], expect[..., b:-b, b:-b], atol=1e-12)


# --- checkpoints -------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = CorrNet(SMALL).eval()
    x = images(1, 32, 48)
    path = save_checkpoint(tmp_path / "net.pt", model, command="train --steps 3", seed=7, steps=3, wall_time_s=1.5)
    loaded, prov = load_checkpoint(path, SMALL)
    assert not loaded.training
    assert prov["command"] == "train --steps 3" and prov["seed"] == 7 and prov["steps"] == 3
    assert prov["wall_time_s"] == 1.5 and prov["device"] == "cpu" and prov["created"]
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.encode(x), loaded.encode(x)))
    data = read_checkpoint(path)
    assert data["format"] == "slam.corrnet" and data["version"] == 1 and data["config"] == SMALL
    half = save_checkpoint(tmp_path / "half.pt", model, half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded16, _ = load_checkpoint(half)  # config from the file
    assert next(loaded16.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(model.encode_features(x), loaded16.encode_features(x), atol=0.05)


def one_line_error(path: Path, *needles: str, config: NetConfig | None = None) -> None:
    with pytest.raises(InputError) as ei:
        load_checkpoint(path, config)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg
    for n in needles:
        assert n in msg, msg


def test_checkpoint_errors(tmp_path: Path):
    model = CorrNet(SMALL)
    good = save_checkpoint(tmp_path / "good.pt", model)
    one_line_error(tmp_path / "missing.pt", "not found")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 100)
    one_line_error(tmp_path / "garbage.pt", "unreadable")
    raw = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    one_line_error(tmp_path / "truncated.pt", "unreadable")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    one_line_error(tmp_path / "other.pt", "no format tag")
    data = torch.load(good, weights_only=True)
    torch.save({**data, "format": "raft"}, tmp_path / "fmt.pt")
    one_line_error(tmp_path / "fmt.pt", "format 'raft'")
    torch.save({**data, "version": 99}, tmp_path / "ver.pt")
    one_line_error(tmp_path / "ver.pt", "version 99")
    # the expected config differs from the stored one
    one_line_error(good, "config differs", "hidden_dim 64 != 128", config=replace(SMALL, hidden_dim=128))
    # keys: one missing, one unexpected, one with the wrong shape
    sd = dict(data["state_dict"])
    sd.pop("update.eta_head.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["fnet.out.bias"] = torch.zeros(3)
    torch.save({**data, "state_dict": sd}, tmp_path / "keys.pt")
    one_line_error(tmp_path / "keys.pt", "missing: update.eta_head.bias", "unexpected: extra.weight",
                   "fnet.out.bias (3,) != (64,)")
    cfg = dict(data["config"], gru="lstm")
    torch.save({**data, "config": cfg}, tmp_path / "cfg.pt")
    one_line_error(tmp_path / "cfg.pt", "unknown gru")
