"""Clustering scores (ACC, balanced/head/medium/tail ACC, macro F1, NMI, ARI, AMI) from one table.

Every score is a function of the clusters x classes contingency table, so the online
metric keeps only that table: exact at any N, and a DDP sync costs
O(clusters x classes) instead of gathering every prediction. The formulas follow
scikit-learn (``sklearn.metrics.cluster``) line by line, special cases included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics import Metric

_EPS = np.finfo(np.float64).eps


def head_medium_tail_groups(
    class_counts: Sequence[int],
    shot_thresholds: tuple[int, int] | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """Split classes into head, medium and tail groups by training frequency.

    Default (P^2OT's protocol, Zhang et al., ICLR 2024): classes sorted by count,
    descending (ties keep the lower class index first), the first
    ``round(0.3 C)`` are head, the last ``round(0.3 C)`` tail, the rest medium, with
    halves rounded up (10 classes: 3/4/3; 100: 30/40/30; 5: 2/1/2). With
    ``shot_thresholds=(many, few)`` the ImageNet-LT shot groups of Liu et al. 2019 are
    used instead: head ``> many``, tail ``< few``, medium in between (``(100, 20)``).

    Args:
        class_counts: Training images per class, indexed by class id.
        shot_thresholds: Optional ``(many, few)`` count thresholds.

    Returns:
        Three lists of class ids: head, medium, tail.

    Examples:
        >>> head_medium_tail_groups([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
        ([0, 1, 2], [3, 4, 5, 6], [7, 8, 9])
    """
    counts = [int(c) for c in class_counts]
    if not counts or min(counts) < 0:
        raise ValueError(f"class_counts must be a non-empty list of counts >= 0, got {counts}")
    if shot_thresholds is not None:
        many, few = shot_thresholds
        if few > many:
            raise ValueError(f"shot_thresholds must be (many, few) with few <= many, "
                             f"got {shot_thresholds}")
        return ([c for c, n in enumerate(counts) if n > many],
                [c for c, n in enumerate(counts) if few <= n <= many],
                [c for c, n in enumerate(counts) if n < few])
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    n_edge = math.floor(0.3 * len(counts) + 0.5)
    n_edge = min(n_edge, len(counts) // 2)
    return order[:n_edge], order[n_edge : len(counts) - n_edge], order[len(counts) - n_edge :]


def contingency_table(y_pred, y_true, num_clusters: int, num_classes: int) -> torch.Tensor:
    """The ``(num_clusters, num_classes)`` float64 count table of (cluster, class) pairs.

    Raises:
        ValueError: on ids outside ``[0, num_clusters)`` / ``[0, num_classes)``.
    """
    return _pair_counts(y_pred, y_true, num_clusters, num_classes).to(torch.float64)


def _pair_counts(y_pred, y_true, num_clusters: int, num_classes: int) -> torch.Tensor:
    """:func:`contingency_table` in int64 (the metric adds it to its float64 state in place)."""
    y_pred, y_true = _as_ids(y_pred, "preds"), _as_ids(y_true, "target")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"preds and target must have the same shape, got "
                         f"{tuple(y_pred.shape)} and {tuple(y_true.shape)}")
    _check_range(y_pred, num_clusters, "cluster id (preds)", "num_clusters")
    _check_range(y_true, num_classes, "class label (target)", "num_classes")
    flat = y_true.flatten().add(y_pred.flatten(), alpha=num_classes)  # cluster * classes + class, one pass
    return torch.bincount(flat, minlength=num_clusters * num_classes).view(num_clusters, num_classes)


def match_clusters_to_classes(table) -> tuple[np.ndarray, np.ndarray]:
    """The best one-to-one map of clusters to classes: the Hungarian matching of a table.

    Kuhn's Hungarian method (1955; ``scipy.optimize.linear_sum_assignment``) on the
    possibly rectangular ``(clusters, classes)`` count table, maximising the number of
    points whose cluster maps to their class, as in DEC (Xie et al. 2016). Every score
    and plot of the package that matches clusters to classes calls this one function.

    Args:
        table: ``(clusters, classes)`` counts (tensor, array or nested lists), e.g. from
            :func:`contingency_table`.

    Returns:
        ``(rows, cols)``: int64 arrays of ``min(clusters, classes)`` matched pairs,
        cluster ``rows[j]`` to class ``cols[j]``, sorted by cluster id. Clusters not in
        ``rows`` are unmatched (their points count as errors).

    Examples:
        >>> rows, cols = match_clusters_to_classes([[0, 5], [4, 1], [1, 0]])
        >>> rows.tolist(), cols.tolist()  # cluster 0 -> class 1, cluster 1 -> class 0
        ([0, 1], [1, 0])
    """
    if isinstance(table, torch.Tensor):
        table = table.detach().to("cpu", torch.float64).numpy()
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"table must be 2-D (clusters, classes), got shape {t.shape}")
    rows, cols = linear_sum_assignment(t, maximize=True)
    return rows.astype(np.int64), cols.astype(np.int64)


def _as_ids(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if isinstance(x, (list, tuple)) else x)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        if x.is_floating_point() and bool((x == x.round()).all()):
            return x.long()
        raise ValueError(f"{name} must hold integer ids, got dtype {x.dtype}")
    return x.long()


def _check_range(x: torch.Tensor, upper: int, what: str, arg: str) -> None:
    if x.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(x))
    if lo < 0 or hi >= upper:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{what} {bad} is out of range: allowed [0, {upper - 1}] "
                         f"for {arg}={upper}")


def scores_from_table(
    table: torch.Tensor | np.ndarray,
    class_counts: Sequence[int] | None = None,
    shot_thresholds: tuple[int, int] | None = None,
) -> dict[str, float]:
    """All scores from a ``(clusters, classes)`` contingency table.

    ``acc``: Hungarian one-to-one map of clusters to classes
    (:func:`match_clusters_to_classes`, on the possibly rectangular table);
    unmatched clusters count as errors. ``balanced_acc``: mean per-class recall under
    the same map, over the classes present in the table; ``head_acc``/``medium_acc``/
    ``tail_acc``: the same mean within each group of :func:`head_medium_tail_groups`
    (NaN for a group with no class present). ``macro_f1``: per class present, the F1 of
    "predicted as the cluster matched to it" under the same map (0 for a class left
    without a cluster), averaged with equal weight (P²OT's protocol). ``nmi`` (arithmetic mean normalisation,
    Strehl & Ghosh 2002), ``ari`` (Hubert & Arabie 1985), ``ami`` (Vinh et al. 2010) as
    scikit-learn, including its special cases. An empty table gives NaN everywhere.
    """
    t = torch.as_tensor(table).detach().to("cpu", torch.float64).numpy()
    if t.ndim != 2:
        raise ValueError(f"table must be 2-D (clusters, classes), got shape {t.shape}")
    cluster_sizes, support = t.sum(1), t.sum(0)  # (clusters,), (classes,): each table pass once
    n = support.sum()
    keys = ["acc", "balanced_acc", "macro_f1", "nmi", "ari", "ami"]
    if class_counts is not None:
        if len(class_counts) != t.shape[1]:
            raise ValueError(f"class_counts has {len(class_counts)} entries, the table "
                             f"has {t.shape[1]} classes")
        keys += ["head_acc", "medium_acc", "tail_acc"]
    if n == 0:
        return {k: float("nan") for k in keys}
    rows, cols = match_clusters_to_classes(t)
    recall = np.zeros(t.shape[1])
    recall[cols] = t[rows, cols] / np.maximum(support[cols], 1)
    present = support > 0
    out = {
        "acc": float(t[rows, cols].sum() / n),
        "balanced_acc": float(recall[present].mean()),
        "macro_f1": _matched_macro_f1(t, rows, cols, support, cluster_sizes),
        **_information_scores(t, cluster_sizes, support),
    }
    if class_counts is not None:
        for name, group in zip(("head_acc", "medium_acc", "tail_acc"),
                               head_medium_tail_groups(class_counts, shot_thresholds),
                               strict=True):
            group = [c for c in group if present[c]]
            out[name] = float(recall[group].mean()) if group else float("nan")
    return out


def _matched_macro_f1(t: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                      support: np.ndarray | None = None, cluster_sizes: np.ndarray | None = None) -> float:
    """Unweighted mean F1 over the classes present, cluster ``rows[j]`` predicting class ``cols[j]``.

    ``F1_c = 2 TP_c / (predicted_c + support_c)``: a class with no matched cluster has
    ``TP = predicted = 0`` and so F1 0; points of unmatched clusters are predictions of
    no class, which lowers only the recall of their true classes.
    """
    support = t.sum(0) if support is None else support  # (classes,)
    cluster_sizes = t.sum(1) if cluster_sizes is None else cluster_sizes  # (clusters,)
    true_pos, predicted = np.zeros(t.shape[1]), np.zeros(t.shape[1])
    true_pos[cols] = t[rows, cols]
    predicted[cols] = cluster_sizes[rows]
    present = support > 0
    f1 = 2 * true_pos[present] / (predicted[present] + support[present])
    return float(f1.mean())


def _information_scores(t: np.ndarray, a_all: np.ndarray | None = None,
                        b_all: np.ndarray | None = None) -> dict[str, float]:
    """NMI, ARI and AMI exactly as scikit-learn computes them from labels.

    scikit-learn only sees labels that occur: empty rows and columns have no nonzero cell,
    so the sums below run over the nonzero cells (found once) and the nonzero sizes.
    """
    a_all = t.sum(1) if a_all is None else a_all  # cluster sizes
    b_all = t.sum(0) if b_all is None else b_all  # class sizes
    a, b = a_all[a_all > 0], b_all[b_all > 0]
    rows, cols = np.nonzero(t)
    nz = t[rows, cols]
    n = a.sum()
    # ARI from the pair confusion matrix, in exact integers
    nz_int = nz.astype(np.int64)
    sum_sq = int((nz_int * nz_int).sum())
    n_i = int(n)
    tp = sum_sq - n_i
    fp = int((a.astype(np.int64) ** 2).sum()) - sum_sq
    fn = int((b.astype(np.int64) ** 2).sum()) - sum_sq
    tn = n_i * n_i - fp - fn - sum_sq
    ari = 1.0 if fn == 0 and fp == 0 else (
        2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))
    if len(a) == 1 and len(b) == 1:  # both labellings constant: a perfect match
        return {"nmi": 1.0, "ari": ari, "ami": 1.0}
    if len(a) == 1 or len(b) == 1:  # one of them constant: no information
        return {"nmi": 0.0, "ari": ari, "ami": 0.0}
    mi = _mutual_information(nz, a_all[rows], b_all[cols], n)
    h_clusters, h_classes = _entropy(a), _entropy(b)
    normalizer = (h_classes + h_clusters) / 2
    nmi = 0.0 if mi == 0 else mi / normalizer
    emi = _expected_mutual_information(a, b, int(n))
    denominator = normalizer - emi
    denominator = min(denominator, -_EPS) if denominator < 0 else max(denominator, _EPS)
    numerator = mi - emi
    numerator = min(numerator, -_EPS) if numerator < 0 else max(numerator, _EPS)
    return {"nmi": float(nmi), "ari": float(ari), "ami": float(numerator / denominator)}


def _mutual_information(nz: np.ndarray, a_nz: np.ndarray, b_nz: np.ndarray, n: float) -> float:
    """MI of the nonzero cells ``nz`` (row-major order) with their row and column sizes."""
    p = nz / n
    outer = a_nz.astype(np.int64) * b_nz.astype(np.int64)
    log_outer = -np.log(outer.astype(np.float64)) + math.log(n) + math.log(n)  # sum a = sum b = n
    mi = p * (np.log(nz) - math.log(n)) + p * log_outer
    mi = np.where(np.abs(mi) < _EPS, 0.0, mi)
    return float(np.clip(mi.sum(), 0.0, None))


def _entropy(sizes: np.ndarray) -> float:
    sizes = sizes[sizes > 0]
    if sizes.size == 1:
        return 0.0
    total = sizes.sum()
    return float(-np.sum((sizes / total) * (np.log(sizes) - math.log(total))))


def _bennett_deviation(var: np.ndarray, bound: float, iterations: int = 3) -> np.ndarray:
    """A deviation ``t`` with ``var * h(t / var) >= bound``, ``h(u) = (1 + u) log(1 + u) - u``.

    By Bennett's inequality (valid for the hypergeometric law through Hoeffding's 1963
    comparison with sampling with replacement), a count of variance at most ``var`` lies
    more than ``t`` from its mean with probability at most ``exp(-bound)`` on each side.
    Newton's method started from Bernstein's (larger) deviation stays above the exact root
    of the convex ``h``, so every iterate is a valid, ever tighter ``t``.
    """
    safe = np.where(var > 0, var, 1.0)
    v = bound / safe
    u = v / 3 + np.sqrt(v * v / 9 + 2 * v)  # Bernstein: h(u) >= u^2 / (2 (1 + u / 3)) = v here
    for _ in range(iterations):
        u -= ((1 + u) * np.log1p(u) - u - v) / np.log1p(u)
    return np.where(var > 0, var * u, 0.0)


def _expected_mutual_information(a: np.ndarray, b: np.ndarray, n: int,
                                 block: int = 1 << 16) -> float:
    """E[MI] under the hypergeometric model of Vinh, Epps & Bailey (JMLR 2010).

    The sum scikit-learn's Cython loop takes over every cluster/class pair and every
    cell value ``n_ij``, vectorised:

    - pairs with equal sizes are summed once, with their multiplicity;
    - for each pair the ``n_ij`` range is cut where Bennett's bound leaves less than
      ``exp(-E)`` of the hypergeometric mass beyond each end, ``E = 40 + log(2 log(n)
      min(R, C))``: all that is left out totals below ``exp(-40)`` (``4e-18``);
    - the probabilities come from the ratio of neighbouring terms,
      ``p(k + 1) / p(k) = (a - k)(b - k) / ((k + 1)(n - a - b + k + 1))``, summed in logs
      along the range and normalised to one, and ``log(n k / (a b))`` is
      ``log1p((n k - a b) / (a b))`` with the difference exact: no two numbers of the size
      of ``log n!`` are subtracted (scikit-learn does). Against 30- and 40-digit sums it
      is exact to 1e-15 to 3e-13 (relative), where scikit-learn drifts by up to 2e-9 at
      400,000 labels and 0.1's version by 1e-9;
    - the pairs are laid out as columns over their ranges, pairs of similar range length
      together, in cache-sized blocks.
    """
    a_vals, a_mult = np.unique(a.astype(np.int64), return_counts=True)
    b_vals, b_mult = np.unique(b.astype(np.int64), return_counts=True)
    ai, bj = np.repeat(a_vals, len(b_vals)), np.tile(b_vals, len(a_vals))
    mult = np.outer(a_mult, b_mult).ravel().astype(np.float64)
    small, large = np.minimum(ai, bj), np.maximum(ai, bj)
    ab = (ai * bj).astype(np.float64)
    mean = ab / n
    var = small * (large / n) * (1 - large / n)  # binomial variance >= the hypergeometric one
    t = _bennett_deviation(var, 40.0 + math.log(2 * math.log(n) * min(len(a), len(b))))
    lo = np.maximum(np.maximum(0, ai + bj - n), np.floor(mean - t).astype(np.int64) - 1)
    hi = np.minimum(small, np.ceil(mean + t).astype(np.int64) + 1)
    lengths = hi - lo + 1
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    lo_f, a_f, b_f = lo.astype(np.float64), ai.astype(np.float64), bj.astype(np.float64)
    rest = (n + 1 - ai - bj).astype(np.float64)  # n - a - b + k + 1 at k = 0
    emi = 0.0
    start = 0
    with np.errstate(divide="ignore"):
        while start < len(order):  # pairs of range lengths within 1.25x, ~`block` cells at a time
            end = int(np.searchsorted(sorted_lengths, max(int(sorted_lengths[start] * 1.25),
                                                          int(sorted_lengths[start]) + 2), side="right"))
            span = int(sorted_lengths[end - 1])
            stop = min(end, start + max(1, block // span))
            cols = order[start:stop]
            start = stop
            k = np.arange(span, dtype=np.float64)[:, None] + lo_f[cols]  # (span, pairs); padded past hi
            km = k[:-1]
            ratio = a_f[cols] - km  # p(k + 1) / p(k); 0 past the support, whose cells then weigh 0
            ratio *= b_f[cols] - km
            np.maximum(ratio, 0.0, out=ratio)
            down = km + 1.0
            down *= rest[cols] + km
            ratio /= down
            np.log(ratio, out=ratio)
            log_w = np.empty_like(k)
            log_w[0] = 0.0
            if span <= 100:  # row by row beats numpy's strided cumsum on short ranges
                for j in range(1, span):
                    np.add(log_w[j - 1], ratio[j - 1], out=log_w[j])
            else:
                np.cumsum(ratio, axis=0, out=log_w[1:])
            peak = log_w.max(0)
            if peak.max() > 500:  # exp would overflow: scale each pair by its largest term
                log_w -= peak
            w = np.exp(log_w, out=log_w)
            ab_c = ab[cols]
            term = n * k  # k log(n k / (a b)), n k - a b exact below 2^53
            term -= ab_c
            term /= ab_c
            term[0, lo[cols] == 0] = 0.0  # k = 0 adds nothing (log1p(-1) would make 0 * -inf)
            np.log1p(term, out=term)
            term *= k
            emi += float(mult[cols] @ (np.einsum("ij,ij->j", w, term) / w.sum(0)))
    return emi / n


def _ids_to_numpy(x, name: str) -> np.ndarray:
    return _as_ids(x, name).cpu().numpy()


def _label_table(y_true, y_pred) -> np.ndarray | None:
    """The (clusters, classes) count table of arbitrary integer labels; None when empty."""
    y_true, y_pred = _ids_to_numpy(y_true, "y_true"), _ids_to_numpy(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got "
                         f"{y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        return None
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    t, p = t.ravel(), p.ravel()
    table = np.zeros((p.max() + 1, t.max() + 1))
    np.add.at(table, (p, t), 1)
    return table


def cluster_accuracy(y_true, y_pred) -> float:
    """Clustering accuracy under the best one-to-one map of clusters to classes.

    The Hungarian algorithm (Kuhn 1955; :func:`match_clusters_to_classes`) on
    the contingency table, as in DEC (Xie et al. 2016). Labels may be any integers;
    the number of clusters may differ from the number of classes, and points in
    clusters left unmatched count as errors.

    Args:
        y_true: Class labels, shape ``(n,)`` (tensor, array or list).
        y_pred: Cluster ids, shape ``(n,)``.

    Returns:
        The fraction of points whose cluster maps to their class.

    Examples:
        >>> cluster_accuracy([0, 0, 1, 1, 2], [1, 1, 0, 0, 0])
        0.8
    """
    table = _label_table(y_true, y_pred)
    if table is None:
        return float("nan")
    rows, cols = match_clusters_to_classes(table)
    return float(table[rows, cols].sum() / table.sum())


def macro_f1(y_true, y_pred) -> float:
    """Macro F1 of the clusters under the best one-to-one map of clusters to classes.

    P²OT's protocol (METHOD.md 4): the Hungarian map of :func:`cluster_accuracy`, then
    for each class the F1 of "predicted as the cluster matched to this class", averaged
    over the classes with equal weight: scikit-learn's ``f1_score(y_true, mapped_pred,
    labels=classes, average="macro")``. A class left without a cluster (more classes
    than clusters) scores 0; points in unmatched clusters (more clusters than classes)
    are wrong predictions. Labels may be any integers.

    Args:
        y_true: Class labels, shape ``(n,)`` (tensor, array or list).
        y_pred: Cluster ids, shape ``(n,)``.

    Returns:
        The macro F1 in ``[0, 1]`` (NaN for no points).

    Examples:
        >>> macro_f1([0, 0, 1, 1], [1, 1, 0, 0])
        1.0
        >>> round(macro_f1([0, 0, 1, 1, 2], [1, 1, 0, 0, 0]), 4)  # class 2 gets no cluster
        0.6
    """
    table = _label_table(y_true, y_pred)
    if table is None:
        return float("nan")
    rows, cols = match_clusters_to_classes(table)
    return _matched_macro_f1(table, rows, cols)


def clustering_scores(
    y_true,
    y_pred,
    class_counts: Sequence[int] | None = None,
    num_classes: int | None = None,
    num_clusters: int | None = None,
    shot_thresholds: tuple[int, int] | None = None,
) -> dict[str, float]:
    """One-shot form of :class:`ClusteringMetrics`: the same keys from label arrays.

    Args:
        y_true: Class labels in ``[0, num_classes)``.
        y_pred: Cluster ids in ``[0, num_clusters)``.
        class_counts: Training images per class; adds ``head_acc``, ``medium_acc``,
            ``tail_acc`` (see :func:`head_medium_tail_groups`).
        num_classes: Defaults to ``len(class_counts)`` or ``max(y_true) + 1``.
        num_clusters: Defaults to ``max(y_pred) + 1``.
        shot_thresholds: Optional ``(many, few)`` groups instead of 30/40/30 %.

    Returns:
        ``{"acc", "balanced_acc", "macro_f1", "nmi", "ari", "ami"[, "head_acc",
        "medium_acc", "tail_acc"]}`` as floats.

    Examples:
        >>> s = clustering_scores([0, 0, 1, 1], [1, 1, 0, 0])
        >>> s["acc"], s["macro_f1"], s["nmi"], s["ari"]
        (1.0, 1.0, 1.0, 1.0)
    """
    y_true, y_pred = _as_ids(y_true, "y_true"), _as_ids(y_pred, "y_pred")
    if num_classes is None:
        num_classes = len(class_counts) if class_counts is not None else (
            int(y_true.max()) + 1 if y_true.numel() else 1)
    if num_clusters is None:
        num_clusters = int(y_pred.max()) + 1 if y_pred.numel() else 1
    table = contingency_table(y_pred, y_true, num_clusters, num_classes)
    return scores_from_table(table, class_counts, shot_thresholds)


class ClusteringMetrics(Metric):
    """ACC, balanced ACC, macro F1, NMI, ARI, AMI (and head/medium/tail ACC) as one torchmetrics Metric.

    The only state is the ``(num_clusters, num_classes)`` float64 contingency table,
    sum-reduced across processes, so the DDP sync is O(clusters x classes) and the
    scores are exact at any N (torchmetrics' own ARI overflows its pair counts from
    about 1e5 labels, its NMI gathers every prediction, and its ClusterAccuracy needs
    as many clusters as classes). ``compute()`` calls :func:`scores_from_table`.

    Args:
        num_classes: Number of ground-truth classes.
        num_clusters: Number of clusters (may differ from ``num_classes``).
        class_counts: Training images per class (``num_classes`` entries); adds
            ``head_acc``, ``medium_acc``, ``tail_acc`` to ``compute()``.
        shot_thresholds: Optional ``(many, few)`` group thresholds (ImageNet-LT).
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Examples:
        >>> m = ClusteringMetrics(num_classes=2, num_clusters=3)
        >>> m.update(torch.tensor([2, 2, 0, 0]), torch.tensor([0, 0, 1, 1]))
        >>> m.compute()["acc"]
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        num_clusters: int,
        class_counts: Sequence[int] | None = None,
        shot_thresholds: tuple[int, int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("num_classes", num_classes), ("num_clusters", num_clusters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if class_counts is not None and len(class_counts) != num_classes:
            raise ValueError(f"class_counts must have num_classes={num_classes} entries, "
                             f"got {len(class_counts)}")
        self.num_classes = num_classes
        self.num_clusters = num_clusters
        self.class_counts = None if class_counts is None else [int(c) for c in class_counts]
        self.shot_thresholds = shot_thresholds
        self.add_state("table", torch.zeros(num_clusters, num_classes, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Count a batch: ``preds`` cluster ids, ``target`` class labels (same shape)."""
        self.table += _pair_counts(preds.to(self.table.device), target.to(self.table.device),
                                   self.num_clusters, self.num_classes)

    def compute(self) -> dict[str, float]:
        """The scores of every batch seen (all processes after a sync)."""
        return scores_from_table(self.table, self.class_counts, self.shot_thresholds)
