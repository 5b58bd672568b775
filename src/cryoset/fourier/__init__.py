"""Fourier-space primitives shared by the kernels (layer 2, docs/architecture.md).

* :mod:`cryoset.fourier.slices` — central slices of a 3D transform: the slice walk, extraction
  (projection) and insertion (reconstruction) numba kernels.
* :mod:`cryoset.fourier.shells` — shell indices and sums / means over shells.
* :mod:`cryoset.fourier.crop` — down-sampling by cropping the transform.

Arrays in, arrays out; nothing here imports another cryoset package. The package imports
only the numpy helpers; the numba kernels load with :mod:`cryoset.fourier.slices`.
"""

from cryoset.fourier.crop import fourier_crop, resampled_pixel_size_a
from cryoset.fourier.shells import (
    rfft_multiplicity,
    shell_count,
    shell_index,
    shell_mean,
    shell_sum,
)

__all__ = [
    "fourier_crop",
    "resampled_pixel_size_a",
    "rfft_multiplicity",
    "shell_count",
    "shell_index",
    "shell_mean",
    "shell_sum",
]
