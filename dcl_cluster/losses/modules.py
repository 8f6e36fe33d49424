"""``nn.Module`` wrappers of the loss functions: argument checks at construction and the
optional gather of the global batch across processes (``gather_distributed=True``).

The math lives once, in :mod:`dcl_cluster.losses.contrastive` and
:mod:`dcl_cluster.losses.clustering`; these classes only validate and gather.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dcl_cluster.distributed import gather_with_grad
from dcl_cluster.losses.checks import check_beta, check_size_exponent, check_tau_plus, check_temperature
from dcl_cluster.losses.clustering import (
    anchor_loss,
    cluster_contrastive_loss,
    dec_clustering_loss,
    prior_matched_target,
    target_distribution,
)
from dcl_cluster.losses.contrastive import (
    debiased_contrastive_loss,
    hard_negative_loss,
    info_nce_loss,
)

__all__ = [
    "InfoNCELoss",
    "DebiasedContrastiveLoss",
    "HardNegativeLoss",
    "DECClusteringLoss",
    "AnchorLoss",
    "ClusterContrastiveLoss",
]


def _check_gather(gather_distributed: bool) -> bool:
    if gather_distributed and not dist.is_available():
        raise ValueError("gather_distributed=True needs torch.distributed, which this torch build lacks")
    return bool(gather_distributed)


def _gather_pair(a: Tensor, b: Tensor, gather: bool) -> tuple[Tensor, Tensor]:
    return (gather_with_grad(a), gather_with_grad(b)) if gather else (a, b)


def _gather_tau(tau_plus: float | Tensor, gather: bool) -> float | Tensor:
    """Gather a per-anchor ``(2B,)`` tensor ordered ``[a, b]`` into the global ``[a, b]`` order."""
    if not gather or not isinstance(tau_plus, Tensor):
        return tau_plus
    tau_a, tau_b = tau_plus.detach().chunk(2)
    return torch.cat([gather_with_grad(tau_a), gather_with_grad(tau_b)])


class InfoNCELoss(nn.Module):
    """InfoNCE / NT-Xent (SimCLR); see :func:`~dcl_cluster.losses.info_nce_loss`.

    Implements SimCLR's NT-Xent (Chen et al., "A Simple Framework for Contrastive
    Learning of Visual Representations", ICML 2020).

    Args:
        temperature: ``t > 0``.
        gather_distributed: Gather both views from every process with gradients, so
            negatives come from the global batch.

    Examples:
        >>> import torch
        >>> loss_fn = InfoNCELoss(temperature=0.5)
        >>> loss_fn(torch.randn(8, 16), torch.randn(8, 16)).ndim
        0
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature
        self.gather_distributed = _check_gather(gather_distributed)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        z_a, z_b = _gather_pair(z_a, z_b, self.gather_distributed)
        return info_nce_loss(z_a, z_b, self.temperature)


class DebiasedContrastiveLoss(nn.Module):
    """Debiased contrastive loss (Chuang et al., 2020); see
    :func:`~dcl_cluster.losses.debiased_contrastive_loss`.

    Implements Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020, and the
    per-anchor ``tau+`` of METHOD.md 1.3 when ``forward`` gets a tensor.

    Args:
        temperature: ``t > 0``.
        tau_plus: Default class prior in ``[0, 1)``; ``forward`` may pass a per-anchor
            tensor instead.
        gather_distributed: Gather views (and a per-anchor ``tau_plus``) from every process.

    Examples:
        >>> import torch
        >>> loss_fn = DebiasedContrastiveLoss(temperature=0.5, tau_plus=0.1)
        >>> loss_fn(torch.randn(8, 16), torch.randn(8, 16)).ndim
        0
    """

    def __init__(
        self, temperature: float = 0.5, tau_plus: float = 0.1, gather_distributed: bool = False
    ) -> None:
        super().__init__()
        check_temperature(temperature)
        check_tau_plus(tau_plus)
        self.temperature = temperature
        self.tau_plus = tau_plus
        self.gather_distributed = _check_gather(gather_distributed)

    def forward(self, z_a: Tensor, z_b: Tensor, tau_plus: float | Tensor | None = None) -> Tensor:
        tau = self.tau_plus if tau_plus is None else _gather_tau(tau_plus, self.gather_distributed)
        z_a, z_b = _gather_pair(z_a, z_b, self.gather_distributed)
        return debiased_contrastive_loss(z_a, z_b, self.temperature, tau)


class HardNegativeLoss(DebiasedContrastiveLoss):
    """Hard-negative debiased loss (Robinson et al., 2021); see
    :func:`~dcl_cluster.losses.hard_negative_loss`.

    Implements Robinson et al., "Contrastive Learning with Hard Negative Samples",
    ICLR 2021.

    Args:
        temperature: ``t > 0``.
        tau_plus: Default class prior in ``[0, 1)``.
        beta: Hard-negative concentration, ``>= 0``.
        gather_distributed: Gather views from every process.

    Examples:
        >>> import torch
        >>> loss_fn = HardNegativeLoss(temperature=0.5, tau_plus=0.1, beta=1.0)
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> loss_fn(z_a, z_b, tau_plus=torch.full((16,), 0.05)).ndim  # per-anchor tau+
        0
    """

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(temperature, tau_plus, gather_distributed)
        check_beta(beta)
        self.beta = beta

    def forward(self, z_a: Tensor, z_b: Tensor, tau_plus: float | Tensor | None = None) -> Tensor:
        tau = self.tau_plus if tau_plus is None else _gather_tau(tau_plus, self.gather_distributed)
        z_a, z_b = _gather_pair(z_a, z_b, self.gather_distributed)
        return hard_negative_loss(z_a, z_b, self.temperature, tau, self.beta)


class DECClusteringLoss(nn.Module):
    """DEC divergence loss; see :func:`~dcl_cluster.losses.dec_clustering_loss`.

    Implements Xie et al., "Unsupervised Deep Embedding for Clustering Analysis"
    (DEC), ICML 2016, with the cluster-size exponent of METHOD.md 2.1.

    Args:
        size_exponent: Power of the cluster-size normalisation in the target (1 = DEC).
        gather_distributed: Gather ``q`` from every process so cluster frequencies
            ``f_k`` are counted over the global batch.
        target: ``"batch"``: sizes ``f`` from the (global) batch; ``"dataset"``: ``f`` is
            the dataset-wide ``prior`` passed to ``forward`` (DEC's full-dataset target,
            see :func:`~dcl_cluster.losses.target_distribution`); ``"prior"``: cluster sizes
            matched to ``prior`` (:func:`~dcl_cluster.losses.prior_matched_target`;
            ``size_exponent`` unused).

    Examples:
        >>> import torch
        >>> loss_fn = DECClusteringLoss(size_exponent=0.5)
        >>> q = torch.softmax(torch.randn(6, 3), dim=1)
        >>> float(loss_fn(q)) >= 0
        True
        >>> float(DECClusteringLoss(target="prior")(q, prior=torch.tensor([0.6, 0.3, 0.1]))) >= 0
        True
    """

    TARGETS = ("batch", "dataset", "prior")

    def __init__(self, size_exponent: float = 1.0, gather_distributed: bool = False, target: str = "batch") -> None:
        super().__init__()
        check_size_exponent(size_exponent)
        if target not in self.TARGETS:
            raise ValueError(f"target must be one of {self.TARGETS}, got {target!r}")
        self.size_exponent = size_exponent
        self.gather_distributed = _check_gather(gather_distributed)
        self.target = target

    def forward(self, q: Tensor, p: Tensor | None = None, prior: Tensor | None = None) -> Tensor:
        if self.gather_distributed:
            q = gather_with_grad(q)
            p = None if p is None else gather_with_grad(p.detach())
        if p is None and self.target != "batch":
            if prior is None:
                raise ValueError(f"target={self.target!r} needs the dataset-wide cluster prior: forward(q, prior=...)")
            if self.target == "dataset":
                p = target_distribution(q, self.size_exponent, cluster_sizes=prior)
            else:
                p = prior_matched_target(q, prior)
        return dec_clustering_loss(q, p, self.size_exponent)


class AnchorLoss(nn.Module):
    """Anchor loss (Sundareswaran et al., 2021); see :func:`~dcl_cluster.losses.anchor_loss`.

    Implements the anchor loss of Sundareswaran et al., "Cluster Analysis with Deep
    Embeddings and Contrastive Learning", arXiv 2109.12714, 2021.

    A per-sample mean: under DDP the averaged gradients are already those of the global
    batch, so there is nothing to gather.

    Examples:
        >>> import torch
        >>> q = torch.softmax(torch.randn(4, 3), dim=1)
        >>> abs(float(AnchorLoss()(q, q, q))) < 1e-6  # identical assignments: no loss
        True
    """

    def forward(self, q_clean: Tensor, q_a: Tensor, q_b: Tensor) -> Tensor:
        return anchor_loss(q_clean, q_a, q_b)


class ClusterContrastiveLoss(nn.Module):
    """Cluster-level contrastive loss of Contrastive Clustering (Li et al., 2021); see
    :func:`~dcl_cluster.losses.cluster_contrastive_loss`.

    Implements Li et al., "Contrastive Clustering", AAAI 2021.

    Args:
        temperature: Cluster-level temperature ``t_C > 0``.
        gather_distributed: Gather assignments from every process, so cluster vectors
            span the global batch.

    Examples:
        >>> import torch
        >>> y_a, y_b = torch.softmax(torch.randn(16, 4), 1), torch.softmax(torch.randn(16, 4), 1)
        >>> bool(torch.isfinite(ClusterContrastiveLoss(temperature=1.0)(y_a, y_b)))
        True
    """

    def __init__(self, temperature: float = 1.0, gather_distributed: bool = False) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature
        self.gather_distributed = _check_gather(gather_distributed)

    def forward(self, y_a: Tensor, y_b: Tensor) -> Tensor:
        y_a, y_b = _gather_pair(y_a, y_b, self.gather_distributed)
        return cluster_contrastive_loss(y_a, y_b, self.temperature)
