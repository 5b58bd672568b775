"""Workflows: paths in, products out — one function per step, called by the CLI and the build."""
