"""Clustering algorithms on torch tensors (CPU, CUDA, DDP shards); torch-only imports."""

from dcl_cluster.cluster.estimate_k import (
    KEstimate,
    NoClusterStructureWarning,
    estimate_num_clusters,
    score_num_clusters,
)
from dcl_cluster.cluster.kmeans import KMeans

__all__ = ["KEstimate", "KMeans", "NoClusterStructureWarning", "estimate_num_clusters", "score_num_clusters"]
