"""Particle images: extraction from micrographs, normalisation, CTF phase flipping and
Fourier down-sampling (:mod:`cryoset.particles.extract`, :mod:`cryoset.fourier.crop`)."""
