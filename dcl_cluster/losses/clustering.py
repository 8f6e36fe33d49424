"""Clustering objectives of METHOD.md section 2, as pure functions.

The DEC divergence loss with its Student-t assignment and sharpened target (Xie et al.,
ICML 2016) and a size exponent for long-tailed data, the anchor loss of Sundareswaran
et al. (arXiv 2109.12714), and the cluster-level contrastive loss of Contrastive
Clustering (Li et al., AAAI 2021).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dcl_cluster.losses.checks import check_size_exponent, tensor_value_checks_enabled
from dcl_cluster.losses.contrastive import info_nce_loss

__all__ = [
    "student_t_logits",
    "student_t_assignment",
    "target_distribution",
    "prior_matched_target",
    "dec_clustering_loss",
    "anchor_loss",
    "cluster_contrastive_loss",
]


def _as_float(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_assignments(name: str, q: Tensor) -> None:
    if q.ndim != 2 or q.shape[1] < 2:
        raise ValueError(f"{name} must have shape (B, K) with K >= 2 clusters, got {tuple(q.shape)}")


def _safe_log(q: Tensor) -> Tensor:
    return torch.log(q.clamp_min(torch.finfo(q.dtype).tiny))


def _kl_rows(p: Tensor, q: Tensor) -> Tensor:
    """``KL(p_i || q_i)`` per row, with ``0 log 0 = 0``."""
    return (torch.special.xlogy(p, p) - p * _safe_log(q)).sum(dim=1)


def student_t_logits(h: Tensor, centroids: Tensor, alpha: float = 1.0) -> Tensor:
    """The log of DEC's Student-t kernel, ``-(alpha + 1) / 2 * log(1 + |h_i - mu_k|^2 / alpha)``:
    logits whose softmax over ``k`` is :func:`student_t_assignment`.

    Args:
        h: Features, shape ``(B, d)``.
        centroids: Cluster centres ``mu``, shape ``(K, d)``.
        alpha: Degrees of freedom of the Student-t kernel, ``> 0``.

    Returns:
        Logits of shape ``(B, K)`` (float32 for half inputs).

    Examples:
        >>> import torch
        >>> h, mu = torch.randn(4, 3), torch.randn(5, 3)
        >>> torch.allclose(torch.softmax(student_t_logits(h, mu), 1), student_t_assignment(h, mu))
        True
    """
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if h.ndim != 2 or centroids.ndim != 2 or h.shape[1] != centroids.shape[1]:
        raise ValueError(
            "h must be (B, d) and centroids (K, d) with the same d, got "
            f"{tuple(h.shape)} and {tuple(centroids.shape)}"
        )
    h, centroids = _as_float(h), _as_float(centroids)
    sq_dist = (
        h.pow(2).sum(dim=1, keepdim=True)
        - 2 * torch.mm(h, centroids.t()).to(h.dtype)
        + centroids.pow(2).sum(dim=1)
    ).clamp_min(0)  # (B, K)
    return -(alpha + 1) / 2 * torch.log1p(sq_dist / alpha)


def student_t_assignment(h: Tensor, centroids: Tensor, alpha: float = 1.0) -> Tensor:
    """Soft assignment of features to centroids with a Student-t kernel (DEC, METHOD.md 2.1).

    ``q_ik = (1 + |h_i - mu_k|^2 / alpha)^(-(alpha + 1) / 2)``, normalised over ``k``;
    computed as a softmax of the log-kernel (:func:`student_t_logits`) so it cannot overflow.

    Args:
        h: Features, shape ``(B, d)``.
        centroids: Cluster centres ``mu``, shape ``(K, d)``.
        alpha: Degrees of freedom of the Student-t kernel, ``> 0``.

    Returns:
        ``q`` of shape ``(B, K)``; each row sums to 1.

    Examples:
        >>> import torch
        >>> q = student_t_assignment(torch.randn(4, 3), torch.randn(5, 3))
        >>> torch.allclose(q.sum(dim=1), torch.ones(4))
        True
    """
    return torch.softmax(student_t_logits(h, centroids, alpha), dim=1)


def target_distribution(q: Tensor, size_exponent: float = 1.0, cluster_sizes: Tensor | None = None) -> Tensor:
    """Sharpened target ``p`` for the DEC loss, detached from the graph (METHOD.md 2.1).

    ``p_ik ∝ q_ik^2 / f_k^size_exponent`` with soft cluster sizes ``f_k = sum_i q_ik``.
    ``size_exponent=1`` is DEC (which pushes clusters toward equal sizes), ``0`` sharpens
    only and leaves cluster sizes free, which suits long-tailed data.

    Args:
        q: Soft assignments, shape ``(B, K)``.
        size_exponent: Power of the cluster-size normalisation, ``>= 0``.
        cluster_sizes: Dataset-wide cluster sizes (or frequencies; only ratios matter),
            shape ``(K,)``, used as ``f`` instead of the batch's: DEC's full-dataset target.
            Zeros are raised to a frequency of 1e-8. ``None``: the per-batch target.

    Returns:
        ``p`` of shape ``(B, K)``, rows summing to 1, with no gradient.

    Examples:
        >>> import torch
        >>> q = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
        >>> target_distribution(q, size_exponent=0.0)[0].round(decimals=4)
        tensor([0.6923, 0.3077])
        >>> target_distribution(q, 1.0, cluster_sizes=torch.tensor([3.0, 1.0]))[0].round(decimals=4)
        tensor([0.4286, 0.5714])
    """
    check_size_exponent(size_exponent)
    _check_assignments("q", q)
    with torch.no_grad():
        q = _as_float(q.detach())
        if cluster_sizes is None:
            f = q.sum(dim=0)
        else:  # frequencies, an empty cluster raised to 1e-8 so it cannot take every row
            f = _check_prior(cluster_sizes, q.shape[1], "cluster_sizes").to(q)
            f = (f / f.sum()).clamp_min(1e-8)
        return torch.softmax(2 * _safe_log(q) - size_exponent * _safe_log(f), dim=1)


def _check_prior(prior: Tensor, num_clusters: int, name: str) -> Tensor:
    # values: one host sync for all three checks, skipped inside the training module
    bad_values = tensor_value_checks_enabled() and not bool(
        torch.isfinite(prior).all() & (prior >= 0).all() & (prior.sum() > 0))
    if prior.shape != (num_clusters,) or bad_values:
        raise ValueError(
            f"{name} must be {num_clusters} finite non-negative numbers with a positive sum, got {prior.tolist()}"
        )
    return prior.detach()


def prior_matched_target(q: Tensor, prior: Tensor, num_iters: int = 20) -> Tensor:
    """A sharpened target whose cluster sizes follow ``prior``: long-tailed when it is.

    DEC's target flattens cluster sizes (METHOD.md 2.1, long-tail caveat). This target is
    the sharpened ``q_ik^2`` rescaled as ``p_ik = q_ik^2 u_i v_k`` so that every row sums
    to 1 and column ``k`` sums to ``B * prior_k``: the optimal-transport target of SeLa /
    SwAV (Sinkhorn-Knopp, in log space) with the estimated class prior as the column
    marginal instead of a uniform one. Rows sum to 1 exactly; columns to ``B * prior``
    up to the remaining Sinkhorn error, which grows with the sharpness of ``q``: for
    ``B = 256, K = 10`` it is below 1e-6 for soft assignments but can reach 0.1 of a
    column's share when most rows put nearly all mass on one cluster. A cluster that ``q``
    ignores still receives its ``B * prior_k`` of target mass.

    Args:
        q: Soft assignments, shape ``(B, K)``.
        prior: Cluster frequencies, shape ``(K,)``, non-negative (normalised here; zeros
            are raised to 1e-8 so the scaling stays finite).
        num_iters: Sinkhorn iterations (column then row scaling), ``>= 1``.

    Returns:
        ``p`` of shape ``(B, K)`` with no gradient.

    Examples:
        >>> import torch
        >>> q = torch.softmax(torch.randn(64, 3), dim=1)
        >>> p = prior_matched_target(q, torch.tensor([0.7, 0.2, 0.1]), num_iters=100)
        >>> (p.sum(dim=0) / 64).round(decimals=2)
        tensor([0.7000, 0.2000, 0.1000])
    """
    _check_assignments("q", q)
    if not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be an integer >= 1, got {num_iters!r}")
    with torch.no_grad():
        q = _as_float(q.detach())
        prior = _check_prior(prior, q.shape[1], "prior").to(q).clamp_min(1e-8)
        log_mass = torch.log(q.shape[0] * prior / prior.sum())  # (K,) target column sums
        log_p = 2 * _safe_log(q)
        for _ in range(num_iters):
            log_p = log_p - torch.logsumexp(log_p, dim=0) + log_mass
            log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
        return log_p.exp()


def dec_clustering_loss(q: Tensor, p: Tensor | None = None, size_exponent: float = 1.0) -> Tensor:
    """DEC divergence clustering loss ``(1/B) sum_i KL(p_i || q_i)`` (METHOD.md 2.1).

    Args:
        q: Soft assignments, shape ``(B, K)`` (e.g. from :func:`student_t_assignment`).
        p: Target distribution of the same shape; computed from ``q`` with
            :func:`target_distribution` (per-batch targets) when not given. It never
            receives gradient.
        size_exponent: Passed to :func:`target_distribution` when ``p`` is computed here.

    Returns:
        The scalar loss.

    Examples:
        >>> import torch
        >>> q = torch.softmax(torch.randn(6, 3), dim=1)
        >>> float(dec_clustering_loss(q)) >= 0
        True
    """
    _check_assignments("q", q)
    if p is None:
        p = target_distribution(q, size_exponent)
    elif p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return _kl_rows(p.detach().to(_as_float(q).dtype), _as_float(q)).mean()


def anchor_loss(q_clean: Tensor, q_a: Tensor, q_b: Tensor) -> Tensor:
    """Anchor loss of Sundareswaran et al. (arXiv 2109.12714), METHOD.md 2.2.

    The clean image's assignment anchors both augmented views:
    ``mean_i [KL(q(x_i) || q(x_i^a)) + KL(q(x_i) || q(x_i^b))]``, with ``q(x_i)``
    detached, so no gradient reaches the clean view.

    Args:
        q_clean: Assignments of the un-augmented images, shape ``(B, K)``.
        q_a: Assignments of the first views, shape ``(B, K)``.
        q_b: Assignments of the second views, shape ``(B, K)``.

    Returns:
        The scalar loss.

    Examples:
        >>> import torch
        >>> q = torch.softmax(torch.randn(4, 3), dim=1)
        >>> abs(float(anchor_loss(q, q, q))) < 1e-6  # identical assignments: no loss
        True
    """
    for name, x in (("q_clean", q_clean), ("q_a", q_a), ("q_b", q_b)):
        _check_assignments(name, x)
    if not q_clean.shape == q_a.shape == q_b.shape:
        raise ValueError(
            "q_clean, q_a and q_b must have the same shape, got "
            f"{tuple(q_clean.shape)}, {tuple(q_a.shape)} and {tuple(q_b.shape)}"
        )
    target = _as_float(q_clean.detach())
    return (_kl_rows(target, _as_float(q_a)) + _kl_rows(target, _as_float(q_b))).mean()


def cluster_contrastive_loss(y_a: Tensor, y_b: Tensor, temperature: float = 1.0) -> Tensor:
    """Cluster-level contrastive loss of Contrastive Clustering (Li et al., AAAI 2021).

    METHOD.md 2.3: the K columns of the softmax assignments ``Y^a, Y^b`` (B x K) are
    contrasted with NT-Xent under cosine similarity (:func:`info_nce_loss` over 2K
    cluster vectors), and ``log K - H(mean_i y_i)`` is added for each view against collapse.

    Args:
        y_a: Softmax cluster assignments of the first views, shape ``(B, K)``.
        y_b: Softmax cluster assignments of the second views, shape ``(B, K)``.
        temperature: Cluster-level temperature ``t_C > 0`` (1.0 in the paper).

    Returns:
        The scalar loss.

    Examples:
        >>> import torch
        >>> y_a, y_b = torch.softmax(torch.randn(16, 4), 1), torch.softmax(torch.randn(16, 4), 1)
        >>> bool(torch.isfinite(cluster_contrastive_loss(y_a, y_b)))
        True
    """
    _check_assignments("y_a", y_a)
    if y_a.shape != y_b.shape:
        raise ValueError(
            f"y_a and y_b must have the same shape, got {tuple(y_a.shape)} and {tuple(y_b.shape)}"
        )
    y_a, y_b = _as_float(y_a), _as_float(y_b)
    num_clusters = y_a.shape[1]
    entropy_terms = 0.0
    for y in (y_a, y_b):
        p = y.sum(dim=0)
        p = p / p.sum()
        entropy_terms = entropy_terms + math.log(num_clusters) + torch.special.xlogy(p, p).sum()
    return info_nce_loss(y_a.t(), y_b.t(), temperature) + entropy_terms
