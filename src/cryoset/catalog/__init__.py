"""Experiment catalogue and curation: records, sequence clustering, representatives, splits."""

from cryoset.catalog.align import align_pair, identity, identity_matrix
from cryoset.catalog.cluster import cluster_experiments, cluster_sequences
from cryoset.catalog.curate import curate, rank_in_clusters, split_clusters
from cryoset.catalog.records import attach_sequences, read_fasta, read_records

__all__ = [
    "align_pair", "attach_sequences", "cluster_experiments", "cluster_sequences", "curate",
    "identity", "identity_matrix", "rank_in_clusters", "read_fasta", "read_records",
    "split_clusters",
]
