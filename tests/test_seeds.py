"""Every image's augmentation seed of an epoch at once equals numpy's SeedSequence, one by one."""

import numpy as np
import pytest

from dcl_cluster.data.datasets import SeededEpochSampler
from dcl_cluster.data.seeds import augmentation_seed, augmentation_seeds


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31, 2**32 - 1, 2**32, 2**40 + 3, 2**63 - 1, 2**96 + 5])
@pytest.mark.parametrize("epoch", [0, 1, 79, 2**32 + 1])
def test_the_seeds_of_many_indices_equal_seedsequence_one_by_one(seed, epoch):
    rng = np.random.default_rng(seed % 1000 + epoch % 1000)
    indices = np.concatenate([np.arange(40), rng.integers(0, 2**32, 40), [2**32 - 1]])
    expected = [int(np.random.SeedSequence([seed, epoch, int(i)]).generate_state(1)[0]) for i in indices]
    assert augmentation_seeds(seed, epoch, indices).tolist() == expected
    assert [augmentation_seed(seed, epoch, int(i)) for i in indices[:5]] == expected[:5]


def test_indices_outside_32_bits_and_negative_seeds_are_refused():
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\*\*32\), got -1"):
        augmentation_seeds(0, 0, np.array([3, -1]))
    with pytest.raises(ValueError, match="seeds and epochs must be non-negative, got -2"):
        augmentation_seeds(-2, 0, np.array([3]))
    assert augmentation_seeds(0, 0, np.array([], dtype=np.int64)).shape == (0,)


def test_the_sampler_yields_each_indexs_seed_of_the_epoch():
    sampler = SeededEpochSampler(50, seed=3, augmentation_seeds=True)
    sampler.set_epoch(4)
    keys = list(sampler)
    assert sorted(i for i, _, _ in keys) == list(range(50))
    assert all(s == augmentation_seed(3, 4, i) and e == 4 for i, s, e in keys)
