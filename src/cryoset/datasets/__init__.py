"""Published cryo-EM datasets: registry, downloads through the hosts' APIs, safe extraction
and readers for the CryoPPP / CryoVirusDB, Cryo2StructData and cryoPANDA layouts."""

from cryoset.datasets.extract import safe_extract
from cryoset.datasets.registry import (
    DatasetSpec,
    download_dataset,
    get_spec,
    list_remote_files,
    registry,
)

__all__ = ["DatasetSpec", "download_dataset", "get_spec", "list_remote_files", "registry", "safe_extract"]
