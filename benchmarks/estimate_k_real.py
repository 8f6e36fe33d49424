"""How many clusters, on real features: the number of classes of 12 long-tailed mixes of real
CIFAR-10 images (5 or 10 classes x balanced / IF 10 / IF 100 x 2 subsamples) as the package's
``score_num_clusters`` estimates it, next to four alternatives, each timed on the same rows.

Features: frozen ImageNet EfficientNet-Lite0 at 128 px (the packaged weights), the frozen
lab's cache (``python -m benchmarks.frozen_lab features`` builds it): clean training rows of
CIFAR-10-LT IF 10 and the balanced test rows, pooled per class. Mix sizes: balanced 1,000
per class (5 classes) or 500 (10); IF 10 from 1,500 (5) or 1,000 (10); IF 100 from 3,000,
the larger classes taking the larger counts. Alternatives, each over ``K = 1..k_max``:

* the silhouette alone (the package's first criterion);
* a diagonal Gaussian mixture's BIC on 32 whitened principal components (scikit-learn);
* the same mixture's held-out log-likelihood (fit on one half, scored on the other);
* Louvain modularity communities of the 15-nearest-neighbour cosine graph (networkx).

    python -m benchmarks.estimate_k_real            # about 10 minutes on 2 cores
    python -m benchmarks.estimate_k_real --smoke    # two mixes, nothing written

Writes ``benchmarks/results/estimate_k_real.json``; ``write_docs`` makes the table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "estimate_k_real.json"
K_MAX = 20
ESTIMATORS = ("package", "silhouette", "gmm_bic", "gmm_heldout", "louvain")
LABELS = {"package": "package (`score_num_clusters`)", "silhouette": "silhouette alone",
          "gmm_bic": "diagonal GMM, BIC", "gmm_heldout": "diagonal GMM, held-out likelihood",
          "louvain": "Louvain on a 15-NN graph"}


def feature_pool(data_dir: str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Every cached clean feature row of the lab (IF 10 training rows and the test rows) and its class."""
    from benchmarks import frozen_lab
    from dcl_cluster.data.feature_cache import weights_fingerprint

    data = frozen_lab.LabData(10.0, weights_fingerprint(frozen_lab.encoder()), data_dir)
    return torch.cat([data.train, data.test]), np.concatenate([data.y_train, data.y_test])


def mix_sizes(classes: int, profile: str) -> list[int]:
    from dcl_cluster.data.long_tail import long_tail_counts

    if profile == "balanced":
        return [5000 // classes] * classes
    head, factor = {"if10": (1500 if classes == 5 else 1000, 10), "if100": (3000, 100)}[profile]
    return [int(n) for n in long_tail_counts(head, classes, factor)]


def mixes(smoke: bool = False) -> list[tuple[int, str, int]]:
    grid = [(c, p, s) for c in (5, 10) for p in ("balanced", "if10", "if100") for s in (0, 1)]
    return [grid[0], grid[-1]] if smoke else grid


def draw_mix(x: torch.Tensor, y: np.ndarray, classes: int, profile: str, subsample: int):
    """The rows of one mix: ``classes`` classes (all ten, or five drawn by the subsample's seed),
    the larger counts to the classes with more rows, rows drawn without replacement."""
    rng = np.random.default_rng(1000 * subsample + 7 * classes + len(profile))
    pool = np.bincount(y)
    chosen = np.arange(10) if classes == 10 else rng.choice(10, size=classes, replace=False)
    chosen = chosen[np.argsort(-pool[chosen], kind="stable")]
    rows = np.concatenate([rng.choice(np.flatnonzero(y == c), size=min(n, int(pool[c])), replace=False)
                           for c, n in zip(chosen, mix_sizes(classes, profile), strict=True)])
    return x[rows], y[rows]


def _pca(x: np.ndarray, dims: int = 32) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(dims, whiten=True, random_state=0).fit_transform(x)


def gmm_curves(x: np.ndarray, k_max: int, seed: int = 0) -> tuple[int, int]:
    """``K`` of the lowest BIC and of the highest held-out log-likelihood of a diagonal GMM on 32
    whitened principal components (L2-normalised rows), ``K`` in ``1..k_max``."""
    from sklearn.mixture import GaussianMixture

    z = _pca(x / np.linalg.norm(x, axis=1, keepdims=True))
    order = np.random.default_rng(seed).permutation(len(z))
    fit, held = z[order[::2]], z[order[1::2]]
    bic, heldout = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(1, k_max + 1):
            bic.append(GaussianMixture(k, covariance_type="diag", random_state=seed).fit(z).bic(z))
            heldout.append(GaussianMixture(k, covariance_type="diag", random_state=seed).fit(fit).score(held))
    return int(np.argmin(bic)) + 1, int(np.argmax(heldout)) + 1


def louvain_k(x: torch.Tensor, neighbours: int = 15, seed: int = 0) -> int:
    """Communities of the symmetric ``neighbours``-NN cosine graph by Louvain modularity (resolution 1)."""
    import networkx as nx

    z = torch.nn.functional.normalize(x - x.mean(0), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-2.0)
    nearest = sim.topk(neighbours, dim=1).indices.tolist()
    graph = nx.Graph()
    graph.add_edges_from((i, j) for i, row in enumerate(nearest) for j in row)
    return len(nx.community.louvain_communities(graph, resolution=1.0, seed=seed))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, round(time.perf_counter() - start, 2)


def run(smoke: bool = False, data_dir: str | None = None, threads: int = 2) -> list[dict]:
    from dcl_cluster.cluster import score_num_clusters

    torch.set_num_threads(threads)
    x, y = feature_pool(data_dir)
    rows = []
    for classes, profile, subsample in mixes(smoke):
        features, labels = draw_mix(x, y, classes, profile, subsample)
        estimate, seconds = timed(score_num_clusters, features, K_MAX, seed=subsample, metric="cosine")
        (bic, heldout), gmm_seconds = timed(gmm_curves, features.numpy().astype(np.float64), K_MAX)
        louvain, louvain_seconds = timed(louvain_k, features)
        row = {"classes": classes, "profile": profile, "subsample": subsample, "n": len(labels),
               "sizes": np.bincount(labels)[np.unique(labels)].tolist(), "k_max": K_MAX,
               "k": {"package": estimate.k, "silhouette": estimate.by_silhouette, "gmm_bic": bic,
                     "gmm_heldout": heldout, "louvain": louvain},
               "seconds": {"package": seconds, "silhouette": seconds, "gmm_bic": gmm_seconds,
                           "gmm_heldout": gmm_seconds, "louvain": louvain_seconds},
               "structured": estimate.structured, "best_silhouette": round(estimate.best_silhouette, 4),
               "by_separation": estimate.by_separation, "threads": threads}
        rows.append(row)
        print(f"{classes} classes {profile} #{subsample}: {row['k']} structured={estimate.structured} "
              f"best silhouette {estimate.best_silhouette:.3f} ({seconds:.1f} s)", flush=True)
    return rows


def within(k: int, truth: int) -> bool:
    """The issue's bar: within 20% of the truth, or 1 for small K."""
    return abs(k - truth) <= max(1, 0.2 * truth)


def table(rows: list[dict]) -> list[str]:
    """The markdown table: each mix's true K and each estimator's, a tick within the bar, the
    hits and the mean seconds per call."""
    head = "| mix | rows | best silhouette | " + " | ".join(LABELS[e] for e in ESTIMATORS) + " |"
    lines = [head, "|" + "---|" * (3 + len(ESTIMATORS))]
    for r in rows:
        profile = {"balanced": "balanced", "if10": "IF 10", "if100": "IF 100"}[r["profile"]]
        cells = [f"{r['k'][e]}{' ✓' if within(r['k'][e], r['classes']) else ''}" for e in ESTIMATORS]
        lines.append(f"| {r['classes']} classes, {profile}, #{r['subsample'] + 1} | {r['n']:,} | "
                     f"{r['best_silhouette']:.3f} | " + " | ".join(cells) + " |")
    hits = [f"**{sum(within(r['k'][e], r['classes']) for r in rows)}/{len(rows)}**" for e in ESTIMATORS]
    lines.append("| within ±20% (±1 at 5) | | | " + " | ".join(hits) + " |")
    secs = [f"{np.mean([r['seconds'][e] for r in rows]):.1f} s" for e in ESTIMATORS]
    lines.append("| mean time per mix | | | " + " | ".join(secs) + " |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="two mixes, nothing written")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="the CIFAR-10 arrays (default: the offline copy)")
    args = parser.parse_args(argv)
    rows = run(args.smoke, args.data_dir, args.threads)
    print("\n".join(table(rows)))
    if not args.smoke:
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
