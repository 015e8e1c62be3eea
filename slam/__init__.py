"""slam: learned monocular video SLAM that installs and runs on a laptop CPU as well as a GPU.

Package map (data flows one way: readers -> frontend -> backend -> outputs):

* :mod:`slam.geometry` - Lie groups, pinhole camera, projective operations with Jacobians.
* :mod:`slam.ba` - dense bundle adjustment (Levenberg-Marquardt + Schur complement).
* :mod:`slam.data` - readers for videos, image folders and datasets; synthetic worlds.
* :mod:`slam.commands` - the ``slam`` console command's subcommands.
"""
__version__ = "0.1.0"
