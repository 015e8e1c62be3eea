"""Writers and readers of the files other tools read (TUM trajectories, PLY, COLMAP)."""
