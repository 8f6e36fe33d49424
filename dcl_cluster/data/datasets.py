"""Torch datasets over a source's images: the view dataset, the evaluation dataset, the sampler.

Images stay uint8 until the collate function (see :mod:`dcl_cluster.data.transforms`), which
keeps worker-to-main traffic small and lets photometric augmentation and normalisation run
once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dcl_cluster.data.folders import read_image_file
from dcl_cluster.data.seeds import augmentation_seeds
from dcl_cluster.data.transforms import seeded


class ArrayImages:
    """In-memory uint8 images, selected from an ``(N, H, W, C)`` array -> ``(C, H, W)`` items."""

    def __init__(self, images: np.ndarray, indices: np.ndarray | None = None):
        chosen = images if indices is None else images[indices]
        self.data = torch.from_numpy(np.ascontiguousarray(chosen)).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data[i]


class LazyArrayImages:
    """Images read one at a time from an indexable of ``(H, W, C)`` arrays (a memory map)."""

    def __init__(self, images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.images[i])).permute(2, 0, 1)


class FileImages:
    """Image files decoded on access (Pillow); errors name the file."""

    def __init__(self, paths: Sequence[str], indices: np.ndarray | None = None):
        self.paths = list(paths) if indices is None else [paths[i] for i in indices]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return read_image_file(self.paths[i])


class ChainedImages:
    """Several image stores one after the other (STL-10: long-tailed labelled, then unlabelled)."""

    def __init__(self, *parts):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> torch.Tensor:
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][i - int(self.offsets[k])]


def image_store(images, indices: np.ndarray | None = None):
    """The right store for a source split: arrays in memory, file paths decoded lazily."""
    if isinstance(images, np.ndarray):
        return ArrayImages(images, indices)
    if isinstance(images, list):
        return FileImages(images, indices)
    return LazyArrayImages(images)


class ViewDataset(Dataset):
    """``i -> (views, y, i, seed)``: ``views = [view_a, view_b(, clean)]``, uint8 ``(C, S, S)``,
    or, once a neighbour table or the strong view is on, a dict keyed ``"a"``, ``"b"``,
    ``"clean"``, ``"neighbor"``, ``"strong"``.

    Indexed by ``(i, seed, epoch)`` (what :class:`SeededEpochSampler` yields), the random
    views (and which neighbour is drawn) follow ``seed`` and the seed is passed on for the
    batch's photometric augmentation; indexed by a plain ``i``, they use the global random state.

    Args:
        images: a store from :func:`image_store`.
        labels: int64 labels (``-1`` for unlabelled images).
        view: the per-image random (geometric) transform.
        clean: the deterministic transform; when given, its output is appended last.

    Attributes:
        neighbors: ``(N, k)`` int64 tensor of each image's nearest neighbours (SCAN, METHOD.md
            2.6), in shared memory so that loader workers see a table filled in later; rows of
            ``-1`` are not mined yet. When a row is mined, a random neighbour's augmented view
            comes as ``"neighbor"``.
        strong: the strong per-image transform (RandAugment + cutout) or ``None``; with it, the
            ``"strong"`` view comes from epoch ``strong_from_epoch`` on (the epoch is part of
            the sampler's key, so a worker made before the switch still knows when it is on).
    """

    def __init__(self, images, labels: np.ndarray, view: Callable,
                 clean: Callable | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.view, self.clean = view, clean
        self.neighbors: torch.Tensor | None = None
        self.strong: Callable | None = None
        self.strong_from_epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        i, seed, epoch = (tuple(key) + (None,))[:3] if isinstance(key, tuple) else (key, None, None)
        img = self.images[i]
        with seeded(seed):
            views = [self.view(img), self.view(img)]
            named = {}
            table = self.neighbors
            if table is not None and i < len(table) and int(table[i, 0]) >= 0:  # unlabelled extras: none
                row = table[i]
                j = int(row[int(torch.randint(len(row), ()))])
                named["neighbor"] = self.view(self.images[j])
            if self.strong is not None and (epoch is None or epoch >= self.strong_from_epoch):
                named["strong"] = self.strong(img)
        if self.clean is not None:
            views.append(self.clean(img))
        if named:
            views = {"a": views[0], "b": views[1], **({"clean": views[2]} if self.clean is not None else {}),
                     **named}
        return views, int(self.labels[i]), i, seed


class EvalDataset(Dataset):
    """``i -> (x, y)`` or ``(x, y, i)`` with a deterministic transform, x uint8 ``(C, S, S)``."""

    def __init__(self, images, labels: np.ndarray, transform: Callable, with_index: bool = False):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.transform, self.with_index = transform, with_index

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x, y = self.transform(self.images[i]), int(self.labels[i])
        return (x, y, i) if self.with_index else (x, y)


class SeededEpochSampler(Sampler):
    """Random order that depends only on ``(seed, epoch)``: same seed, same batches.

    Lightning calls ``set_epoch`` before every epoch, so a resumed run sees the orders of
    the uninterrupted one; used alone, each new iteration moves to the next epoch. With
    ``augmentation_seeds=True`` it yields ``(index, seeds.augmentation_seed(seed, epoch, index))``
    pairs for :class:`ViewDataset` (with the epoch: ``(index, seed, epoch)``), so the views are
    reproducible too.

    Examples:
        >>> list(SeededEpochSampler(5, seed=0)) == list(SeededEpochSampler(5, seed=0))
        True
    """

    def __init__(self, num_samples: int, seed: int = 0, augmentation_seeds: bool = False):
        self.num_samples, self.seed, self.epoch = int(num_samples), int(seed), 0
        self.augmentation_seeds = augmentation_seeds

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        g = torch.Generator().manual_seed(int(state))
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = torch.randperm(self.num_samples, generator=g).numpy()
        if self.augmentation_seeds:
            seeds = augmentation_seeds(self.seed, epoch, order).tolist()
            return iter([(i, s, epoch) for i, s in zip(order.tolist(), seeds, strict=True)])
        return iter(order.tolist())
