"""Heads on top of backbone features: the projector of the contrastive loss and the
cluster heads (DEC centroids with a Student-t kernel, or a softmax head as in CC)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dcl_cluster.losses import student_t_assignment

__all__ = ["ProjectionHead", "MLPProjectionHead", "ClusterHead"]

Block = tuple[int, int, "nn.Module | None", "nn.Module | None"]


class ProjectionHead(nn.Module):
    """A head composed of ``(in, out, norm, activation)`` blocks, each a Linear layer
    followed by the optional normalisation and activation modules.

    The composition follows lightly's heads; a Linear layer followed by a norm has no bias.

    Args:
        blocks: ``(in_dim, out_dim, norm or None, activation or None)`` per Linear layer.

    Examples:
        >>> head = ProjectionHead([(512, 256, nn.BatchNorm1d(256), nn.ReLU()), (256, 128, None, None)])
        >>> head(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("blocks must hold at least one (in, out, norm, activation) block")
        layers: list[nn.Module] = []
        for in_dim, out_dim, norm, activation in blocks:
            layers.append(nn.Linear(in_dim, out_dim, bias=norm is None))
            layers += [m for m in (norm, activation) if m is not None]
        self.layers = nn.Sequential(*layers)
        self.out_dim = blocks[-1][1]

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)


class MLPProjectionHead(ProjectionHead):
    """SimCLR's projector: ``num_layers`` Linear layers, BN + ReLU between them.

    The nonlinear projection head of Chen et al., "A Simple Framework for Contrastive
    Learning of Visual Representations", ICML 2020 (two layers by default).

    Args:
        input_dim: Feature size of the backbone.
        hidden_dim: Width of the hidden layers.
        output_dim: Size of the projection ``z``.
        num_layers: Number of Linear layers (>= 1).
        batch_norm: Batch normalisation after each hidden layer.

    Examples:
        >>> head = MLPProjectionHead(512, hidden_dim=256, output_dim=128)
        >>> head(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 512,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        blocks: list[Block] = [
            (dims[i], dims[i + 1], nn.BatchNorm1d(dims[i + 1]) if batch_norm else None, nn.ReLU(inplace=True))
            for i in range(num_layers - 1)
        ]
        blocks.append((dims[-2], dims[-1], None, None))
        super().__init__(blocks)


class ClusterHead(nn.Module):
    """Soft cluster assignments ``q`` (B, K) from backbone features.

    ``kind="student_t"``: learnable DEC centroids ``mu`` (K, d) and the Student-t kernel
    of METHOD.md 2.1, to be initialised by k-means (:meth:`init_centroids`).
    ``kind="softmax"``: a two-layer MLP with a softmax output, as the cluster projector of
    Contrastive Clustering (METHOD.md 2.3); ready from the start.

    Implements the clustering layer of Xie et al., "Unsupervised Deep Embedding for
    Clustering Analysis" (DEC), ICML 2016, and the cluster projector of Li et al.,
    "Contrastive Clustering", AAAI 2021.

    Args:
        input_dim: Feature size ``d``.
        num_clusters: ``K >= 2``.
        kind: ``"student_t"`` or ``"softmax"``.
        alpha: Student-t degrees of freedom.
        hidden_dim: Hidden width of the softmax head.

    Examples:
        >>> head = ClusterHead(input_dim=16, num_clusters=3, kind="student_t")
        >>> head.ready  # DEC centroids wait for k-means
        False
        >>> head.init_centroids(torch.randn(3, 16))
        >>> q = head(torch.randn(5, 16))
        >>> q.shape, torch.allclose(q.sum(dim=1), torch.ones(5))
        (torch.Size([5, 3]), True)
    """

    def __init__(
        self, input_dim: int, num_clusters: int, kind: str = "student_t", alpha: float = 1.0, hidden_dim: int = 512
    ) -> None:
        super().__init__()
        if num_clusters < 2:
            raise ValueError(f"num_clusters must be >= 2, got {num_clusters}")
        if kind not in ("student_t", "softmax"):
            raise ValueError(f"kind must be 'student_t' or 'softmax', got {kind!r}")
        self.kind = kind
        self.alpha = alpha
        self.num_clusters = num_clusters
        if kind == "student_t":
            self.centroids = nn.Parameter(torch.zeros(num_clusters, input_dim))
            self.register_buffer("initialized", torch.tensor(False))
        else:
            self.mlp = nn.Sequential(
                nn.Linear(input_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, num_clusters)
            )
            self.register_buffer("initialized", torch.tensor(True))

    @property
    def ready(self) -> bool:
        """Whether the head gives meaningful assignments (centroids initialised)."""
        return bool(self.initialized)

    @torch.no_grad()
    def init_centroids(self, centers: Tensor) -> None:
        """Set the DEC centroids, e.g. to k-means centres of training features."""
        if self.kind != "student_t":
            raise ValueError("init_centroids applies to kind='student_t' only")
        if centers.shape != self.centroids.shape:
            raise ValueError(f"centers must have shape {tuple(self.centroids.shape)}, got {tuple(centers.shape)}")
        self.centroids.copy_(centers.to(self.centroids))
        self.initialized.fill_(True)

    def forward(self, h: Tensor) -> Tensor:
        if self.kind == "student_t":
            return student_t_assignment(h, self.centroids, self.alpha)
        return torch.softmax(self.mlp(h).float(), dim=1)
