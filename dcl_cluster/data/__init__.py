"""Long-tailed image data: the LDAM protocols, dataset sources, views, LongTailDataModule.

``long_tail_counts`` / ``long_tail_indices`` and the sources need only NumPy and torch;
``LongTailDataModule`` (the only Lightning import) is loaded on first use.

Examples:
    >>> from dcl_cluster.data import long_tail_counts
    >>> long_tail_counts(5000, 10, 100)[-1]
    50
"""

from importlib import import_module

from dcl_cluster.data.long_tail import (
    check_imbalance_factor,
    long_tail_counts,
    long_tail_indices,
    stratified_split,
    subset_hash,
)
from dcl_cluster.data.sources import DATASETS, LAYOUTS, DownloadError, SourceData, load_source
from dcl_cluster.data.transforms import NORMALIZATION, PRESETS, ViewPreset, resolve_preset

_LAZY = {
    "LongTailDataModule": "dcl_cluster.data.datamodule",
    "UnreadableImageError": "dcl_cluster.data.folders",
}

__all__ = [
    "DATASETS",
    "LAYOUTS",
    "DownloadError",
    "NORMALIZATION",
    "PRESETS",
    "LongTailDataModule",
    "SourceData",
    "UnreadableImageError",
    "ViewPreset",
    "check_imbalance_factor",
    "load_source",
    "long_tail_counts",
    "long_tail_indices",
    "resolve_preset",
    "stratified_split",
    "subset_hash",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dcl_cluster.data' has no attribute {name!r}")


def __dir__():
    return __all__
