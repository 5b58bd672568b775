"""Tests of ``cryoset view`` (issue #21)."""
