"""A simple synthetic scene with exact truth, for the picking tests.

Particles are projected uniform spheres (projection ``∝ sqrt(r² − ρ²)``), dark on a light
background, placed at least 1.3 diameters apart and one diameter from the edges, filtered
with a CTF (2 µm underfocus, 300 kV) and buried in white Gaussian noise. Built here rather
than with :mod:`cryoset.simulate.micrograph` so the tests stay fast (< 0.1 s per image) and
the truth is trivially exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.fft

from cryoset.ctf.model import CTFParams, ctf_2d

PIXEL_A = 5.0
DIAMETER_PX = 40.0


def sphere_projection(size: int, diameter_px: float, cx: float, cy: float) -> np.ndarray:
    """Projection of a uniform sphere centred at ``(cx, cy)``, peak value 1."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = diameter_px / 2
    rho2 = (xx - cx) ** 2 + (yy - cy) ** 2
    return np.sqrt(np.clip(r * r - rho2, 0, None)) / r


def make_scene(seed: int, *, n: int = 25, size: int = 512, snr: float = 0.5,
               name: str = "sim_000.mrc") -> tuple[np.ndarray, pd.DataFrame]:
    """Return ``(image, truth picks)`` of one synthetic micrograph."""
    rng = np.random.default_rng(seed)
    d = DIAMETER_PX
    pts: list[tuple[float, float]] = []
    for x, y in rng.uniform(d, size - 1 - d, (4000, 2)):  # greedy random sequential placement
        if all((x - a) ** 2 + (y - b) ** 2 >= (1.3 * d) ** 2 for a, b in pts):
            pts.append((float(x), float(y)))
            if len(pts) == n:
                break
    if len(pts) < n:
        raise ValueError(f"cannot place {n} particles 1.3 d apart in {size}²")
    signal = np.zeros((size, size))
    half = int(d / 2) + 2  # each sphere touches only a window around its centre
    for x, y in pts:
        j0, i0 = int(x) - half, int(y) - half
        signal[i0 : i0 + 2 * half, j0 : j0 + 2 * half] += sphere_projection(
            2 * half, d, x - j0, y - i0)
    ctf = ctf_2d(CTFParams(20000.0, 20000.0, 0.0), (size, size), PIXEL_A, rfft=True)
    # low-frequency amplitude contrast keeps particles dark: contrast = −(CTF-filtered signal)
    filtered = scipy.fft.irfft2(scipy.fft.rfft2(signal) * (ctf + 0.3), s=(size, size))
    filtered /= filtered.std()
    image = 10.0 - filtered + rng.normal(0.0, 1.0 / np.sqrt(snr), (size, size))
    truth = pd.DataFrame({"micrograph": name, "x_px": [p[0] for p in pts],
                          "y_px": [p[1] for p in pts], "score": np.nan, "diameter_px": d})
    return image.astype(np.float32), truth
