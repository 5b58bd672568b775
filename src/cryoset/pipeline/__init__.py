"""Dataset builds: configuration, resumable per-experiment stages, local and Dask execution."""

from cryoset.pipeline.build import BuildResult, run_build, run_experiment
from cryoset.pipeline.config import load_config

__all__ = ["BuildResult", "load_config", "run_build", "run_experiment"]
