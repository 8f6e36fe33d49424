"""How well ``estimate_num_clusters`` finds the number of clusters of long-tailed data, next to
the criteria it combines and the Calinski-Harabasz index, per seed against the truth.

Data: Gaussian blobs whose sizes fall geometrically from 1000 to 50 (tail = 5% of head),
well separated and closer; the same sizes on the sphere (cosine metric); scikit-learn's
digits made long-tailed with the package's ``long_tail_indices`` (IF 1 and 10; IF 100
would leave classes of one image), as raw pixels and as 20 PCA components; and the time
of one call at N=16k, d=512, k_max=50.

    python benchmarks/estimate_k.py            # about 3 minutes on one thread
    python benchmarks/estimate_k.py --smoke    # seconds, writes nothing

Writes ``benchmarks/results/estimate_k.json``.

``--real``: the number of classes of 12 long-tailed mixes of real CIFAR-10 images (5 or 10
classes x balanced / IF 10 / IF 100 x 2 subsamples) as ``score_num_clusters`` estimates it,
next to four alternatives, each timed on the same rows. Features: frozen ImageNet
EfficientNet-Lite0 at 128 px (the packaged weights), the frozen lab's cache (``python -m
benchmarks.frozen_lab features`` builds it): clean training rows of CIFAR-10-LT IF 10 and the
balanced test rows, pooled per class. Mix sizes: balanced 1,000 per class (5 classes) or 500
(10); IF 10 from 1,500 (5) or 1,000 (10); IF 100 from 3,000, the larger classes taking the
larger counts. Alternatives, each over ``K = 1..k_max``: the silhouette alone; a diagonal
Gaussian mixture's BIC on 32 whitened principal components (scikit-learn); the same mixture's
held-out log-likelihood (fit on one half, scored on the other); Louvain modularity communities
of the 15-nearest-neighbour cosine graph (networkx).

    python -m benchmarks.estimate_k --real            # about 1 minute on 2 cores
    python -m benchmarks.estimate_k --real --smoke    # two mixes, nothing written

Writes ``benchmarks/results/estimate_k_real.json``; ``write_docs`` makes its table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import calinski_harabasz_score

from dcl_cluster.cluster import KMeans, estimate_num_clusters
from dcl_cluster.cluster.estimate_k import separated_num_clusters, silhouette_num_clusters
from dcl_cluster.data.long_tail import long_tail_counts, long_tail_indices

OUT = Path(__file__).resolve().parent / "results" / "estimate_k.json"
CRITERIA = ("chosen (max of both)", "silhouette", "separation", "calinski_harabasz")


def long_tailed_blobs(k: int, d: int, spread: float, seed: int, head: int = 1000, tail: int = 50):
    """``k`` unit Gaussians in ``d`` dimensions, centres drawn ``N(0, spread^2 I)``, sizes
    falling geometrically from ``head`` to ``tail``."""
    rng = np.random.default_rng(seed)
    sizes = long_tail_counts(head, k, head / tail)
    centres = rng.normal(scale=spread, size=(k, d))
    x = np.concatenate([c + rng.normal(size=(n, d)) for c, n in zip(centres, sizes, strict=True)])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2) + np.diag(np.full(k, np.inf))
    return x.astype(np.float32), sizes, float(gaps.min())


def long_tailed_sphere(k: int, d: int, noise: float, seed: int, head: int = 1000, tail: int = 50):
    """Embedding-like clusters: ``k`` random unit directions plus Gaussian noise of ``noise``
    per coordinate, each row then scaled by a random norm in [0.5, 3] (cosine geometry)."""
    rng = np.random.default_rng(seed)
    sizes = long_tail_counts(head, k, head / tail)
    directions = rng.normal(size=(k, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x = np.concatenate([c + noise * rng.normal(size=(n, d)) for c, n in zip(directions, sizes, strict=True)])
    x *= rng.uniform(0.5, 3.0, size=(len(x), 1))
    return x.astype(np.float32), sizes


def calinski_harabasz_k(x: torch.Tensor, k_max: int, seed: int, fit_rows: int = 4000) -> int:
    """``K`` of the highest Calinski-Harabasz index, k-means fitted as the silhouette's."""
    fit = x[:fit_rows]
    scores = [calinski_harabasz_score(fit.numpy(), KMeans(k, n_init=2, seed=seed).fit(fit).labels_.numpy())
              for k in range(2, k_max + 1)]
    return int(np.argmax(scores)) + 2


def estimates(x: np.ndarray, k_max: int, seed: int, metric: str = "euclidean") -> tuple[dict, float]:
    """K of each criterion on the same shuffle of ``x`` (as ``estimate_num_clusters`` makes it)."""
    t = torch.from_numpy(x)
    if metric == "cosine":
        t = torch.nn.functional.normalize(t, dim=1)
    t = t[torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))]
    start = time.perf_counter()
    sil = silhouette_num_clusters(t, k_max, seed)
    sep = separated_num_clusters(t, k_max, seed)
    seconds = time.perf_counter() - start
    ks = {"chosen (max of both)": max(sil, sep), "silhouette": sil, "separation": sep,
          "calinski_harabasz": calinski_harabasz_k(t, k_max, seed)}
    return ks, seconds


def cases(smoke: bool):
    blob_grid = [(5, 8), (8, 32)] if smoke else [(5, 8), (8, 32), (10, 16), (20, 64)]
    seeds = [0] if smoke else [0, 1, 2]
    for spread, label in ((3.0, "separated"), (1.5, "closer")):
        for k, d in blob_grid:
            for seed in seeds:
                x, sizes, gap = long_tailed_blobs(k, d, spread, seed)
                yield {"data": f"blobs LT {label} (centres N(0,{spread}^2))", "d": d, "truth": k,
                       "sizes": sizes, "seed": seed, "closest_centres": round(gap, 2)}, x, min(2 * k, 30)
    for seed in seeds:
        x, sizes = long_tailed_sphere(10, 128, 0.1, seed)
        yield {"data": "sphere LT, metric cosine (directions + N(0,0.1^2) noise, random norms)", "d": 128,
               "truth": 10, "sizes": sizes, "seed": seed, "metric": "cosine"}, x, 20
    digits = load_digits()
    pixels, labels = digits.data.astype(np.float32), digits.target
    for imbalance in (1, 10):
        for seed in seeds:
            idx = long_tail_indices(labels, imbalance, seed=seed)
            features = {"raw pixels": pixels[idx]}
            if not smoke:
                features["PCA 20"] = PCA(20, random_state=0).fit_transform(pixels[idx]).astype(np.float32)
            for name, x in features.items():
                yield {"data": f"digits IF {imbalance} {name}", "d": x.shape[1], "truth": 10,
                       "sizes": np.bincount(labels[idx]).tolist(), "seed": seed}, x, 20


def summary(rows: list[dict]) -> dict:
    out = {}
    for group in sorted({r["data"] for r in rows}):
        sel = [r for r in rows if r["data"] == group]
        out[group] = {c: {"exact": f"{sum(r['k'][c] == r['truth'] for r in sel)}/{len(sel)}",
                          "mean_abs_error": round(float(np.mean([abs(r["k"][c] - r["truth"]) for r in sel])), 2)}
                      for c in CRITERIA}
    out["all"] = {c: {"exact": f"{sum(r['k'][c] == r['truth'] for r in rows)}/{len(rows)}",
                      "mean_abs_error": round(float(np.mean([abs(r["k"][c] - r["truth"]) for r in rows])), 2)}
                  for c in CRITERIA}
    return out


def timing(smoke: bool) -> dict:
    k, d = (10, 64) if smoke else (50, 512)
    x, sizes, _ = long_tailed_blobs(k, d, 3.0, 0, head=1000 if not smoke else 200, tail=50 if not smoke else 10)
    start = time.perf_counter()
    found = estimate_num_clusters(x, k_max=k, seed=0)
    return {"n": len(x), "d": d, "k_max": k, "truth": k, "found": found,
            "seconds": round(time.perf_counter() - start, 2), "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- real features (--real)

REAL_OUT = Path(__file__).resolve().parent / "results" / "estimate_k_real.json"
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


def real_run(smoke: bool = False, data_dir: str | None = None, threads: int = 2) -> list[dict]:
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


def real_table(rows: list[dict]) -> list[str]:
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


def main(argv=None) -> dict | list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny grid, nothing written")
    parser.add_argument("--real", action="store_true", help="the 12 mixes of real CIFAR-10 features")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default 1, 2 with --real; more threads than free cores slow "
                             "k-means down many times)")
    parser.add_argument("--data-dir", default=None, help="--real: the CIFAR-10 arrays (default: the offline copy)")
    args = parser.parse_args(argv)
    if args.real:
        rows = real_run(args.smoke, args.data_dir, args.threads or 2)
        print("\n".join(real_table(rows)))
        if not args.smoke:
            REAL_OUT.write_text(json.dumps(rows, indent=1) + "\n")
            print(f"wrote {REAL_OUT}")
        return rows
    torch.set_num_threads(args.threads or 1)
    rows = []
    for meta, x, k_max in cases(args.smoke):
        ks, seconds = estimates(x, k_max, meta["seed"], meta.get("metric", "euclidean"))
        rows.append({**meta, "n": len(x), "k_max": k_max, "k": ks, "seconds_chosen": round(seconds, 2)})
        print(meta["data"], f"d={meta['d']} truth={meta['truth']} seed={meta['seed']}", ks, flush=True)
    first = rows[0]
    x0 = next(iter(cases(args.smoke)))[1]
    assert estimate_num_clusters(x0, first["k_max"], first["seed"]) == first["k"]["chosen (max of both)"]
    result = {"criteria": list(CRITERIA), "summary": summary(rows), "timing": timing(args.smoke),
              "rows": rows}
    print(json.dumps(result["summary"], indent=1), result["timing"])
    if not args.smoke:
        OUT.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
