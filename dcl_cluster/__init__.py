"""dcl_cluster: joint debiased contrastive learning and clustering for long-tailed images.

The top-level names are imported lazily, so ``import dcl_cluster.losses`` stays a plain
torch import and does not pay for Lightning.
"""

from importlib import import_module

__version__ = "0.3.0.dev0"

_PUBLIC = {
    "DebiasedClusterModule": "dcl_cluster.module",
    "LongTailDataModule": "dcl_cluster.data",
    "ClusteringEvaluator": "dcl_cluster.callbacks",
    "KNNEvaluator": "dcl_cluster.callbacks",
    "EmbeddingPlots": "dcl_cluster.callbacks",
    "ClusteringMetrics": "dcl_cluster.metrics",
    "KMeans": "dcl_cluster.cluster",
    "preset": "dcl_cluster.presets",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'dcl_cluster' has no attribute {name!r}")


def __dir__():
    return __all__
