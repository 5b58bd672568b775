"""Particle dataset store: images in Zarr v3, annotations in Parquet, queries with DuckDB."""

from cryoset.store.dataset import ParticleStore, Selection
from cryoset.store.schema import ANNOTATION_SCHEMA, SCHEMA_VERSION

__all__ = ["ANNOTATION_SCHEMA", "SCHEMA_VERSION", "ParticleStore", "Selection"]
