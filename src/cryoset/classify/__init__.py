"""2D classification of particle images: EM alignment, class statistics and junk selection."""
