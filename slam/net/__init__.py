"""The learned correspondence network (DROID-SLAM style), native torch only.

Pieces
------
* :mod:`slam.net.encoder`: feature encoder (instance norm) and context encoder
  (no norm) at 1/8 resolution; images ``(B, 3, H, W)`` floats in [0, 255].
* :mod:`slam.net.corr`: 4-level correlation pyramids with radius-3 windowed
  lookups, :class:`AllPairsCorr` (precomputed volume) and :class:`OnDemandCorr`
  (same numbers, computed at lookup time; memory linear in h w).
* :mod:`slam.net.update`: ConvGRU :class:`UpdateBlock` with heads for the flow
  revision, confidence weights, motion logit, per-frame damping (eta) and
  convex-upsampling masks; :func:`upsample`, :func:`pool_per_frame`.
* :mod:`slam.net.model`: :class:`CorrNet` bundling them (``encode``, ``step``).
* :mod:`slam.net.config`: :class:`NetConfig`; presets ``configs/net/small.yaml``
  (CPU) and ``configs/net/large.yaml`` (GPU), :func:`load_net_config`.
* :mod:`slam.net.checkpoint`: :func:`save_checkpoint` / :func:`load_checkpoint`.

How a correspondence source uses it
-----------------------------------
Coordinates follow :mod:`slam.corr.base`: pixel-centre ``(u, v)`` at feature
resolution (image / 8), channel-last ``(E, h, w, 2)``.  A learned
:class:`~slam.corr.base.CorrespondenceSource` (``iterative = True``) would,
under ``torch.inference_mode()`` (grad mode is per thread)::

    model, _ = load_checkpoint(path, load_net_config("small"), map_location=device)   # eval mode

    # prepare(index, image): encode every frame once, keep the maps in FrameData.features
    x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float()  # (1, 3, H, W) in 0..255
    fmap, net0, inp = model.encode(x)          # (1, C, h, w), (1, hidden, h, w), (1, context, h, w)
    FrameData(index, image, features={"fmap": fmap[0], "net": net0[0], "inp": inp[0]})
    # (frames that only feed the motion filter need model.encode_features(x) alone;
    #  the context is needed for the source frame i of an edge)

    # update(frames_i, frames_j, coords, state) for E edges
    fmaps = torch.stack([f.features["fmap"] for f in frames_i + frames_j])   # or the keyframe store's tensor
    ii, jj = torch.arange(E), torch.arange(E, 2 * E)                          # edge e: fmaps[ii[e]] -> fmaps[jj[e]]
    corr = model.correlation(fmaps, ii, jj)                   # AllPairsCorr: the frontend's few edges;
    # model.correlation(fmaps, ii, jj, on_demand=True)        # OnDemandCorr: the backend's many edges
    if state is None:                                         # a new edge starts from frame i's context
        state = torch.stack([f.features["net"] for f in frames_i])            # (E, hidden, h, w)
    inp = torch.stack([f.features["inp"] for f in frames_i])                  # (E, context, h, w)
    out = model.step(state, inp, corr, coords)                # lookup at coords -> ConvGRU -> heads
    return EdgeUpdate(target=out.target,                      # coords + delta   (E, h, w, 2)
                      weight=out.weight,                      # sigmoid confidence (E, h, w, 2)
                      motion=torch.sigmoid(out.motion_logit), # (E, h, w)
                      state=out.net)                          # hidden state, kept per edge

The frontend/backend then runs bundle adjustment on ``target`` / ``weight``,
reprojects to new ``coords`` and calls ``update`` again with the stored
``state``: lookup -> update -> new target -> BA -> lookup ...  A correlation
block can be kept across iterations while its edge set is unchanged
(building an AllPairsCorr costs one ``hw x hw`` matmul per edge; lookups are
cheap); OnDemandCorr keeps only frame-level pyramids (``fmap_pyramid``, which
can be cached per keyframe and passed as ``pyramid=``).  Per-frame outputs,
for the depth block of BA and full-resolution depth::

    agg = model.aggregate(out.net, frame_ii)          # frames (F,), eta (F, h, w), mask (F, 576, h, w)
    disp_full = upsample(disp[:, None], agg.mask)     # disp (F, h, w) -> (F, 1, H, W): convex upsampling
    frames, logit = pool_per_frame(out.motion_logit, frame_ii)   # per-frame motion logit (F, h, w)

where ``frame_ii (E,)`` are the edges' global source-frame indices (edges
leaving the same frame are pooled).  ``model.upsample_flow(out.net,
out.target)`` gives full-resolution flow ``(E, 2, H, W)`` in image pixels.

CPU threads: the ops here use torch's intra-op thread pool.  When several
Python threads (frontend, backend) run torch ops at once, or other
processes load the cores, keep ``torch.get_num_threads()`` times the number
of concurrently busy threads at or below the core count: oversubscribed
OpenMP pools slowed an encode from 10 ms to several 100 ms in measurements.
"""
from __future__ import annotations

from slam.net.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from slam.net.config import STRIDE, NetConfig, load_net_config
from slam.net.corr import AllPairsCorr, CorrBlock, OnDemandCorr, fmap_pyramid
from slam.net.model import CorrNet, StepOutput
from slam.net.update import FrameOutput, UpdateBlock, UpdateOutput, bilinear_mask, pool_per_frame, upsample

__all__ = ["STRIDE", "AllPairsCorr", "CorrBlock", "CorrNet", "FrameOutput", "NetConfig", "OnDemandCorr",
           "StepOutput", "UpdateBlock", "UpdateOutput", "bilinear_mask", "fmap_pyramid", "load_checkpoint",
           "load_net_config", "pool_per_frame", "read_checkpoint", "save_checkpoint", "upsample"]
