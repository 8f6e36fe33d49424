"""Drop-in Lightning callbacks: clustering scores, kNN/diagnostics and plots of any module.

They rely only on a small protocol (``callbacks.collect``) and public Trainer API, so
they work in projects that use nothing else of ``dcl_cluster``. The names are imported
lazily: ``write_cluster_results`` (``dcl-cluster recluster``) does not pay for Lightning.
"""

from importlib import import_module

_PUBLIC = {
    "ClusterPredictionWriter": "dcl_cluster.callbacks.predictions",
    "ClusteringEvaluator": "dcl_cluster.callbacks.evaluator",
    "EmbeddingPlots": "dcl_cluster.callbacks.plots",
    "KNNEvaluator": "dcl_cluster.callbacks.knn",
    "clustering_figures": "dcl_cluster.callbacks.plots",
    "embed_2d": "dcl_cluster.callbacks.plots",
    "match_clusters": "dcl_cluster.callbacks.plots",
    "plot_cluster_sizes": "dcl_cluster.callbacks.plots",
    "plot_confusion_matrix": "dcl_cluster.callbacks.plots",
    "plot_embedding": "dcl_cluster.callbacks.plots",
    "write_cluster_results": "dcl_cluster.callbacks.cluster_results",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'dcl_cluster.callbacks' has no attribute {name!r}")


def __dir__():
    return __all__
