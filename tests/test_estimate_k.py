"""``estimate_num_clusters`` finds the number of well-separated clusters, balanced or with a
tail of 5% of the head, deterministically, and rejects bad inputs with a message."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_score as sklearn_silhouette

from dcl_cluster.cluster import KMeans, NoClusterStructureWarning, estimate_num_clusters, score_num_clusters
from dcl_cluster.cluster.estimate_k import silhouette_num_clusters, silhouette_score


@pytest.fixture(autouse=True)
def one_thread():
    # k-means slows down many times when torch's threads outnumber the free cores of a
    # shared machine; one thread keeps this file within seconds
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def geometric_sizes(k: int, head: int = 1000, tail: int = 50) -> list[int]:
    return [round(head * (tail / head) ** (i / (k - 1))) for i in range(k)]


def blobs(sizes, d: int, seed: int, distance: float = 20.0) -> np.ndarray:
    """Unit Gaussians whose centres are ``distance`` apart at least: on axes when
    ``d >= k``, else evenly on a circle."""
    k = len(sizes)
    rng = np.random.default_rng(seed)
    if d >= k:
        centres = np.eye(k, d) * distance / np.sqrt(2)
    else:
        angles = 2 * np.pi * np.arange(k) / k
        radius = distance / (2 * np.sin(np.pi / k))
        centres = np.zeros((k, d))
        centres[:, 0], centres[:, 1] = radius * np.cos(angles), radius * np.sin(angles)
    x = np.concatenate([c + rng.normal(size=(n, d)) for c, n in zip(centres, sizes, strict=True)])
    return x[rng.permutation(len(x))].astype(np.float32)


@pytest.mark.parametrize(("k", "d", "seed"), [(5, 2, 0), (5, 8, 1), (8, 16, 0), (8, 32, 2)])
def test_finds_long_tailed_clusters_with_a_tail_of_5_percent_of_the_head(k, d, seed):
    sizes = geometric_sizes(k)
    assert sizes[0] == 1000 and sizes[-1] == 50
    assert estimate_num_clusters(torch.from_numpy(blobs(sizes, d, seed)), k_max=2 * k, seed=seed) == k


@pytest.mark.parametrize(("k", "d", "seed"), [(5, 3, 0), (8, 8, 1)])
def test_finds_balanced_clusters(k, d, seed):
    assert estimate_num_clusters(blobs([300] * k, d, seed), k_max=12, seed=seed) == k


def test_silhouette_alone_absorbs_a_tail_next_to_its_head_which_the_estimate_keeps():
    # the tail (50 points) sits 10 from the head (1000), the other centres are 20 apart:
    # merging the tail raises the silhouette of the head's points more than it costs
    sizes = geometric_sizes(6)
    rng = np.random.default_rng(0)
    centres = np.eye(6, 8) * 20 / np.sqrt(2)
    centres[5] = centres[0] + 10 * np.eye(8)[7]
    x = np.concatenate([c + rng.normal(size=(n, 8)) for c, n in zip(centres, sizes, strict=True)])
    x = torch.from_numpy(x[rng.permutation(len(x))].astype(np.float32))
    assert silhouette_num_clusters(x, 12, seed=0) == 5
    assert estimate_num_clusters(x, k_max=12, seed=0) == 6


def test_cosine_metric_ignores_the_norms_of_the_rows():
    rng = np.random.default_rng(3)
    directions = np.eye(4, 16)
    sizes = geometric_sizes(4, 400, 20)
    x = np.concatenate([d + 0.05 * rng.normal(size=(n, 16)) for d, n in zip(directions, sizes, strict=True)])
    x *= rng.uniform(0.2, 5.0, size=(len(x), 1))  # norms unrelated to the clusters
    assert estimate_num_clusters(x.astype(np.float32), k_max=10, metric="cosine") == 4


def test_the_answer_stays_within_two_and_k_max():
    x = blobs([200] * 5, 8, 0)
    assert estimate_num_clusters(x, k_max=3) == 3
    assert estimate_num_clusters(x, k_max=2) == 2
    noise = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    with pytest.warns(NoClusterStructureWarning):
        assert 2 <= estimate_num_clusters(noise, k_max=6) <= 6


@pytest.mark.parametrize("d", [4, 64])
def test_isotropic_noise_warns_that_it_has_no_structure_and_gives_the_scores(d):
    noise = np.random.default_rng(1).normal(size=(1500, d)).astype(np.float32)
    with pytest.warns(NoClusterStructureWarning, match=r"no clear cluster structure.*below 0\.25 at every K.*"
                                                       r"Mean silhouette per K: K=2 0\.\d{3}, K=3 0\.\d{3}"):
        estimate_num_clusters(noise, k_max=8)
    estimate = score_num_clusters(noise, k_max=8)
    assert not estimate.structured and max(estimate.silhouette) < 0.25
    assert estimate.candidates == list(range(2, 9)) and len(estimate.silhouette) == 7


def test_separated_clusters_do_not_warn_and_their_scores_are_those_of_a_hand_count():
    x = blobs(geometric_sizes(5), 8, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert estimate_num_clusters(x, k_max=10) == 5
    estimate = score_num_clusters(x, k_max=10)
    assert estimate.structured and estimate.k == 5 and estimate.best_silhouette > 0.5
    # the curve is the silhouette of k-means at each K, scored as scikit-learn scores it
    from dcl_cluster.cluster.estimate_k import _principal_components

    rows = _principal_components(torch.from_numpy(x)[torch.from_numpy(np.random.default_rng(0).permutation(len(x)))])
    fit = rows[:4000]
    labels = KMeans(3, n_init=2, seed=0).fit(fit).labels_[:2000].numpy()
    assert estimate.silhouette[1] == pytest.approx(sklearn_silhouette(fit[:2000].numpy(), labels), abs=1e-5)
    choice = estimate.as_dict()  # what report.html reads
    assert choice["chosen"] == 5 and choice["k"] == list(range(2, 11)) and choice["score_name"] == "mean silhouette"
    assert choice["how"].startswith("estimated K=5")


def test_wide_features_are_projected_and_keep_their_answer():
    # 256 columns, clusters on 6 of them: the first 128 principal components hold them (the
    # separation test on all 256 columns said 7, on the projection 6)
    x = blobs(geometric_sizes(6, 600, 40), 256, 2)
    assert x.shape[1] > 128 and estimate_num_clusters(x, k_max=12) == 6


def test_same_seed_same_answer_and_numpy_matches_torch():
    x = blobs(geometric_sizes(6, 300, 15), 6, 1, distance=6.0)  # close: the answer depends on the draws
    first = estimate_num_clusters(x, k_max=12, seed=4)
    assert isinstance(first, int)
    assert estimate_num_clusters(x, k_max=12, seed=4) == first
    assert estimate_num_clusters(torch.from_numpy(x), k_max=12, seed=4) == first


def test_silhouette_score_matches_scikit_learn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    labels = rng.integers(0, 4, size=60)
    labels[0] = 4  # a cluster of one point scores 0
    dist = torch.cdist(torch.from_numpy(x), torch.from_numpy(x))
    ours = silhouette_score(dist, torch.from_numpy(labels))
    assert ours == pytest.approx(sklearn_silhouette(x, labels), abs=1e-9)


@pytest.mark.parametrize(("x", "k_max", "match"), [
    (np.zeros((10, 2)), 1, r"k_max must be an integer in \[2, N=10\], got 1"),
    (np.zeros((10, 2)), 11, r"k_max must be an integer in \[2, N=10\], got 11"),
    (np.zeros((10, 2)), 2.0, r"k_max must be an integer .* got 2.0"),
    (np.zeros(10), 2, r"x must be 2-D \(n_samples, n_features\), got shape \(10,\)"),
    (np.zeros((2, 3)), 2, "x must have at least 3 samples, got 2"),
    (np.array([[0.0], [1.0], [np.nan], [np.inf]]), 2, "x must be finite, got NaN or inf in 2 rows"),
])
def test_bad_inputs_raise_with_the_value_and_what_is_allowed(x, k_max, match):
    with pytest.raises(ValueError, match=match):
        estimate_num_clusters(x, k_max)


def test_unknown_metric_and_input_type_raise():
    with pytest.raises(ValueError, match=r"metric must be one of \('euclidean', 'cosine'\), got 'l1'"):
        estimate_num_clusters(np.zeros((10, 2)), 3, metric="l1")
    with pytest.raises(TypeError, match="x must be a torch.Tensor or numpy array, got list"):
        estimate_num_clusters([[0.0, 1.0]] * 5, 3)
