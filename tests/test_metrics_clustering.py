"""Clustering scores against scikit-learn and brute force (METHOD.md 4)."""

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

from dcl_cluster.metrics import (
    ClusteringMetrics,
    cluster_accuracy,
    clustering_scores,
    head_medium_tail_groups,
    macro_f1,
    match_clusters_to_classes,
    scores_from_table,
)


def _labels(n, num_classes, num_clusters, agreement, seed):
    """Random labels and predictions that agree on about ``agreement`` of the points."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    noise = rng.integers(0, num_clusters, n)
    p = np.where(rng.random(n) < agreement, (y * 3 + 1) % num_clusters, noise)
    return y, p


CASES = {  # name: (n, classes, clusters, agreement)
    "equal": (2000, 10, 10, 0.6),
    "more_clusters": (2000, 5, 17, 0.5),
    "fewer_clusters": (2000, 12, 4, 0.7),
    "random": (500, 7, 9, 0.0),
    "tiny": (7, 3, 4, 0.5),
    "one_class": (300, 1, 5, 0.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_nmi_ari_ami_equal_scikit_learn(case, seed):
    y, p = _labels(*CASES[case], seed)
    s = clustering_scores(y, p)
    assert s["nmi"] == pytest.approx(skm.normalized_mutual_info_score(y, p), abs=1e-6)
    assert s["ari"] == pytest.approx(skm.adjusted_rand_score(y, p), abs=1e-6)
    assert s["ami"] == pytest.approx(skm.adjusted_mutual_info_score(y, p), abs=1e-6)


def test_total_collapse_gives_nmi_and_ari_zero():
    y = np.repeat(np.arange(10), [400, 240, 144, 86, 52, 31, 18, 11, 7, 4])
    s = clustering_scores(y, np.zeros_like(y), num_clusters=10)
    assert s["nmi"] == 0.0 and s["ari"] == 0.0 and s["ami"] == 0.0
    assert s["acc"] == pytest.approx(400 / y.size)  # plain ACC rewards collapse
    assert s["balanced_acc"] == pytest.approx(0.1)  # balanced ACC does not


def test_permuted_perfect_clustering_scores_one():
    y = np.arange(100) % 7
    s = clustering_scores(y, (y * 3 + 2) % 7)
    assert all(s[k] == pytest.approx(1.0) for k in ("acc", "balanced_acc", "macro_f1", "nmi", "ari", "ami"))


def test_ari_exact_at_a_million_labels():
    """torchmetrics' ARI overflows its pair counts here; the int pair counts do not."""
    y, p = _labels(1_000_000, 50, 60, 0.5, seed=3)
    assert clustering_scores(y, p)["ari"] == pytest.approx(skm.adjusted_rand_score(y, p),
                                                           abs=1e-9)



def _full_range_emi(a, b, n):
    """Vinh et al.'s E[MI] summed over every pair and every cell value, as scikit-learn's loop."""
    from scipy.special import gammaln

    total = 0.0
    for ai in a:
        for bj in b:
            k = np.arange(max(1, ai + bj - n), min(ai, bj) + 1, dtype=np.float64)
            log_p = (gammaln(ai + 1) + gammaln(bj + 1) + gammaln(n - ai + 1) + gammaln(n - bj + 1)
                     - gammaln(n + 1) - gammaln(k + 1) - gammaln(ai - k + 1) - gammaln(bj - k + 1)
                     - gammaln(n - ai - bj + k + 1))
            total += float(np.sum(k / n * np.log(n * k / (ai * bj)) * np.exp(log_p)))
    return total


@pytest.mark.parametrize("seed", range(4))
def test_expected_mutual_information_equals_the_full_sum(seed):
    """The cut ranges, shared sizes, padded rows and blocks change nothing beyond rounding:
    long-tailed sizes (rows of very different lengths), pairs with a + b > n, tiny blocks."""
    from dcl_cluster.metrics.clustering import _expected_mutual_information

    rng = np.random.default_rng(seed)
    a = np.round(np.exp(rng.uniform(0, 7, rng.integers(2, 40)))).astype(np.int64)
    n = int(a.sum())
    b = rng.multinomial(n, rng.dirichlet(np.full(rng.integers(2, 30), 0.3)))
    b = b[b > 0]
    expected = _full_range_emi(a, b, n)
    for block in (1 << 16, 64):
        assert _expected_mutual_information(a, b, n, block=block) == pytest.approx(expected, rel=1e-10)
    big = np.array([90, 10])  # 90 + 80 > 100: the range starts at 70
    assert _expected_mutual_information(big, np.array([80, 20]), 100) == pytest.approx(
        _full_range_emi(big, np.array([80, 20]), 100), rel=1e-12)


def test_expected_mutual_information_exact_for_clusters_of_half_a_million():
    """Large pairs cancel to a tiny E[MI]: a sum over log-gamma values of size 1e7 (scikit-learn's,
    and 0.1's) drifts by 1e-9 here; the reference is a 40-digit mpmath sum."""
    from dcl_cluster.metrics.clustering import _expected_mutual_information

    a = np.array([600_000, 300_000, 99_990, 10])
    b = np.array([500_000, 250_000, 200_000, 49_000, 1000])
    assert _expected_mutual_information(a, b, int(a.sum())) == pytest.approx(5.696075000514896e-06, rel=1e-11)

def _brute_force_accuracy(y, p):
    """Best accuracy over every injective cluster -> class map, counted point by point."""
    n_cls, n_clu = int(y.max()) + 1, int(p.max()) + 1
    best = 0.0
    slots = list(range(n_cls)) + [-1] * n_clu  # -1: cluster left unmatched (errors)
    for assignment in set(itertools.permutations(slots, n_clu)):
        mapped = np.array(assignment)[p]
        best = max(best, float(np.mean(mapped == y)))
    return best


@pytest.mark.parametrize("n_cls,n_clu", [(3, 3), (4, 2), (2, 4), (4, 5), (5, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_equals_brute_force_over_maps(n_cls, n_clu, seed):
    y, p = _labels(40, n_cls, n_clu, 0.5, seed)
    y[:n_cls], p[:n_clu] = np.arange(n_cls), np.arange(n_clu)  # every id occurs
    expected = _brute_force_accuracy(y, p)
    assert cluster_accuracy(y, p) == pytest.approx(expected)
    assert clustering_scores(y, p)["acc"] == pytest.approx(expected)


def test_cluster_accuracy_takes_arbitrary_integer_ids():
    assert cluster_accuracy([5, 5, 9, 9, 7], [-1, -1, 40, 40, 40]) == pytest.approx(0.8)


def test_head_medium_tail_groups_split_30_40_30_by_frequency():
    counts = [50, 5000, 83, 1796, 645, 2997, 139, 387, 1077, 232]  # CIFAR-10-LT shuffled
    head, medium, tail = head_medium_tail_groups(counts)
    assert head == [1, 5, 3] and medium == [8, 4, 7, 9] and tail == [6, 2, 0]
    assert [len(g) for g in head_medium_tail_groups([1] * 100)] == [30, 40, 30]
    assert [len(g) for g in head_medium_tail_groups([5, 4, 3, 2, 1])] == [2, 1, 2]
    assert [len(g) for g in head_medium_tail_groups([7])] == [0, 1, 0]


def test_shot_groups_use_many_and_few_thresholds():
    assert head_medium_tail_groups([500, 101, 100, 20, 19, 5], shot_thresholds=(100, 20)) == (
        [0, 1], [2, 3], [4, 5])


def test_balanced_and_group_accuracy_match_an_independent_computation():
    counts = [900, 500, 300, 200, 120, 80, 50, 30, 20, 10]
    y, p = _labels(3000, 10, 12, 0.55, seed=7)
    s = clustering_scores(y, p, class_counts=counts)
    # the map from scipy on scikit-learn's table; recall and groups from the labels here
    table = skm.cluster.contingency_matrix(p, y)  # (clusters, classes)
    rows, cols = linear_sum_assignment(-table)
    mapped = np.full(p.max() + 1, -1)
    mapped[rows] = cols
    recall = np.array([np.mean(mapped[p[y == c]] == c) for c in range(10)])
    assert s["balanced_acc"] == pytest.approx(recall.mean())
    assert s["head_acc"] == pytest.approx(recall[[0, 1, 2]].mean())
    assert s["medium_acc"] == pytest.approx(recall[[3, 4, 5, 6]].mean())
    assert s["tail_acc"] == pytest.approx(recall[[7, 8, 9]].mean())
    assert s["balanced_acc"] == pytest.approx(
        skm.balanced_accuracy_score(y, mapped[p]), abs=1e-12)


def test_metric_over_batches_equals_one_shot_scores():
    y, p = _labels(1000, 6, 8, 0.6, seed=4)
    m = ClusteringMetrics(num_classes=6, num_clusters=8, class_counts=[6, 5, 4, 3, 2, 1])
    for s in range(0, 1000, 128):
        m.update(torch.as_tensor(p[s : s + 128]), torch.as_tensor(y[s : s + 128]))
    out = m.compute()
    assert set(out) == {"acc", "balanced_acc", "macro_f1", "nmi", "ari", "ami",
                        "head_acc", "medium_acc", "tail_acc"}
    assert out == pytest.approx(clustering_scores(y, p, [6, 5, 4, 3, 2, 1], 6, 8))
    assert m.table.dtype == torch.float64 and m.table.sum() == 1000


def test_update_rejects_out_of_range_ids_naming_value_and_range():
    m = ClusteringMetrics(num_classes=3, num_clusters=4)
    with pytest.raises(ValueError, match=r"cluster id \(preds\) 4 .*\[0, 3\]"):
        m.update(torch.tensor([0, 4]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"class label \(target\) -1 .*\[0, 2\]"):
        m.update(torch.tensor([0, 1]), torch.tensor([-1, 1]))
    with pytest.raises(ValueError, match="num_clusters must be an integer >= 1"):
        ClusteringMetrics(num_classes=3, num_clusters=0)


def test_compute_without_data_is_nan():
    out = clustering_scores(np.zeros(0, int), np.zeros(0, int), num_classes=2, num_clusters=2)
    assert all(np.isnan(v) for v in out.values())


def _sklearn_matched_f1(y, p):
    """scikit-learn's macro F1 of the Hungarian-mapped predictions; unmatched clusters map to -1."""
    table = skm.cluster.contingency_matrix(p, y)  # (clusters, classes), ids in sorted order
    rows, cols = linear_sum_assignment(-table)
    classes, clusters = np.unique(y), np.unique(p)
    mapped = np.full(len(clusters), -1)
    mapped[rows] = classes[cols]
    mapped_pred = mapped[np.searchsorted(clusters, p)]
    return skm.f1_score(y, mapped_pred, labels=classes, average="macro", zero_division=0), mapped_pred


@pytest.mark.parametrize("case", ["equal", "more_clusters", "fewer_clusters", "random", "tiny", "one_class"])
@pytest.mark.parametrize("seed", [0, 1])
def test_macro_f1_equals_scikit_learn_after_the_hungarian_map(case, seed):
    y, p = _labels(*CASES[case], seed)
    expected, mapped_pred = _sklearn_matched_f1(y, p)
    assert macro_f1(y, p) == pytest.approx(expected, abs=1e-12)
    assert clustering_scores(y, p)["macro_f1"] == pytest.approx(expected, abs=1e-12)
    if CASES[case][2] <= CASES[case][1]:  # every cluster matched: the plain sklearn call agrees
        assert (mapped_pred >= 0).all()
        assert macro_f1(y, p) == pytest.approx(skm.f1_score(y, mapped_pred, average="macro"), abs=1e-12)


def test_macro_f1_gives_zero_to_a_class_without_a_cluster_and_counts_unmatched_clusters_as_wrong():
    # 3 classes, 2 clusters: class 2 gets no cluster; its F1 is 0 and the mean is over 3 classes
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    p = np.array([0, 0, 1, 1, 1, 1, 1, 0])
    f1_0 = 2 * 2 / (3 + 3)  # cluster 0 -> class 0: TP 2, predicted 3, support 3
    f1_1 = 2 * 3 / (5 + 3)  # cluster 1 -> class 1: TP 3, predicted 5, support 3
    assert macro_f1(y, p) == pytest.approx((f1_0 + f1_1 + 0.0) / 3)
    assert macro_f1(y, p) == pytest.approx(_sklearn_matched_f1(y, p)[0])
    # 2 classes, 3 clusters: the third cluster's points are errors of their class (recall only)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([5, 5, 5, 9, 7, 7, 7, 9])
    f1 = 2 * 3 / (3 + 4)  # each class: TP 3, predicted 3, support 4
    assert macro_f1(y, p) == pytest.approx(f1)
    assert macro_f1(y, p) == pytest.approx(_sklearn_matched_f1(y, p)[0])


def test_macro_f1_from_a_table_averages_only_the_classes_present():
    y, p = _labels(600, 5, 6, 0.6, seed=5)
    table = np.zeros((6, 7))  # classes 5 and 6 never occur
    np.add.at(table, (p, y), 1)
    expected, _ = _sklearn_matched_f1(y, p)
    assert scores_from_table(table)["macro_f1"] == pytest.approx(expected, abs=1e-12)
    assert clustering_scores(y, p, num_classes=7)["macro_f1"] == pytest.approx(expected, abs=1e-12)


def test_macro_f1_is_nan_without_points_and_checks_shapes():
    assert np.isnan(macro_f1([], []))
    with pytest.raises(ValueError, match="same shape"):
        macro_f1([0, 1], [0])


def _brute_force_matching(table):
    """The largest matched count over every one-to-one map, by enumeration."""
    k, c = table.shape
    if k >= c:
        return max(sum(table[r, j] for j, r in enumerate(rows))
                   for rows in itertools.permutations(range(k), c))
    return max(sum(table[i, col] for i, col in enumerate(cols))
               for cols in itertools.permutations(range(c), k))


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (1, 4), (6, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_is_one_to_one_and_as_good_as_brute_force(shape, seed):
    table = np.random.default_rng(seed).integers(0, 20, shape)
    rows, cols = match_clusters_to_classes(torch.as_tensor(table))
    assert len(rows) == len(cols) == min(shape)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert rows.tolist() == sorted(rows.tolist()) and rows.dtype == cols.dtype == np.int64
    assert table[rows, cols].sum() == _brute_force_matching(table)


def test_matching_rejects_a_table_that_is_not_two_dimensional():
    with pytest.raises(ValueError, match="table must be 2-D"):
        match_clusters_to_classes(np.zeros(3))


def _quality_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("_quality_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", ["equal", "more_clusters", "fewer_clusters"])
def test_plots_and_benchmark_use_the_same_matching_as_the_scores(case):
    from dcl_cluster.callbacks import match_clusters

    y, p = _labels(*CASES[case], 3)
    num_classes = CASES[case][1]
    # per-class recall of the quality benchmark, against recall under scipy's map here
    table = skm.cluster.contingency_matrix(p, y)  # (clusters, classes); every id occurs
    rows, cols = linear_sum_assignment(-table)
    mapped = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    recall = [np.mean([mapped.get(k, -1) == c for k in p[y == c]]) for c in range(num_classes)]
    got = _quality_benchmark().per_class_recall(y, p, num_classes)
    assert got == pytest.approx(recall, abs=1e-12)
    assert np.mean(got) == pytest.approx(clustering_scores(y, p)["balanced_acc"], abs=1e-12)
    # the plots' cluster -> class map scores the accuracy cluster_accuracy reports
    plot_map = match_clusters(y, p)
    assert np.mean([plot_map.get(k, -1) == c for k, c in zip(p, y, strict=True)]) == \
        pytest.approx(cluster_accuracy(y, p), abs=1e-12)


def test_final_report_table_shows_macro_f1(capsys):
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, TensorDataset

    from dcl_cluster.report import final_report

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.eye(3)[y] * 5 + torch.randn(60, 3, generator=g) * 0.1  # three clean blobs
    loader = DataLoader(TensorDataset(x, y), batch_size=20)
    datamodule = SimpleNamespace(
        num_classes=3, train_class_counts=[30, 20, 10], class_names=["a", "b", "c"],
        val_class_counts=[20, 20, 20], train_eval_dataloader=lambda: loader,
        val_dataloader=lambda: loader)
    trainer = SimpleNamespace(log_dir=None, is_global_zero=True)
    model = torch.nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
        model.bias.zero_()
    report = final_report(trainer, model, datamodule)
    header = next(line for line in capsys.readouterr().out.splitlines() if "NMI" in line)
    cells = [c.strip() for c in header.replace("┃", "|").replace("│", "|").split("|") if c.strip()]
    assert cells[cells.index("bACC") + 1] == "F1"
    assert report["held-out"]["k-means"]["macro_f1"] == pytest.approx(1.0)
