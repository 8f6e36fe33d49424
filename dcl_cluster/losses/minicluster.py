"""MiniClustering's re-weighted self-labelling (Li, Jia, Chen, Liu, Hou, ICLR 2026; METHOD.md
2.7): an over-clustering head of ``M`` mini-clusters tells, without labels, which of the ``K``
clusters are head and which are tail, and the self-labelling loss weights them accordingly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dcl_cluster.losses.scan import confident_self_label_loss

__all__ = ["mini_cluster_weights", "minicluster_loss"]


@torch.no_grad()
def mini_cluster_weights(pred: Tensor, mini_pred: Tensor, num_clusters: int, num_mini: int,
                         delta: float = 0.3) -> Tensor:
    """Class weights ``w_k = M / r_k`` from a batch's cluster and mini-cluster argmaxes.

    ``N[k, m]`` counts the rows with cluster ``k`` and mini-cluster ``m``; each column becomes
    shares (``S = N / sum_k N``), shares ``<= delta`` are dropped, and ``r_k = max(0.5,
    #{m : S[k, m] > 0})`` is how many mini-clusters cluster ``k`` spans. A cluster spanning
    few mini-clusters is taken for a tail cluster and weighted up.

    Args:
        pred: Cluster ids ``(B,)`` in ``[0, num_clusters)``.
        mini_pred: Mini-cluster ids ``(B,)`` in ``[0, num_mini)``.
        num_clusters: ``K``.
        num_mini: ``M``.
        delta: Share threshold in ``[0, 1)``.

    Returns:
        ``(K,)`` float32 weights.

    Examples:
        >>> pred = torch.tensor([0, 0, 0, 1])
        >>> mini = torch.tensor([0, 1, 2, 3])
        >>> mini_cluster_weights(pred, mini, 2, 4).tolist()  # cluster 0 spans 3 mini-clusters, 1 spans 1
        [1.3333333730697632, 4.0]
    """
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    counts = torch.zeros(num_clusters * num_mini, dtype=torch.float32, device=pred.device)
    counts.index_add_(0, pred.long() * num_mini + mini_pred.long(), torch.ones_like(pred, dtype=torch.float32))
    shares = counts.view(num_clusters, num_mini)
    shares = shares / shares.sum(dim=0, keepdim=True).clamp_min(1)
    spans = (shares > delta).sum(dim=1).float().clamp_min(0.5)
    return num_mini / spans


def _cosine_gram(p: Tensor) -> Tensor:
    p = F.normalize(p, dim=1)
    return p @ p.t()


def minicluster_loss(target_logits: Tensor, logits: Tensor, target_mini: Tensor, mini: Tensor,
                     threshold: float = 0.99, delta: float = 0.3, alpha: float = 1.0, beta: float = 0.2) -> Tensor:
    """``CE_w(head_K) + alpha * CE_bal(head_M) + beta * MSE(cos(c), cos(o))`` (METHOD.md 2.7).

    The view with the gradient gives ``c = softmax(logits)`` and ``o = softmax(mini)``; their
    argmaxes give the class weights (:func:`mini_cluster_weights`). The other view's logits
    (``target_*``, no gradient) give the confident targets of SCAN's self-labelling
    (:func:`~dcl_cluster.losses.confident_self_label_loss`): weighted by ``w`` for the K
    head, class-balanced for the mini head. The MSE keeps the two heads' ``B x B`` cosine
    similarities of assignments alike.

    Args:
        target_logits: ``(B, K)`` logits of the target view.
        logits: ``(B, K)`` logits of the trained view.
        target_mini: ``(B, M)`` mini-head logits of the target view.
        mini: ``(B, M)`` mini-head logits of the trained view.
        threshold: Confidence threshold of the targets (0.99).
        delta: Share threshold of :func:`mini_cluster_weights` (0.3).
        alpha: Weight of the mini head's loss (1).
        beta: Weight of the similarity MSE (0.2).

    Returns:
        The scalar loss (float32).
    """
    logits, mini = logits.float(), mini.float()
    c, o = torch.softmax(logits, dim=1), torch.softmax(mini, dim=1)
    weight = mini_cluster_weights(c.argmax(1), o.argmax(1), logits.shape[1], mini.shape[1], delta)
    ce_k = confident_self_label_loss(target_logits, logits, threshold, class_weight=weight)
    ce_m = confident_self_label_loss(target_mini, mini, threshold, class_balance=True)
    return ce_k + alpha * ce_m + beta * F.mse_loss(_cosine_gram(c), _cosine_gram(o))
