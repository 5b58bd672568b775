"""Reconstruction and its validation (Fourier ring/shell correlation)."""
