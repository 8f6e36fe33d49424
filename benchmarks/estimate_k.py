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
"""

from __future__ import annotations

import argparse
import json
import time
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny grid, nothing written")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the measuring machine is shared; more threads than free cores "
                             "slow k-means down many times)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
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
