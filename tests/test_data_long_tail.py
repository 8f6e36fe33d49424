"""The long-tail protocols: exact published counts, seeded subsets, clear errors."""

import math

import numpy as np
import pytest

from dcl_cluster.data import (
    long_tail_counts,
    long_tail_indices,
    stratified_split,
    subset_hash,
)

# Published sizes (Cao et al. 2019, LDAM-DRW; METHOD.md 3), written out, not recomputed.
CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_cifar10_lt_at_imbalance_100_keeps_the_published_counts():
    assert long_tail_counts(5000, 10, 100) == CIFAR10_LT_100


@pytest.mark.parametrize("imbalance, total", [(10, 20_431), (50, 13_996), (100, 12_406)])
def test_cifar10_lt_totals_match_the_literature(imbalance, total):
    assert sum(long_tail_counts(5000, 10, imbalance)) == total


@pytest.mark.parametrize("imbalance, total", [(100, 10_847), (50, 12_608), (10, 19_573)])
def test_cifar100_lt_totals_match_the_literature(imbalance, total):
    counts = long_tail_counts(500, 100, imbalance)
    assert sum(counts) == total
    assert counts[0] == 500 and counts[-1] == 500 // imbalance
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_exp_profile_on_a_small_case_worked_by_hand():
    # 500 * 0.1 ** (1/3) = 232.07, 500 * 0.1 ** (2/3) = 107.72
    assert long_tail_counts(500, 4, 10) == [500, 232, 107, 50]


def test_step_profile_keeps_n_max_for_the_first_half_and_n_max_over_if_after():
    assert long_tail_counts(500, 10, 100, profile="step") == [500] * 5 + [5] * 5
    assert long_tail_counts(100, 5, 10, profile="step") == [100, 100, 100, 10, 10]


def test_imbalance_factor_one_and_a_single_class_are_balanced():
    assert long_tail_counts(7, 3, 1) == [7, 7, 7]
    assert long_tail_counts(7, 1, 50) == [7]


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.5, 0, -3, "10", None, True])
def test_bad_imbalance_factor_is_rejected_by_name(bad):
    with pytest.raises(ValueError, match="imbalance_factor"):
        long_tail_counts(100, 10, bad)
    with pytest.raises(ValueError, match="imbalance_factor"):
        long_tail_indices(np.repeat(np.arange(3), 5), bad)


def test_nan_message_states_what_is_allowed():
    with pytest.raises(ValueError, match=r"finite number >= 1.*got nan"):
        long_tail_counts(100, 10, float("nan"))


@pytest.mark.parametrize("kwargs, name", [({"n_max": 0}, "n_max"), ({"num_classes": 0}, "num_classes"),
                                          ({"profile": "linear"}, "profile")])
def test_bad_counts_arguments_are_rejected_by_name(kwargs, name):
    args = {"n_max": 100, "num_classes": 10, "imbalance_factor": 10, **kwargs}
    with pytest.raises(ValueError, match=name):
        long_tail_counts(**args)


def _interleaved_labels(per_class: int, num_classes: int, seed: int = 3) -> np.ndarray:
    """Labels in a shuffled order (not grouped by class), as in real datasets."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def test_indices_keep_the_rule_counts_from_each_class():
    labels = _interleaved_labels(500, 10)
    idx = long_tail_indices(labels, 100, seed=0)
    expected = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]  # int(500 * 0.01 ** (i/9))
    assert np.bincount(labels[idx], minlength=10).tolist() == expected
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0), "sorted, no duplicates"


def test_indices_default_n_max_is_the_smallest_class():
    labels = np.concatenate([np.zeros(30, int), np.ones(12, int), np.full(20, 2)])
    idx = long_tail_indices(labels, 4)
    assert np.bincount(labels[idx]).tolist() == [12, 6, 3]


def test_same_seed_same_subset_other_seed_other_subset():
    labels = _interleaved_labels(100, 5)
    a = long_tail_indices(labels, 10, seed=7)
    assert np.array_equal(a, long_tail_indices(labels, 10, seed=7))
    b = long_tail_indices(labels, 10, seed=8)
    assert not np.array_equal(a, b)
    assert np.bincount(labels[a]).tolist() == np.bincount(labels[b]).tolist()


def test_step_profile_and_profile_none_in_indices():
    labels = _interleaved_labels(40, 4)
    idx = long_tail_indices(labels, 10, profile="step")
    assert np.bincount(labels[idx]).tolist() == [40, 40, 4, 4]
    assert np.array_equal(long_tail_indices(labels, 10, profile="none"), np.arange(160))


def test_n_max_beyond_a_class_size_is_an_error_naming_the_class():
    labels = np.concatenate([np.zeros(10, int), np.ones(3, int)])
    with pytest.raises(ValueError, match="class 1, which has only 3"):
        long_tail_indices(labels, 2, n_max=10)


def test_a_class_without_images_is_an_error():
    with pytest.raises(ValueError, match=r"classes \[1\] have none"):
        long_tail_indices(np.array([0, 0, 2, 2]), 2)


@pytest.mark.parametrize("labels", [np.array([[0, 1]]), np.array([0.0, 1.0]), np.array([-1, 0]),
                                    np.array([], dtype=int)])
def test_bad_labels_are_rejected(labels):
    with pytest.raises(ValueError, match="labels"):
        long_tail_indices(labels, 2)


def test_stratified_split_is_disjoint_complete_and_per_class():
    labels = _interleaved_labels(10, 3)
    train, test = stratified_split(labels, 0.3, seed=0)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(30))
    assert np.bincount(labels[test]).tolist() == [3, 3, 3]
    assert np.array_equal(test, stratified_split(labels, 0.3, seed=0)[1])


def test_subset_hash_is_short_stable_and_order_sensitive():
    h = subset_hash(np.array([1, 5, 9]))
    assert h == subset_hash([1, 5, 9]) and len(h) == 16
    assert h != subset_hash([1, 5, 10])
    assert h != subset_hash([9, 5, 1])
