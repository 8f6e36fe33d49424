"""What both dataset readers share (SourceData, layouts, split seed), kept here so their imports form no circle.

:mod:`dcl_cluster.data.sources` (the array sources and :func:`~dcl_cluster.data.sources.load_source`)
and :mod:`dcl_cluster.data.folders` (the image-file sources) both build :class:`SourceData`,
name their layouts in the same errors and split with the same seed; both import these from
here, and ``sources`` imports ``folders``, never the other way round. Every name stays
importable from :mod:`dcl_cluster.data.sources` as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HELD_OUT_SPLIT_SEED = 0
"""Seed of the stratified held-out split (digits, npz with only ``x, y``): fixed on purpose."""


@dataclass
class SourceData:
    """A dataset as read from disk: full splits, before any long-tail selection.

    ``*_images`` is a uint8 array ``(N, H, W, C)`` or a list of image paths; ``native_size`` is
    the shorter image side (``None`` when unknown). ``val_*`` is
    ``None`` when the source has no separate validation split. An unlabelled source
    (``images``) has labels ``-1`` and no class names. ``unlabeled_images`` (STL-10)
    is an extra array used for contrastive training only. ``long_tailed`` marks sources whose
    train split is long-tailed already (ImageNet-LT), which are used as they are.
    """

    name: str
    train_images: np.ndarray | list[str]
    train_labels: np.ndarray
    test_images: np.ndarray | list[str]
    test_labels: np.ndarray
    class_names: list[str]
    num_channels: int
    native_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_images: np.ndarray | list[str] | None = None
    val_labels: np.ndarray | None = None
    unlabeled_images: np.ndarray | None = None
    long_tailed: bool = False


LAYOUTS: dict[str, str] = {
    "digits": "nothing (scikit-learn's bundled digits)",
    "npz": "DATA_DIR/*.npz (or DATA_DIR itself a .npz) with x_train, y_train, x_test, y_test "
           "(uint8 N x H x W x C) or x, y",
    "cifar10": "DATA_DIR/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} "
               "(torchvision's layout)",
    "cifar100": "DATA_DIR/cifar-100-python/{train, test, meta} (torchvision's layout)",
    "stl10": "DATA_DIR/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, "
             "class_names.txt[, unlabeled_X.bin]} (torchvision's layout)",
    "imagenet_lt": "DATA_DIR/ImageNet_LT_{train,val,test}.txt (or in DATA_DIR/ImageNet_LT/), "
                   "one 'relative/path.JPEG label' per line, paths relative to DATA_DIR",
    "image_folder": "DATA_DIR/train/<class>/<image> and DATA_DIR/{val,test}/<class>/<image>",
    "images": "DATA_DIR/**/<image>: every image file below DATA_DIR at any depth, no labels",
}
"""The on-disk layout each source expects (also quoted in its error messages)."""

DATASETS = tuple(LAYOUTS)
DOWNLOADABLE = ("cifar10", "cifar100", "stl10")


def missing_layout(name: str, data_dir, detail: str = "") -> FileNotFoundError:
    """The one error for absent files: names the layout and, where it exists, download=True."""
    msg = f"dataset {name!r}: no data found under {str(data_dir)!r}"
    msg += f" ({detail})" if detail else ""
    msg += f"; expected {LAYOUTS[name]}"
    if name in DOWNLOADABLE:
        msg += "; pass download=True to download it with torchvision"
    return FileNotFoundError(msg)


def check_dataset_name(name: str) -> str:
    """Raise ``ValueError`` listing the valid names when ``name`` is not a known source."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset {name!r}; valid names are {list(DATASETS)}")
    return name
