"""Heads on top of backbone features: the projector of the contrastive loss and the
cluster heads (DEC centroids with a Student-t kernel, a softmax head as in CC, a cosine
classifier as in P²OT). Every cluster head returns logits ``(B, K)`` whose softmax is the
soft assignment ``q``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcl_cluster.losses import student_t_logits

__all__ = ["ProjectionHead", "MLPProjectionHead", "StudentTHead", "SoftmaxHead", "CosineHead", "cluster_head",
           "HEAD_KINDS"]

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


class _KMeansInitialised(nn.Module):
    """A cluster head whose prototypes start at k-means centres of training features."""

    def __init__(self, input_dim: int, num_clusters: int) -> None:
        super().__init__()
        if num_clusters < 2:
            raise ValueError(f"num_clusters must be >= 2, got {num_clusters}")
        self.num_clusters = num_clusters
        self.centroids = nn.Parameter(torch.zeros(num_clusters, input_dim))
        self.register_buffer("initialized", torch.tensor(False))
        self._ready: bool | None = False  # the buffer's value on the host; None: read it once

    @property
    def ready(self) -> bool:
        """Whether the head gives meaningful assignments (centroids initialised). Read from
        the device once after a load, then kept on the host: no device sync per step."""
        if self._ready is None:
            self._ready = bool(self.initialized)
        return self._ready

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = None

    @torch.no_grad()
    def init_centroids(self, centers: Tensor) -> None:
        """Set the centroids, e.g. to k-means centres of training features."""
        if centers.shape != self.centroids.shape:
            raise ValueError(f"centers must have shape {tuple(self.centroids.shape)}, got {tuple(centers.shape)}")
        self.centroids.copy_(centers.to(self.centroids))
        self.initialized.fill_(True)
        self._ready = True


class StudentTHead(_KMeansInitialised):
    """DEC's clustering layer (Xie et al., ICML 2016; METHOD.md 2.1): learnable centroids
    ``mu`` (K, d) and the Student-t kernel; logits are the log-kernel
    (:func:`~dcl_cluster.losses.student_t_logits`). Initialise by k-means
    (:meth:`init_centroids`) before use.

    Args:
        input_dim: Feature size ``d``.
        num_clusters: ``K >= 2``.
        alpha: Student-t degrees of freedom.

    Examples:
        >>> head = StudentTHead(input_dim=16, num_clusters=3)
        >>> head.ready  # centroids wait for k-means
        False
        >>> head.init_centroids(torch.randn(3, 16))
        >>> q = torch.softmax(head(torch.randn(5, 16)), dim=1)
        >>> q.shape, torch.allclose(q.sum(dim=1), torch.ones(5))
        (torch.Size([5, 3]), True)
    """

    kind = "student_t"

    def __init__(self, input_dim: int, num_clusters: int, alpha: float = 1.0) -> None:
        super().__init__(input_dim, num_clusters)
        self.alpha = alpha

    def forward(self, h: Tensor) -> Tensor:
        return student_t_logits(h, self.centroids, self.alpha)


class CosineHead(_KMeansInitialised):
    """A cosine classifier: ``scale * cos(h_i, mu_k)`` with normalised features and
    prototypes, as P²OT's head (Zhang et al., ICLR 2024; METHOD.md 2.5); prototypes start
    at k-means centres of the (normalised) training features.

    Args:
        input_dim: Feature size ``d``.
        num_clusters: ``K >= 2``.
        scale: Logit scale (10 in P²OT).

    Examples:
        >>> head = CosineHead(input_dim=16, num_clusters=3)
        >>> head.init_centroids(torch.randn(3, 16))
        >>> bool(head(torch.randn(5, 16)).abs().max() <= 10.0 + 1e-5)
        True
    """

    kind = "cosine"
    #: k-means for the initial prototypes runs on L2-normalised features
    normalize_features = True

    def __init__(self, input_dim: int, num_clusters: int, scale: float = 10.0) -> None:
        super().__init__(input_dim, num_clusters)
        if not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"scale must be a number > 0, got {scale!r}")
        self.scale = float(scale)

    def forward(self, h: Tensor) -> Tensor:
        h = F.normalize(h.float(), dim=1)
        return self.scale * h @ F.normalize(self.centroids.float(), dim=1).t()


class SoftmaxHead(ProjectionHead):
    """Contrastive Clustering's cluster projector (Li et al., AAAI 2021; METHOD.md 2.3): two
    Linear layers with a ReLU between them, built from :class:`ProjectionHead` blocks;
    logits out, ready from the start.

    Args:
        input_dim: Feature size ``d``.
        num_clusters: ``K >= 2``.
        hidden_dim: Hidden width.

    Examples:
        >>> head = SoftmaxHead(input_dim=16, num_clusters=3, hidden_dim=8)
        >>> head(torch.randn(5, 16)).shape, head.ready
        (torch.Size([5, 3]), True)
    """

    kind = "softmax"

    def __init__(self, input_dim: int, num_clusters: int, hidden_dim: int = 512) -> None:
        if num_clusters < 2:
            raise ValueError(f"num_clusters must be >= 2, got {num_clusters}")
        super().__init__([(input_dim, hidden_dim, None, nn.ReLU(inplace=True)), (hidden_dim, num_clusters, None, None)])
        self.num_clusters = num_clusters

    @property
    def ready(self) -> bool:
        return True

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h).float()


HEAD_KINDS = {"student_t": StudentTHead, "softmax": SoftmaxHead, "cosine": CosineHead}


def cluster_head(kind: str, input_dim: int, num_clusters: int, *, alpha: float = 1.0, hidden_dim: int = 512,
                 scale: float = 10.0) -> nn.Module:
    """The cluster head of ``kind`` (``"student_t"``, ``"softmax"`` or ``"cosine"``).

    Examples:
        >>> cluster_head("softmax", 16, 4, hidden_dim=8).kind
        'softmax'
    """
    if kind == "student_t":
        return StudentTHead(input_dim, num_clusters, alpha)
    if kind == "softmax":
        return SoftmaxHead(input_dim, num_clusters, hidden_dim)
    if kind == "cosine":
        return CosineHead(input_dim, num_clusters, scale)
    raise ValueError(f"cluster head kind must be one of {sorted(HEAD_KINDS)}, got {kind!r}")
