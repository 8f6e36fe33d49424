"""SCAN's clustering losses: neighbours agree, then confident predictions teach their strong views.

SCAN (Van Gansbeke et al., ECCV 2020), METHOD.md 2.6, written from the paper's formulas:
stage 2, the neighbour-consistency loss with an entropy (or, for long-tailed data, a
KL-to-prior) term against collapse; stage 3, class-balanced self-labelling on confident
weakly augmented predictions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dcl_cluster.losses.checks import tensor_value_checks_enabled

__all__ = ["scan_loss", "confident_self_label_loss"]


def _as_float(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_logit_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.ndim != 2 or a.shape[1] < 2 or a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (B, K) with K >= 2, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_prior(prior: Tensor, num_clusters: int) -> Tensor:
    # the value check reads the tensor (a host sync): skipped under tensor_value_checks(False)
    ok = prior.shape == (num_clusters,) and (not tensor_value_checks_enabled() or bool(
        torch.isfinite(prior).all() & (prior > 0).all() & ((prior.sum() - 1).abs() <= 1e-3)
    ))
    if not ok:
        raise ValueError(
            f"prior must be a probability vector of {num_clusters} positive numbers summing to 1, "
            f"got {prior.tolist()}"
        )
    return prior.detach()


def scan_loss(
    anchor_logits: Tensor,
    neighbor_logits: Tensor,
    entropy_weight: float = 5.0,
    prior: Tensor | None = None,
) -> Tensor:
    """SCAN's loss: an image and its mined neighbour should fall in the same cluster.

    METHOD.md 2.6, with ``P = softmax``:
    ``-(1/B) sum_i log <P(x_i), P(n_i)>  -  w H(mean_i P(x_i))``. The inner product is
    taken in log space (``logsumexp`` of the summed log-probabilities), so it stays
    finite and keeps its gradient however confidently the two disagree. With ``prior``
    the entropy term becomes ``+ w KL(mean_i P(x_i) || prior)``, which lets cluster sizes
    follow a long tail; for a uniform prior it is the entropy form plus ``w log K``.
    Both the anchors and the neighbours receive gradients (SCAN trains both).

    Args:
        anchor_logits: Logits of the (augmented) images, shape ``(B, K)``.
        neighbor_logits: Logits of one mined neighbour of each, shape ``(B, K)``.
        entropy_weight: ``w >= 0`` (5 in SCAN's CIFAR configs).
        prior: Optional cluster prior, shape ``(K,)``, positive, summing to 1 (values
            checked unless :func:`~dcl_cluster.losses.checks.tensor_value_checks` is off).

    Returns:
        The scalar loss (computed in float32 for half-precision inputs).

    Examples:
        >>> import torch
        >>> a = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
        >>> round(float(scan_loss(a, a, entropy_weight=0.0)), 4)  # agreeing, confident pairs
        0.0134
        >>> round(float(scan_loss(a, a, 1.0, prior=torch.tensor([0.5, 0.5]))), 4)  # balanced: KL = 0
        0.0134
    """
    _check_logit_pair("anchor_logits", anchor_logits, "neighbor_logits", neighbor_logits)
    if not isinstance(entropy_weight, (int, float)) or not math.isfinite(entropy_weight) or entropy_weight < 0:
        raise ValueError(f"entropy_weight must be a finite number >= 0, got {entropy_weight!r}")
    if prior is not None:
        prior = _check_prior(prior, anchor_logits.shape[1])
    log_p_anchor = torch.log_softmax(_as_float(anchor_logits), dim=1)  # (B, K)
    log_p_neighbor = torch.log_softmax(_as_float(neighbor_logits), dim=1).to(log_p_anchor.dtype)
    consistency = -torch.logsumexp(log_p_anchor + log_p_neighbor, dim=1).mean()  # -mean log <P(x), P(n)>
    mean_p = log_p_anchor.exp().mean(dim=0)  # (K,)
    neg_entropy = torch.special.xlogy(mean_p, mean_p).sum()
    if prior is None:
        return consistency + entropy_weight * neg_entropy
    log_prior = torch.log(prior.to(mean_p) / prior.to(mean_p).sum())
    return consistency + entropy_weight * (neg_entropy - (mean_p * log_prior).sum())


def confident_self_label_loss(
    weak_logits: Tensor,
    strong_logits: Tensor,
    threshold: float = 0.99,
    class_balance: bool = True,
    class_weight: Tensor | None = None,
) -> Tensor:
    """SCAN's self-labelling: confident weak-view predictions become labels for the strong view.

    METHOD.md 2.6, stage 3. ``mask = max_k softmax(weak)_k > threshold``, target ``=
    argmax`` of the weak logits (no gradient through them), and the cross-entropy of the
    strong view's logits on the masked rows, as torch's ``cross_entropy(strong[mask],
    target[mask], weight=w)`` with ``w_k = 1 / (share of class k among the confident
    rows)`` (a weighted mean, so each class present counts equally) or no weight with
    ``class_balance=False``. Computed without a host sync; with no confident row it is
    a zero that still depends on ``strong_logits`` (so backward and DDP work).

    Args:
        weak_logits: Logits of the weakly augmented images, shape ``(B, K)``.
        strong_logits: Logits of the strongly augmented images, shape ``(B, K)``.
        threshold: Confidence threshold in ``(0, 1)`` (0.99 in SCAN).
        class_balance: Weight classes by their inverse share among the confident rows.
        class_weight: Given weights per class ``(K,)`` instead (MiniClustering's, METHOD.md
            2.7); ``class_balance`` is then unused.

    Returns:
        The scalar loss (float32 for half-precision inputs).

    Examples:
        >>> import torch
        >>> weak = torch.tensor([[9.0, 0.0], [0.0, 9.0], [0.0, 0.1]])  # the last is not confident
        >>> strong = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
        >>> round(float(confident_self_label_loss(weak, strong, threshold=0.9)), 4)
        0.3133
    """
    _check_logit_pair("weak_logits", weak_logits, "strong_logits", strong_logits)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}")
    strong = _as_float(strong_logits)
    num_clusters = strong.shape[1]
    with torch.no_grad():
        confidence, target = torch.softmax(_as_float(weak_logits.detach()), dim=1).max(dim=1)  # (B,), (B,)
        mask = (confidence > threshold).to(strong.dtype)  # (B,)
        if class_weight is not None:
            if class_weight.shape != (num_clusters,):
                raise ValueError(f"class_weight must have shape ({num_clusters},), got {tuple(class_weight.shape)}")
            row_weight = mask * class_weight.detach().to(strong)[target]
        elif class_balance:
            counts = torch.zeros(num_clusters, dtype=strong.dtype, device=strong.device)
            counts.index_add_(0, target, mask)  # confident rows per class
            weight = mask.sum() / counts.clamp_min(1)  # 1 / share; absent classes are never used
            row_weight = mask * weight[target]  # (B,)
        else:
            row_weight = mask
    per_row = F.cross_entropy(strong, target, reduction="none")  # (B,)
    # torch's weighted mean sum_i w_i ce_i / sum_i w_i over the confident rows; 0 when none
    return (row_weight * per_row).sum() / row_weight.sum().clamp_min(torch.finfo(strong.dtype).tiny)
