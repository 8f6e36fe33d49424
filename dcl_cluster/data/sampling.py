"""A shuffling sampler whose order depends only on (seed, epoch), so a run resumed from a
checkpoint sees exactly the batches an uninterrupted run would have seen.

Lightning calls ``set_epoch`` on a loader's sampler at the start of every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler"]


class EpochShuffleSampler(Sampler[int]):
    """Random permutation of ``range(num_samples)`` seeded by ``seed`` and the epoch.

    Examples:
        >>> s = EpochShuffleSampler(5, seed=0)
        >>> s.set_epoch(3); a = list(s); s.set_epoch(3)
        >>> a == list(s)
        True
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples
