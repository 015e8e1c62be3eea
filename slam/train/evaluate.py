"""Held-out evaluation of the network's flow against ground truth and OpenCV DIS.

For every edge of every clip (training resolution, the same pixels for all
methods) it reports end-point errors in image pixels:

* ``net_full``: the network as a pure flow estimator (``iters`` updates from
  zero flow, no BA), convex-upsampled to full resolution, vs the exact flow;
* ``net_feat``: the same at feature resolution (target vs the exact flow at
  the feature pixel centres, x 8);
* ``netba_target`` / ``netba_induced``: the supervised unroll with the
  differentiable BA (gauge frames from ground truth, no gradients): the
  network's final targets and the flow induced by the BA result (static pixels);
* ``dis_full`` / ``dis_feat``: OpenCV DIS (``slam.corr.classical``, zero
  initialisation) at full resolution and sampled at the feature pixel centres.

Also the share of pixels with an error above 3 px (``*_out3``), and the
full-resolution EPEs split by ground-truth flow magnitude (``*_full_0-4_epe``,
``*_full_4-16_epe``, ``*_full_16-inf_epe``) with their pixel counts.
"""
from __future__ import annotations

import numpy as np
import torch

from slam.corr.base import FrameData, flow_to_feature
from slam.corr.classical import ClassicalFlow, ClassicalOptions
from slam.net.model import CorrNet
from slam.train.data import Clip, collate
from slam.train.unroll import UnrollOptions, flow_iterations, supervised_loss

#: ground-truth flow magnitude bins (image px) of the full-resolution EPEs ``*_full_<lo>-<hi>_epe``
BINS: tuple[tuple[float, float], ...] = ((0.0, 4.0), (4.0, 16.0), (16.0, float("inf")))


class _Acc:
    """Sums of end-point errors and pixel counts per method."""

    def __init__(self) -> None:
        self.sum: dict[str, float] = {}
        self.out: dict[str, float] = {}
        self.n: dict[str, float] = {}

    def add(self, name: str, err: np.ndarray, mask: np.ndarray, magnitude: np.ndarray | None = None) -> None:
        m = mask.astype(bool)
        self.sum[name] = self.sum.get(name, 0.0) + float(err[m].sum())
        self.out[name] = self.out.get(name, 0.0) + float((err[m] > 3.0).sum())
        self.n[name] = self.n.get(name, 0.0) + float(m.sum())
        if magnitude is not None:
            for lo, hi in BINS:
                b = m & (magnitude >= lo) & (magnitude < hi)
                self.add(f"{name}_{lo:g}-{hi:g}", err, b)

    def result(self) -> dict[str, float]:
        r = {}
        for k in self.sum:
            n = max(self.n[k], 1.0)
            r[f"{k}_epe"] = self.sum[k] / n
            r[f"{k}_out3"] = self.out[k] / n
        return r


def evaluate_flow(model: CorrNet, clips: list[Clip], opts: UnrollOptions, dis_preset: str = "medium",
                  device: torch.device | str = "cpu") -> dict[str, float]:
    """EPEs (image px) of the network and of DIS on labelled clips; see the module docstring."""
    acc = _Acc()
    was_training = model.training
    model.eval()
    stride = model.stride
    sup = 0.0
    try:
        for clip in clips:
            batch = collate([clip]).to(device)
            tvalid = clip.target_valid > 0.5
            with torch.no_grad():
                for _, out in flow_iterations(model, batch, opts.iters):
                    pass
                up = model.upsample_flow(out.net, out.target).permute(0, 2, 3, 1).cpu().numpy()
                tgt = out.target.cpu().numpy()
                _, m = supervised_loss(model, batch, opts)
            sup += m["loss"]
            mag = np.linalg.norm(clip.flow, axis=-1)
            acc.add("net_full", np.linalg.norm(up - clip.flow, axis=-1), clip.flow_valid, mag)
            acc.add("net_feat", np.linalg.norm(tgt - clip.target, axis=-1) * stride, tvalid)
            # the supervised unroll's EPEs are already means over its masks; weigh them by their pixel counts
            static = clip.dynamic[clip.ii] < 0.5
            acc.sum["netba_target"] = acc.sum.get("netba_target", 0.0) + m["epe"] * tvalid.sum()
            acc.n["netba_target"] = acc.n.get("netba_target", 0.0) + tvalid.sum()
            acc.out.setdefault("netba_target", float("nan"))
            acc.sum["netba_induced"] = acc.sum.get("netba_induced", 0.0) + m["epe_ba"] * (tvalid & static).sum()
            acc.n["netba_induced"] = acc.n.get("netba_induced", 0.0) + (tvalid & static).sum()
            acc.out.setdefault("netba_induced", float("nan"))
            dis = ClassicalFlow(ClassicalOptions(preset=dis_preset, stride=stride))
            frames = [dis.prepare(k, im) for k, im in enumerate(clip.images)]
            for e, (i, j) in enumerate(zip(clip.ii, clip.jj)):
                a: FrameData = frames[int(i)]
                b: FrameData = frames[int(j)]
                flow, _ = dis.pair(a, b)
                acc.add("dis_full", np.linalg.norm(flow - clip.flow[e], axis=-1), clip.flow_valid[e], mag[e])
                t, _ = flow_to_feature(flow, np.ones(flow.shape[:2], bool), stride, mode="center")
                acc.add("dis_feat", np.linalg.norm(t - clip.target[e], axis=-1) * stride, tvalid[e])
    finally:
        model.train(was_training)
    r = acc.result()
    for k, n in acc.n.items():
        if "-" in k:
            r[f"{k}_pixels"] = n
    r = {k: v for k, v in r.items() if np.isfinite(v)}
    r["sup_loss"] = sup / max(len(clips), 1)
    r["pixels"] = float(acc.n.get("net_full", 0.0))
    return r
