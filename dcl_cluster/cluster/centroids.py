"""The initial DEC centroids and cluster prior: k-means on training features (METHOD.md 2.1, 1.3)."""

from __future__ import annotations

import torch

from dcl_cluster.cluster.kmeans import KMeans

__all__ = ["kmeans_centroids"]


def kmeans_centroids(
    features: torch.Tensor, k: int, n_init: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres ``(k, d)`` (float32) and cluster sizes ``(k,)`` of a k-means fit of ``features``:
    the initial DEC centroids and cluster prior (METHOD.md 2.1, 1.3)."""
    if k > features.shape[0]:
        raise ValueError(
            f"num_clusters={k} is more than the {features.shape[0]} training samples available for "
            "the centroid k-means: use fewer clusters or more data"
        )
    kmeans = KMeans(k, n_init=n_init, seed=seed).fit(features)
    sizes = torch.bincount(torch.as_tensor(kmeans.labels_).long().cpu(), minlength=k).float()
    return torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32), sizes
