"""PyTorch datasets, models, probes and training loops."""
