"""Training of the correspondence network (:mod:`slam.net`): ``slam train`` and ``slam adapt``.

Modules
-------
* :mod:`slam.train.data`: clips of N frames of synthetic worlds (training
  seeds 1000+; evaluation worlds use 100-199, tests small seeds) at a small
  training resolution, with exact labels of the clip's frame graph (poses,
  inverse depth at 1/8, flow and validity between the frames at 1/8 and full
  resolution, dynamic masks); rendered on the fly or cached as ``.npz``;
  :func:`~slam.train.data.collate` makes a torch :class:`~slam.train.data.Batch`.
* :mod:`slam.train.losses`: geodesic pose loss, Gaussian/uniform mixture NLL
  (probabilistic confidence), SSIM, photometric error, warping, smoothness.
* :mod:`slam.train.unroll`: the unrolled passes of the three modes:

  (a) ``supervised``: correlation lookup -> ``CorrNet.step`` -> targets /
      weights -> differentiable BA (:func:`slam.ba.dense_ba.ba_steps`, two
      Gauss-Newton steps with the aggregate head's ``eta`` damping the depth
      block, gauge frames fixed) -> reprojection -> next iteration
      (coordinates detached between iterations, as DROID-SLAM); losses
      gamma^(K-k)-weighted: geodesic on the edges' relative poses, induced
      flow vs ground truth, residual, direct target, confidence NLL, motion
      cross-entropy, full-resolution upsampled flow;
  (a') ``flow``: the update operator as a flow estimator (no BA) against
      the exact flow, RAFT style; the supervised mode spends its first
      ``loss.flow_warmup`` share of the schedule in it (from random weights
      the BA-in-the-loop objective alone did not get the flow moving within
      a CPU-sized budget; see ``weights/README.md``);
  (b) ``selfsup``: the update operator as a flow estimator on unlabelled
      frames; SSIM + L1 reconstruction through the convex-upsampled flow,
      forward-backward cycle consistency, smoothness, and the mixture NLL of
      the cycle error training the confidence head;
  (c) ``ba``: BA (Levenberg-Marquardt, no gradients) to convergence, then
      the mixture NLL of every iteration's targets against the reprojection
      of the constant optimised poses / depths, back-propagated through the
      network only.
* :mod:`slam.train.trainer`: the loop (AdamW, OneCycle / cosine schedule by
  steps or time budget, gradient clipping, channels-last), resumable
  checkpoints, ``metrics.csv``, ``summary.json``, ``loss.png``.
* :mod:`slam.train.evaluate`: held-out flow EPE of the network vs OpenCV DIS.
* :mod:`slam.train.adapt`: ``slam adapt``: (b) on frame pairs of one video,
  then (c) against the classical system's reconstruction of it.

Configuration: ``configs/train.yaml`` and ``configs/adapt.yaml`` (every tunable
commented).  Shipped weights and how they were made: ``weights/README.md``.
"""
