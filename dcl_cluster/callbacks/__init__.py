"""Drop-in Lightning callbacks: clustering scores, kNN/diagnostics and plots of any module.

They rely only on a small protocol (``callbacks.collect``) and public Trainer API, so
they work in projects that use nothing else of ``dcl_cluster``.
"""

from dcl_cluster.callbacks.evaluator import ClusteringEvaluator
from dcl_cluster.callbacks.knn import KNNEvaluator
from dcl_cluster.callbacks.plots import (
    EmbeddingPlots,
    clustering_figures,
    embed_2d,
    match_clusters,
    plot_cluster_sizes,
    plot_confusion_matrix,
    plot_embedding,
)
from dcl_cluster.callbacks.predictions import ClusterPredictionWriter, write_cluster_results

__all__ = [
    "ClusterPredictionWriter",
    "ClusteringEvaluator",
    "EmbeddingPlots",
    "KNNEvaluator",
    "clustering_figures",
    "embed_2d",
    "match_clusters",
    "plot_cluster_sizes",
    "plot_confusion_matrix",
    "plot_embedding",
    "write_cluster_results",
]
