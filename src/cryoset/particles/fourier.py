"""Fourier resampling of images: re-exported from :mod:`cryoset.fourier.crop`, where it lives."""

from __future__ import annotations

from cryoset.fourier.crop import fourier_crop, resampled_pixel_size_a

__all__ = ["fourier_crop", "resampled_pixel_size_a"]
