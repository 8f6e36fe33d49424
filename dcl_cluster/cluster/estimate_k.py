"""Estimating the number of clusters of a feature set when the clusters are long-tailed,
and saying so when the features hold no answer.

Two estimates err low in opposite ways and the larger one is returned (METHOD.md 4b):
the silhouette over K absorbs small clusters that sit next to big ones, and a separation
test on an over-clustering merges clusters that touch without a gap. When the mean
silhouette stays below 0.25 at every K ("no substantial structure", Kaufman & Rousseeuw,
1990, ch. 2) the estimate is a guess: it warns, and :class:`KEstimate` says so.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dcl_cluster.cluster.kmeans import KMeans

__all__ = ["KEstimate", "NoClusterStructureError", "NoClusterStructureWarning", "estimate_num_clusters",
           "score_num_clusters"]

_METRICS = ("euclidean", "cosine")
STRUCTURE_SILHOUETTE = 0.25  # below at every K: "no substantial structure" (Kaufman & Rousseeuw)
_SAMPLE_ROWS = 8000  # rows both estimates read at most
_MAX_DIMS = 128  # principal components kept: k-means' cost grows with the dimension


class NoClusterStructureWarning(UserWarning):
    """The features show no clear cluster structure: an estimated ``K`` is a guess."""


class NoClusterStructureError(ValueError):
    """``num_clusters="auto"`` (the module, ``recluster``) found no clear cluster structure in
    the features, so it stops instead of going on with a guessed ``K``."""


@dataclass(frozen=True)
class KEstimate:
    """What :func:`score_num_clusters` found: the estimate, each criterion's answer, the
    mean silhouette per candidate ``K`` and whether the features show clear structure.

    Attributes:
        k: The estimate, the larger of ``by_silhouette`` and ``by_separation``.
        by_silhouette: ``K`` of the highest mean silhouette.
        by_separation: Groups left by the separation test.
        candidates: The ``K`` values scored by the silhouette, ``2..k_max``.
        silhouette: Mean silhouette of k-means at each candidate.
        structured: ``False`` when the silhouette stays below 0.25 at every candidate.
        seconds: Wall time of the estimate.
    """

    k: int
    by_silhouette: int
    by_separation: int
    candidates: list[int] = field(default_factory=list)
    silhouette: list[float] = field(default_factory=list)
    structured: bool = True
    seconds: float = 0.0

    @property
    def best_silhouette(self) -> float:
        return max(self.silhouette) if self.silhouette else float("nan")

    def scores_text(self, shown: int = 12) -> str:
        """``K=2 0.061, K=3 0.058, ...`` (the first ``shown`` candidates)."""
        pairs = [f"K={k} {s:.3f}" for k, s in zip(self.candidates, self.silhouette, strict=True)]
        return ", ".join(pairs[:shown]) + (", ..." if len(pairs) > shown else "")

    def explain(self) -> str:
        """One paragraph: the estimate and why, or that the features cannot tell."""
        if self.structured:
            return (f"estimated K={self.k}: the larger of the silhouette's K={self.by_silhouette} (mean "
                    f"silhouette {self.best_silhouette:.3f}) and the separation test's K={self.by_separation}")
        return (f"the features show no clear cluster structure: the mean silhouette of k-means stays below "
                f"{STRUCTURE_SILHOUETTE} at every K (best {self.best_silhouette:.3f}; at or below 0.25 means no "
                f"substantial structure), so an estimate of K would be a guess (the criteria say "
                f"{self.by_silhouette} by silhouette and {self.by_separation} by separation). Mean silhouette "
                f"per K: {self.scores_text()}")

    def as_dict(self) -> dict:
        """The choice as ``report.html`` reads it (``chosen``, ``how``, ``k``, ``score``,
        ``score_name``) plus every field."""
        return {"chosen": self.k, "how": self.explain(), "k": list(self.candidates),
                "score": [float(s) for s in self.silhouette], "score_name": "mean silhouette",
                "by_silhouette": self.by_silhouette, "by_separation": self.by_separation,
                "structured": self.structured, "seconds": round(self.seconds, 3)}


def estimate_num_clusters(
    x: torch.Tensor | np.ndarray,
    k_max: int,
    seed: int = 0,
    *,
    metric: str = "euclidean",
) -> int:
    """The number of clusters of the features ``x`` ``(N, d)``, between 2 and ``k_max``.

    The larger of two estimates, each of which errs low in its own way on long-tailed data:

    1. ``silhouette_num_clusters``: k-means for every ``K`` in ``2..k_max`` on a sample,
       the ``K`` of the highest mean silhouette (Rousseeuw, 1987). A small cluster next
       to a big one lowers the silhouette of every point of the big one, so absorbing
       it raises the score: this estimate loses tail clusters.
    2. ``separated_num_clusters``: over-cluster with k-means, then repeatedly merge the
       two neighbouring groups whose separation along the line joining their centroids
       is smallest, ``|mu_a - mu_b| / sqrt((var_a + var_b) / 2)`` (each group weighs the
       same, whatever its size; the line from one half of the sample, the means and
       variances along it from the other), until every pair left is separated by at
       least 5 (the halves of one Gaussian give 2.65). Size-free, it keeps a tail cluster
       of 5% of its neighbour's size, but it merges clusters that touch without a gap.

    Both read at most 8,000 rows, projected on their first 128 principal components when
    ``d`` is larger: 2.5 s at ``N=16,000, d=512, k_max=50`` on one CPU thread (12 s before the
    projection, with the same answers on every benchmark case). When the mean silhouette
    stays below 0.25 at every ``K`` the features show no clear cluster structure and the
    answer is a guess: a :class:`NoClusterStructureWarning` (a ``UserWarning``) says so and
    gives the scores.
    :func:`score_num_clusters` returns the scores and that verdict instead of warning.

    Measured on 39 long-tailed cases, seeds 0-2 (``benchmarks/results/estimate_k.json``:
    Gaussian blobs and cosine clusters falling from 1000 to 50 points, digits at imbalance
    factor 1 and 10), the larger of the two found the true ``K`` in 21 (mean error 0.72),
    the silhouette alone in 7 (1.74), the separation alone in 19 (2.74) and the
    Calinski-Harabasz index in 3 (5.38). On frozen ImageNet features of real CIFAR-10
    mixes no criterion measured finds the number of classes (docs/benchmarks.md, "How
    many clusters?"): their silhouette is about 0.06 at every ``K``, and this function
    warns there.

    Args:
        x: Features ``(N, d)``, a torch tensor or a NumPy array, finite, ``N >= 3``.
        k_max: Largest number of clusters considered, ``2 <= k_max <= N``.
        seed: Seed of the samples and of the k-means seedings; the same seed gives the
            same answer.
        metric: ``"euclidean"``, or ``"cosine"`` to L2-normalise the rows first (for
            contrastive embeddings).

    Returns:
        The estimated number of clusters, an ``int`` in ``[2, k_max]``.

    Raises:
        ValueError: ``x`` not 2-D, with fewer than 3 rows or non-finite values;
            ``k_max`` not an integer in ``[2, N]``; an unknown ``metric``.
        TypeError: ``x`` neither a tensor nor an array.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
        >>> sizes = [400, 100, 20]  # a head, a medium and a tail cluster
        >>> x = torch.cat([c + torch.randn(n, 2, generator=g) for c, n in zip(centres, sizes)])
        >>> estimate_num_clusters(x, k_max=8)
        3
    """
    estimate = score_num_clusters(x, k_max, seed, metric=metric)
    if not estimate.structured:
        warnings.warn(f"estimate_num_clusters returns K={estimate.k}, but {estimate.explain()}",
                      NoClusterStructureWarning, stacklevel=2)
    return estimate.k


def score_num_clusters(
    x: torch.Tensor | np.ndarray,
    k_max: int,
    seed: int = 0,
    *,
    metric: str = "euclidean",
) -> KEstimate:
    """:func:`estimate_num_clusters` with its evidence: each criterion's answer, the mean
    silhouette per ``K`` and whether the features show clear structure (no warning)."""
    start = time.perf_counter()
    x = _check_inputs(x, k_max, metric)
    k_max = int(k_max)
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(x.shape[0]))
    x = _principal_components(x[order][:_SAMPLE_ROWS])  # the first rows are the samples of both
    candidates, scores = silhouette_curve(x, k_max, seed)
    by_silhouette = candidates[int(np.argmax(scores))]
    by_separation = separated_num_clusters(x, k_max, seed)
    return KEstimate(k=max(by_silhouette, by_separation), by_silhouette=by_silhouette,
                     by_separation=by_separation, candidates=candidates, silhouette=scores,
                     structured=max(scores) >= STRUCTURE_SILHOUETTE, seconds=time.perf_counter() - start)


def _principal_components(x: torch.Tensor, dims: int = _MAX_DIMS) -> torch.Tensor:
    """``x`` centred and projected on its first ``dims`` principal components (exact, from
    the covariance) when it has more columns; distances shrink only by the variance dropped."""
    x = x - x.mean(0)
    if x.shape[1] <= dims:
        return x
    _, vectors = torch.linalg.eigh(x.double().T @ x.double())  # ascending eigenvalues
    return (x.double() @ vectors[:, -dims:].flip(1)).to(x.dtype)


def silhouette_num_clusters(x: torch.Tensor, k_max: int, seed: int = 0, fit_rows: int = 4000,
                            score_rows: int = 2000) -> int:
    """``K`` in ``2..k_max`` of the highest mean silhouette of k-means on the first rows of
    ``x`` (fit on ``fit_rows``, scored on the first ``score_rows`` of those)."""
    candidates, scores = silhouette_curve(x, k_max, seed, fit_rows, score_rows)
    return candidates[int(np.argmax(scores))]


def silhouette_curve(x: torch.Tensor, k_max: int, seed: int = 0, fit_rows: int = 4000,
                     score_rows: int = 2000) -> tuple[list[int], list[float]]:
    """The candidates ``2..k_max`` and the mean silhouette of k-means at each, fitted on the
    first ``fit_rows`` rows of ``x`` and scored on the first ``score_rows`` of those."""
    fit = x[:fit_rows]
    score = fit[:score_rows]
    dist = torch.cdist(score.double(), score.double())  # (s, s)
    candidates = list(range(2, min(k_max, score.shape[0] - 1) + 1))
    scores = [silhouette_score(dist, KMeans(k, n_init=2, seed=seed).fit(fit).labels_[: score.shape[0]])
              for k in candidates]
    return candidates, scores


def silhouette_score(dist: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean silhouette from a square distance matrix ``(n, n)`` and labels ``(n,)``;
    points alone in their cluster score 0 (as scikit-learn)."""
    _, labels = torch.unique(labels, return_inverse=True)
    onehot = F.one_hot(labels).to(dist.dtype)  # (n, K)
    sizes = onehot.sum(0)  # (K,)
    if sizes.numel() < 2:
        return 0.0
    sums = dist @ onehot  # (n, K) summed distance to each cluster
    own = sizes[labels]
    a = sums.gather(1, labels[:, None])[:, 0] / (own - 1).clamp_min(1)
    b = (sums / sizes).scatter(1, labels[:, None], float("inf")).min(1).values
    s = (b - a) / torch.maximum(a, b).clamp_min(1e-300)
    return float(torch.where(own > 1, s, torch.zeros_like(s)).mean())


def separated_num_clusters(x: torch.Tensor, k_max: int, seed: int = 0, fit_rows: int = 8000,
                           threshold: float = 5.0) -> int:
    """Groups left when over-clustered pieces of the first ``fit_rows`` rows of ``x`` are
    merged until all neighbouring groups are ``threshold`` apart (see
    ``estimate_num_clusters``), clipped to ``[2, k_max]``.

    The rows are halved: k-means and the direction joining two groups come from the first
    half, the gap and the spreads along it from the second. Measured on the rows that chose
    the direction, any split of a cluster with fewer points than dimensions looks separated.
    """
    x = x[:fit_rows]
    half = (x.shape[0] + 1) // 2
    fit, held = x[:half], x[half:]  # (h, d), (m - h, d)
    n_pieces = min(half, max(k_max, min(2 * k_max, half // 3)))
    km = KMeans(n_pieces, n_init=1, seed=seed).fit(fit)
    fit_pieces, centres = km.labels_, km.cluster_centers_
    nearest_two = torch.cdist(held, centres).topk(min(2, n_pieces), largest=False).indices  # (m - h, 2)
    held_pieces = nearest_two[:, 0]
    group = torch.arange(n_pieces)  # group of each piece
    min_rows = max(5, held.shape[0] // 1000)  # smaller groups are outliers, merged first

    def separation(a: int, b: int) -> float:
        fit_group, held_group = group[fit_pieces], group[held_pieces]
        ha, hb = held[held_group == a], held[held_group == b]
        if min(len(ha), len(hb)) < min_rows:
            return 0.0
        u = fit[fit_group == b].mean(0) - fit[fit_group == a].mean(0)  # (d,)
        u = u / u.norm().clamp_min(1e-12)
        pa, pb = ha @ u, hb @ u
        spread = (pa.var(unbiased=False) + pb.var(unbiased=False)) / 2
        return float((pb.mean() - pa.mean()) / spread.sqrt().clamp_min(1e-12))

    present = set(torch.unique(fit_pieces).tolist())
    pairs = {tuple(p) for p in nearest_two.sort(1).values.tolist()
             if len(p) == 2 and p[0] != p[1] and p[0] in present and p[1] in present}  # neighbours
    scores = {p: separation(*p) for p in pairs}
    n_groups = len(present)
    while scores and n_groups > 2:
        (a, b), value = min(scores.items(), key=lambda kv: (kv[1], kv[0]))
        if value >= threshold and n_groups <= k_max:
            break
        group[group == b] = a
        n_groups -= 1
        renamed = {tuple(sorted(a if g == b else g for g in p)) for p in scores if p != (a, b)}
        scores = {p: (separation(*p) if a in p else scores[p])
                  for p in renamed if p[0] != p[1]}
    return max(2, min(k_max, n_groups))


def _check_inputs(x, k_max, metric) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_samples, n_features), got shape {tuple(x.shape)}")
    if x.shape[0] < 3:
        raise ValueError(f"x must have at least 3 samples, got {x.shape[0]}")
    x = x.detach().cpu()
    x = x.double() if x.dtype == torch.float64 else x.float()
    if not torch.isfinite(x).all():
        rows = int((~torch.isfinite(x)).any(1).sum())
        raise ValueError(f"x must be finite, got NaN or inf in {rows} rows")
    if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) \
            or not 2 <= k_max <= x.shape[0]:
        raise ValueError(f"k_max must be an integer in [2, N={x.shape[0]}], got {k_max!r}")
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    return x.contiguous()
