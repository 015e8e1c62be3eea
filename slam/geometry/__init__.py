"""Geometry core: Lie groups (via pypose), pinhole camera, projective operations."""
