"""Evaluation against ground truth: trajectory metrics, plots and the COLMAP baseline.

* :mod:`~slam.eval.metrics` - ATE / RPE with ``evo`` after Sim(3) alignment.
* :mod:`~slam.eval.plot` - top-view trajectory plots (matplotlib, Agg).
* :mod:`~slam.eval.colmap_baseline` - pycolmap incremental SfM on the same frames.
"""
