"""The long-tail protocols of the literature (LDAM-DRW), as plain NumPy: counts and subsets.

Class ``i`` of ``C`` keeps ``n_i = int(n_max * (1 / IF) ** (i / (C - 1)))`` images (the
``"exp"`` profile of Cao et al. 2019), or, with the ``"step"`` profile, the first half of
the classes keep ``n_max`` and the rest ``int(n_max / IF)`` (mu = 0.5). The most frequent
class is class 0, and frequency falls in class order. Which images a class keeps is a
seeded per-class shuffle, so one seed always gives one subset. This module imports only
NumPy and the standard library, so it is usable without torch or Lightning.
"""

from __future__ import annotations

import hashlib
import math
from numbers import Real

import numpy as np

PROFILES = ("exp", "step", "none")


def check_imbalance_factor(imbalance_factor: float) -> float:
    """Return ``imbalance_factor`` as a float, or raise if it is not a finite number >= 1.

    Args:
        imbalance_factor: ratio of the largest to the smallest class size.

    Raises:
        ValueError: NaN, infinite, below 1, or not a number.

    Examples:
        >>> check_imbalance_factor(100)
        100.0
        >>> check_imbalance_factor(0.5)
        Traceback (most recent call last):
        ...
        ValueError: imbalance_factor must be a finite number >= 1 (n_max / n_min), got 0.5
    """
    ok = isinstance(imbalance_factor, Real) and not isinstance(imbalance_factor, bool)
    if not ok or not math.isfinite(imbalance_factor) or imbalance_factor < 1:
        raise ValueError(
            f"imbalance_factor must be a finite number >= 1 (n_max / n_min), "
            f"got {imbalance_factor!r}"
        )
    return float(imbalance_factor)


def _check_profile(profile: str, allowed: tuple[str, ...]) -> None:
    if profile not in allowed:
        raise ValueError(f"profile must be one of {list(allowed)}, got {profile!r}")


def long_tail_counts(
    n_max: int, num_classes: int, imbalance_factor: float, profile: str = "exp"
) -> list[int]:
    """Per-class image counts of a long-tailed split, largest class first.

    ``"exp"``: ``n_i = int(n_max * (1/IF) ** (i / (C-1)))`` (LDAM-DRW, Cao et al. 2019).
    ``"step"``: the first ``C - C // 2`` classes keep ``n_max``, the last ``C // 2`` keep
    ``int(n_max / IF)`` (mu = 0.5 in the same paper).

    Args:
        n_max: images kept by the most frequent class (class 0).
        num_classes: number of classes ``C``.
        imbalance_factor: ``IF = n_max / n_min``, a finite number >= 1.
        profile: ``"exp"`` or ``"step"``.

    Returns:
        ``C`` integers in class order.

    Raises:
        ValueError: a bad ``n_max``, ``num_classes``, ``imbalance_factor`` or ``profile``.

    Examples:
        >>> long_tail_counts(5000, 10, 100)
        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
        >>> long_tail_counts(500, 4, 10, profile="step")
        [500, 500, 50, 50]
    """
    imbalance_factor = check_imbalance_factor(imbalance_factor)
    _check_profile(profile, ("exp", "step"))
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max must be an integer >= 1, got {n_max!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    n_max, num_classes = int(n_max), int(num_classes)
    if num_classes == 1:
        return [n_max]
    if profile == "step":
        n_tail = num_classes // 2
        return [n_max] * (num_classes - n_tail) + [int(n_max / imbalance_factor)] * n_tail
    ratio = 1.0 / imbalance_factor
    return [int(n_max * ratio ** (i / (num_classes - 1))) for i in range(num_classes)]


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    return labels.astype(np.int64, copy=False)


def long_tail_indices(
    labels,
    imbalance_factor: float,
    seed: int = 0,
    profile: str = "exp",
    n_max: int | None = None,
) -> np.ndarray:
    """Seeded long-tailed subset of a labelled split: the positions of the kept images.

    Class ``c`` (classes are ``0 .. max(labels)``) keeps ``long_tail_counts(...)[c]``
    images, drawn by a per-class shuffle from ``numpy.random.default_rng(seed)`` taken in
    class order. ``profile="none"`` keeps every image (for data already long-tailed).

    Args:
        labels: 1-D integer class labels of the full split.
        imbalance_factor: ``n_max / n_min``, a finite number >= 1.
        seed: seed of the per-class selection.
        profile: ``"exp"``, ``"step"`` or ``"none"``.
        n_max: images kept by class 0; default: the smallest class size, so that every
            class can supply its count and the counts follow the rule exactly.

    Returns:
        Sorted int64 positions into ``labels``.

    Raises:
        ValueError: bad arguments, a class with no image, or a class with fewer images
            than the rule asks of it.

    Examples:
        >>> labels = np.repeat(np.arange(3), 10)
        >>> idx = long_tail_indices(labels, imbalance_factor=4, seed=0)
        >>> np.bincount(labels[idx]).tolist()
        [10, 5, 2]
    """
    labels = _check_labels(labels)
    imbalance_factor = check_imbalance_factor(imbalance_factor)
    _check_profile(profile, PROFILES)
    if profile == "none":
        return np.arange(labels.size, dtype=np.int64)
    available = np.bincount(labels)
    if (available == 0).any():
        empty = np.flatnonzero(available == 0).tolist()
        raise ValueError(f"classes must be 0..{available.size - 1} with at least one image "
                         f"each; classes {empty} have none")
    if n_max is None:
        n_max = int(available.min())
    counts = long_tail_counts(n_max, available.size, imbalance_factor, profile)
    short = [c for c, (n, a) in enumerate(zip(counts, available, strict=True)) if n > a]
    if short:
        c = short[0]
        raise ValueError(f"n_max={n_max} asks {counts[c]} images of class {c}, which has "
                         f"only {available[c]}; use n_max <= {int(available.min())}")
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in enumerate(counts)]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def stratified_split(labels, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of a labelled set into train and held-out positions.

    Class ``c`` with ``n_c`` images gives ``round(test_fraction * n_c)`` to the held-out part
    (a per-class shuffle from ``numpy.random.default_rng(seed)``).

    Args:
        labels: 1-D integer labels.
        test_fraction: held-out share, in ``(0, 1)``.
        seed: split seed (keep it fixed so the held-out set never moves).

    Returns:
        ``(train, test)``, sorted int64 positions.

    Examples:
        >>> train, test = stratified_split(np.repeat([0, 1], 10), 0.3)
        >>> len(train), len(test)
        (14, 6)
    """
    labels = _check_labels(labels)
    if not (isinstance(test_fraction, Real) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def subset_hash(indices) -> str:
    """Short, stable fingerprint of a subset: the first 16 hex digits of a SHA-256.

    Examples:
        >>> subset_hash([0, 1, 2]) == subset_hash(np.array([0, 1, 2]))
        True
    """
    data = np.ascontiguousarray(np.asarray(indices, dtype="<i8"))
    return hashlib.sha256(data.tobytes()).hexdigest()[:16]
