"""The workflows' parameter classes, from their light module, so that building the CLI imports no workflow.

Option defaults are read off the classes (``PICK.diameter_a`` is ``PickParams``'s default):
``cryoset.workflows.params`` imports the standard library only, whereas importing the workflow
modules would pull numpy, scipy, pandas, numba and more into ``cryoset --help``
(``tests/cli/test_startup.py`` checks both).
"""

from __future__ import annotations

from cryoset.workflows.params import AbinitioParams as ABINITIO
from cryoset.workflows.params import Classify2DParams as CLASSIFY2D
from cryoset.workflows.params import CtfParams as CTF
from cryoset.workflows.params import ExtractParams as EXTRACT
from cryoset.workflows.params import PickParams as PICK
from cryoset.workflows.params import PosesParams as POSES
from cryoset.workflows.params import PostprocessParams as POSTPROCESS
from cryoset.workflows.params import ReconstructParams as RECONSTRUCT
from cryoset.workflows.params import RefineParams as REFINE
from cryoset.workflows.params import TraceParams as TRACE

__all__ = ["ABINITIO", "CLASSIFY2D", "CTF", "EXTRACT", "MAX_DOWNLOAD_GB", "PICK", "POSES", "POSTPROCESS", "RECONSTRUCT", "REFINE", "TRACE"]

#: ``cryoset.archives.download.Limits().max_download_bytes`` in GB (10^9 bytes): ``fetch --max-download-gb``.
MAX_DOWNLOAD_GB: float = 500.0
