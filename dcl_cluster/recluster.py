"""Another K without another fit: ``predict`` saves the features it computed, and
``dcl-cluster recluster`` clusters them again at any K in seconds, writing the same CSV,
contact sheets and ``report.html`` for that K in a folder of its own beside the others.

    dcl-cluster recluster --predictions RUN_FOLDER --num_clusters 5
    dcl-cluster recluster --predictions RUN_FOLDER --num_clusters auto   # the scores per K, drawn

Imports neither Lightning nor the CLI, so it starts as fast as a script of one's own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dcl_cluster.callbacks.saved_features import FEATURES_FILE, load_predict_features, save_predict_features

__all__ = ["FEATURES_FILE", "load_predict_features", "main", "recluster", "recluster_folder",
           "save_predict_features"]

RECLUSTER_PREFIX = "recluster_k"  # recluster_k005/: the results at K=5


def recluster(saved: dict, num_clusters: int, seed: int = 0, n_init: int = 3) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Clusters ``(N,)``, confidences ``(N,)`` and a sentence saying how, at ``num_clusters``:
    the trained head's own clusters when it has that ``K``, else k-means on the saved
    features (L2-normalised first when the head is cosine)."""
    from dcl_cluster.cluster import KMeans

    x = saved["embeddings"].float()
    n = x.shape[0]
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or not 2 <= num_clusters <= n:
        raise ValueError(f"--num_clusters must be an integer in [2, {n}] (the saved images) or auto, "
                         f"got {num_clusters!r}")
    head_k = saved.get("head_k")
    if head_k == num_clusters and saved.get("head_clusters") is not None:
        return (saved["head_clusters"], saved["head_confidence"],
                f"the trained cluster head (K = {head_k}): each image's most probable cluster, as predict wrote it")
    metric = saved.get("metric", "euclidean")
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    km = KMeans(num_clusters, n_init=n_init, seed=seed).fit(x)
    confidence = torch.softmax(-torch.cdist(x, km.cluster_centers_.float()), dim=1).max(1).values
    head = (f"; the trained head has K = {head_k} and is not used at K = {num_clusters}" if head_k else
            "; the run has no trained head")
    how = f"k-means (K = {num_clusters}, {n_init} seedings, seed {seed}) on the {n} saved features ({metric}){head}"
    return torch.as_tensor(km.labels_).long(), confidence, how


def recluster_folder(folder: str | os.PathLike, num_clusters: int | str, seed: int = 0,
                     max_clusters: int = 30) -> dict[str, Any]:
    """Re-cluster a predict folder's saved features at ``num_clusters`` (or ``"auto"``: the
    package's estimate, whose scores per K are drawn first) and write the results into
    ``<folder>/recluster_k<K>/`` (replacing an earlier one of that K). Returns the folder,
    the files, ``K`` and how the clusters were made."""
    from dcl_cluster.callbacks.cluster_results import write_cluster_results
    from dcl_cluster.callbacks.outputs import record_outputs, recorded_outputs
    from dcl_cluster.cluster.estimate_k import NoClusterStructureError, score_num_clusters
    from dcl_cluster.cluster.k_scores_plot import write_k_scores

    start = time.perf_counter()
    folder = Path(folder).expanduser()
    saved = load_predict_features(folder)
    k_choice, plot = None, None
    if num_clusters == "auto":
        n = saved["embeddings"].shape[0]
        estimate = score_num_clusters(saved["embeddings"].float(), min(max_clusters, n), seed=seed,
                                      metric=saved.get("metric", "euclidean"))
        plot = write_k_scores(estimate, folder, "recluster_k_scores")
        record_outputs(folder, [plot, plot.with_suffix(".json")])
        if not estimate.structured:
            raise NoClusterStructureError(f"recluster --num_clusters auto: {estimate.explain()}. Pick K yourself "
                                          f"(--num_clusters N); the scores per K are drawn in {plot}")
        num_clusters, k_choice = estimate.k, estimate.as_dict()
    clusters, confidence, how = recluster(saved, num_clusters, seed)
    out = folder / f"{RECLUSTER_PREFIX}{num_clusters:03d}"
    if out.exists():
        if out.name not in recorded_outputs(folder):
            raise FileExistsError(f"{out} exists and was not written by recluster; move it away, or pass "
                                  "--predictions a folder of predict's results")
        import shutil

        shutil.rmtree(out)  # an earlier recluster at this K: replaced
    summary = {**saved.get("summary", {}), "clusters from": how}
    labels = saved.get("labels")
    labelled = labels is not None and bool((labels >= 0).any())
    files = write_cluster_results(out, clusters, confidence, labels, saved.get("paths"), saved.get("images"),
                                  summary=summary, k_choice=k_choice,
                                  class_names=saved.get("class_names") if labelled else None,
                                  class_counts=saved.get("class_counts") if labelled else None)
    record_outputs(folder, [out, *([plot, plot.with_suffix(".json")] if plot else [])])
    return {"folder": out, "files": files, "num_clusters": num_clusters, "how": how,
            "seconds": time.perf_counter() - start}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dcl-cluster recluster",
        description="Cluster the features a `dcl-cluster predict` saved (features.pt) again at another K, "
                    "in seconds, without another fit; writes predictions.csv, report.html and the contact "
                    "sheets into <predictions>/recluster_k<K>/.")
    parser.add_argument("--predictions", required=True, help="the folder predict wrote predictions.csv into")
    parser.add_argument("--num_clusters", required=True,
                        help="K (an integer >= 2), or auto for the package's estimate with its scores per K")
    parser.add_argument("--max_clusters", type=int, default=30, help="largest K that auto considers (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-means seedings (default 0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """``dcl-cluster recluster``: one paragraph and exit 1 on bad input, as the other subcommands."""
    args = parse_args(argv)
    k: int | str = args.num_clusters
    if k != "auto":
        try:
            k = int(k)
        except ValueError:
            k = args.num_clusters
    try:
        if k != "auto" and not isinstance(k, int):
            raise ValueError(f"--num_clusters must be an integer >= 2 or auto, got {k!r}")
        result = recluster_folder(args.predictions, k, seed=args.seed, max_clusters=args.max_clusters)
    except (ValueError, OSError) as err:
        if os.environ.get("DCL_CLUSTER_DEBUG") == "1":
            raise
        sys.stderr.write(f"error: {err}\n(DCL_CLUSTER_DEBUG=1 shows the traceback)\n")
        sys.exit(1)
    out = result["folder"]
    print(f"K = {result['num_clusters']}: {result['how']}.\npredictions: {out / 'predictions.csv'}\n"
          f"report: {out / 'report.html'}\n({result['seconds']:.1f} s)", flush=True)
