"""Cryo2StructData-style density-map datasets: resample, normalise, label, sub-grid.

Kernels (arrays in, arrays out): :mod:`.resample`, :mod:`.normalise`, :mod:`.labels`,
:mod:`.dssp`, :mod:`.subgrids`, :mod:`.validate`. Files in, files out: :mod:`.dataset`.
See docs/maps.md.
"""
