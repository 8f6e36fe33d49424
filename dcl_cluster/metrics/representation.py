"""Cheap diagnostics of a representation: weighted kNN, alignment, uniformity, RankMe.

Pure torch, chunked where the cost is quadratic, so they run every validation epoch on
whatever device the embeddings are on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int | None = None,
    k: int = 200,
    temperature: float = 0.5,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Weighted k-nearest-neighbour class prediction.

    Implements the kNN monitor of Wu et al., "Unsupervised feature learning via
    non-parametric instance discrimination", CVPR 2018 (as in InstDisc, MoCo and
    solo-learn): cosine similarity to a bank of labelled embeddings, the ``k`` most
    similar vote for their class with weight ``exp(sim / temperature)``.

    Args:
        query: ``(n, d)`` embeddings to classify (L2-normalised here).
        bank: ``(m, d)`` embeddings with known labels (L2-normalised here).
        bank_labels: ``(m,)`` integer labels of the bank.
        num_classes: Number of classes; defaults to ``max(bank_labels) + 1``.
        k: Neighbours (``min(k, m)`` are used).
        temperature: Softness of the vote weights.
        chunk_size: Queries per similarity block (memory ``chunk_size * m``).

    Returns:
        ``(n,)`` predicted labels on ``query``'s device.

    Examples:
        >>> bank = torch.eye(3).repeat(10, 1)
        >>> knn_predict(torch.eye(3), bank, torch.arange(3).repeat(10), k=5).tolist()
        [0, 1, 2]
    """
    if bank.shape[0] == 0:
        raise ValueError("knn_predict needs a non-empty bank")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query.shape[1] != bank.shape[1]:
        raise ValueError(f"query has {query.shape[1]} features, bank {bank.shape[1]}")
    bank_labels = bank_labels.to(bank.device).long()
    num_classes = num_classes or int(bank_labels.max()) + 1
    k = min(k, bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    preds = []
    for s in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[s : s + chunk_size].float().to(bank.device), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (b, k)
        weights = (sim / temperature).exp()
        scores = torch.zeros(q.shape[0], num_classes, device=bank.device)
        scores.scatter_add_(1, bank_labels[idx], weights)  # (b, C)
        preds.append(scores.argmax(1))
    out = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    return out.to(query.device)


def alignment(z_a: torch.Tensor, z_b: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Mean distance between positive pairs, ``E ||f(x) - f(y)||^alpha`` (lower is better).

    Wang & Isola, "Understanding contrastive representation learning through alignment
    and uniformity on the hypersphere", ICML 2020. Rows are L2-normalised first.

    Examples:
        >>> z = torch.randn(8, 4)
        >>> float(alignment(z, z))
        0.0
    """
    z_a, z_b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
    return (z_a - z_b).norm(dim=1).pow(alpha).mean()


def uniformity(z: torch.Tensor, t: float = 2.0, chunk_size: int = 2048) -> torch.Tensor:
    """``log E exp(-t ||f(x) - f(y)||^2)`` over distinct pairs (lower is more uniform).

    Wang & Isola, ICML 2020 (``torch.pdist(x).pow(2).mul(-t).exp().mean().log()``),
    computed over row blocks with a log-sum-exp so memory stays ``chunk_size * n``.
    Rows are L2-normalised first; needs at least two rows.

    Examples:
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
        >>> round(float(uniformity(z)), 4)
        -8.0
    """
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings, got {n}")
    z = F.normalize(z.float(), dim=1)
    cols = torch.arange(n, device=z.device)
    parts = []
    for s in range(0, n, chunk_size):
        block = z[s : s + chunk_size]
        sq = (2 - 2 * block @ z.T).clamp_min(0)  # (b, n) squared distances on the sphere
        upper = cols[None, :] > torch.arange(s, s + block.shape[0], device=z.device)[:, None]
        parts.append(torch.logsumexp((-t * sq)[upper], dim=0))
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(n * (n - 1) / 2)


def rankme(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Effective rank of an embedding matrix (higher: less dimensional collapse).

    Garrido et al., "RankMe: assessing the downstream performance of pretrained
    self-supervised representations by their rank", ICML 2023:
    ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps`` over the
    singular values of the ``(n, d)`` matrix (computed in float64).

    Examples:
        >>> round(float(rankme(torch.eye(4))), 3)
        4.0
    """
    sigma = torch.linalg.svdvals(z.double())
    p = sigma / sigma.sum() + eps
    return torch.exp(-(p * p.log()).sum()).to(torch.float32)
