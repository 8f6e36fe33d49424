"""Clustering scores and representation diagnostics, usable in any PyTorch project.

``clustering`` holds the contingency-table scores (and the torchmetrics Metric);
``representation`` the pure-torch kNN, alignment/uniformity and RankMe diagnostics.
"""

from dcl_cluster.metrics.clustering import (
    ClusteringMetrics,
    cluster_accuracy,
    clustering_scores,
    contingency_table,
    head_medium_tail_groups,
    macro_f1,
    match_clusters_to_classes,
    scores_from_table,
)
from dcl_cluster.metrics.representation import alignment, knn_predict, rankme, uniformity

__all__ = [
    "ClusteringMetrics",
    "alignment",
    "knn_predict",
    "rankme",
    "uniformity",
    "cluster_accuracy",
    "clustering_scores",
    "contingency_table",
    "head_medium_tail_groups",
    "macro_f1",
    "match_clusters_to_classes",
    "scores_from_table",
]
