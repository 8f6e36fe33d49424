"""What can be said of a clustering without labels: cluster sizes, the model's confidence in
its assignments, and how well separated the clusters are (silhouette on a sample)."""

from __future__ import annotations

import torch

from dcl_cluster.cluster.estimate_k import silhouette_score

__all__ = ["label_free_diagnostics"]


@torch.no_grad()
def label_free_diagnostics(
    embeddings: torch.Tensor, preds: torch.Tensor, probs: torch.Tensor | None = None,
    max_samples: int = 2000, seed: int = 0,
) -> dict[str, float | list[int]]:
    """Diagnostics of a clustering of unlabelled data.

    Args:
        embeddings: Features ``(N, d)``.
        preds: Cluster ids ``(N,)``.
        probs: Cluster probabilities ``(N, K)`` (a cluster head), or None.
        max_samples: Rows of the silhouette's sample (its cost is quadratic).
        seed: Seed of that sample.

    Returns:
        ``cluster_sizes`` (non-empty clusters, largest first), ``clusters_used``,
        ``largest_share`` and ``smallest_share`` (of the non-empty clusters), ``silhouette``
        (Euclidean, in ``[-1, 1]``; 0 with one cluster) and, with ``probs``,
        ``mean_confidence`` (mean of the rows' largest probability).

    Examples:
        >>> x = torch.cat([torch.zeros(4, 2), torch.ones(2, 2) * 10])
        >>> d = label_free_diagnostics(x, torch.tensor([0, 0, 0, 0, 1, 1]))
        >>> d["cluster_sizes"], d["silhouette"]
        ([4, 2], 1.0)
    """
    preds = preds.reshape(-1).long().cpu()
    sizes = torch.bincount(preds).tolist() if preds.numel() else []
    sizes = sorted((s for s in sizes if s > 0), reverse=True)
    n = max(1, preds.numel())
    out: dict[str, float | list[int]] = {
        "cluster_sizes": sizes, "clusters_used": float(len(sizes)),
        "largest_share": sizes[0] / n if sizes else float("nan"),
        "smallest_share": sizes[-1] / n if sizes else float("nan"),
    }
    if probs is not None:
        out["mean_confidence"] = float(probs.float().max(dim=1).values.mean())
    x = embeddings.float().cpu()
    if x.shape[0] > max_samples:
        rows = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
        x, preds = x[rows], preds[rows]
    out["silhouette"] = silhouette_score(torch.cdist(x, x), preds) if x.shape[0] > 1 else 0.0
    return out
