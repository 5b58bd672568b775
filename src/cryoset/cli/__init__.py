"""Command line: one module per command group, registered in :mod:`cryoset.cli.main`."""
