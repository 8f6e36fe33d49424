"""MiniClustering's re-weighted self-labelling as a term (METHOD.md 2.7), over
:func:`~dcl_cluster.losses.minicluster.minicluster_loss`."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from dcl_cluster.distributed import gather_with_grad, world_size
from dcl_cluster.losses.minicluster import minicluster_loss
from dcl_cluster.nn.heads import CosineHead
from dcl_cluster.objectives.base import Needs, Objective
from dcl_cluster.objectives.step import StepOutputs

__all__ = ["MiniClusterSelfLabel"]


class MiniClusterSelfLabel(Objective):
    """Self-labelling of the module's cosine head, each cluster weighted by how few
    mini-clusters it spans (MiniClustering: Li et al., ICLR 2026).

    The term owns a second cosine head of ``mini_clusters`` prototypes (``M``; default
    ``4 K``, MiniClustering's 40 for K = 10), initialised, like the module's head, at the
    k-means centres of the training features (k-means with ``M``). Both heads are sharp from
    the start when the module's ``cosine_scale`` is high: MiniClustering starts its linear heads
    at 100x the normalised centres, so pass ``cosine_scale=100`` to the module (it warns below
    50: a cosine head's logits are bounded by its scale, and few images then pass 0.99). Each
    step runs both directions between the two augmented views: the targets come from one view
    (no gradient), the loss and the class weights from the other. A known number of clusters
    only (not ``num_clusters="auto"``).

    Args:
        weight: Weight in the sum.
        mini_clusters: ``M``; ``None``: ``4 K``.
        threshold: Confidence of a target (0.99).
        delta: Share above which a mini-cluster counts as part of a cluster (0.3).
        alpha: Weight of the mini head's class-balanced self-labelling (1).
        beta: Weight of the MSE between the heads' assignment similarities (0.2).
        mini_scale: Logit scale of the mini head (100).
    """

    name = "minicluster"

    def __init__(self, weight: float = 1.0, mini_clusters: int | None = None, threshold: float = 0.99,
                 delta: float = 0.3, alpha: float = 1.0, beta: float = 0.2, mini_scale: float = 100.0) -> None:
        super().__init__(weight)
        self.mini_clusters = mini_clusters
        self.threshold = threshold
        self.delta = delta
        self.alpha = alpha
        self.beta = beta
        self.mini_scale = mini_scale
        self.mini_head: CosineHead | None = None
        self._k: int | None = None
        self._epoch_counts: Tensor | None = None  # argmax counts of the cluster head in this epoch
        self._warned = False
        self._gather = True  # whether the module's logits span the global batch (its gather_distributed)

    def check(self) -> None:
        super().check()
        if self.mini_clusters is not None and (isinstance(self.mini_clusters, bool)
                                               or not isinstance(self.mini_clusters, int) or self.mini_clusters < 2):
            raise ValueError(f"mini_clusters must be an integer >= 2 (or None for 4 K), got {self.mini_clusters!r}")
        if not isinstance(self.threshold, (int, float)) or not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if not isinstance(self.delta, (int, float)) or not 0 <= self.delta < 1:
            raise ValueError(f"delta must be in [0, 1), got {self.delta!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.mini_scale, (int, float)) or not self.mini_scale > 0:
            raise ValueError(f"mini_scale must be a number > 0, got {self.mini_scale!r}")

    def needs(self) -> Needs:
        return Needs(head=("cosine",), clustering=True, num_clusters=True)

    def build(self, num_clusters: int | None) -> None:
        self._k = num_clusters

    def _make_head(self, dim: int, device: torch.device | str = "cpu") -> None:
        m = self.mini_clusters or 4 * int(self._k)
        self.mini_head = CosineHead(dim, m, scale=self.mini_scale).to(device)

    def on_setup(self, module: nn.Module) -> None:
        # before configure_optimizers: the mini head's prototypes train with everything else
        if module.cluster_head is None:
            raise ValueError("MiniClusterSelfLabel needs a known number of clusters (its mini head joins the "
                             "optimizer at setup): set num_clusters to an integer, not 'auto'")
        self._gather = bool(module.hparams.get("gather_distributed", True))
        scale = module.hparams.get("cosine_scale", 10.0)
        if scale < 50:
            warnings.warn(f"MiniClusterSelfLabel with cosine_scale={scale}: the cluster head's logits are bounded by "
                          "it and few images pass the 0.99 confidence; MiniClustering starts its heads at 100x "
                          "(cosine_scale=100)", UserWarning, stacklevel=2)
        if self.mini_head is None:
            self._make_head(module.cluster_head.centroids.shape[1], module.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # a checkpoint's head: rebuild it
        saved = state_dict.get(prefix + "mini_head.centroids")
        if saved is not None and (self.mini_head is None or self.mini_head.centroids.shape != saved.shape):
            self.mini_clusters = int(saved.shape[0])
            self._make_head(int(saved.shape[1]), saved.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def on_fit_start(self, module: nn.Module) -> None:
        self._epoch_counts, self._warned = None, False

    def on_train_epoch_end(self, module: nn.Module) -> None:
        """Warn (once per fit) when the cluster head gave no image of an epoch to some cluster:
        the weights favour clusters that span few mini-clusters, and on a long tail they can
        empty one (counted over the global batches of the epoch)."""
        counts, self._epoch_counts = self._epoch_counts, None
        if counts is None or self._warned:
            return
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if empty:
            self._warned = True
            warnings.warn(f"MiniClusterSelfLabel: in epoch {module.current_epoch} the cluster head assigned no "
                          f"training image to cluster(s) {empty} of {len(counts)} (argmax over both views): the "
                          "re-weighted self-labelling has emptied them; lower the learning rate or the "
                          "cosine_scale, or pick another clustering term", UserWarning, stacklevel=2)

    def kmeans_heads(self) -> list[nn.Module]:
        return [self.mini_head] if self.mini_head is not None and not self.mini_head.ready else []

    def forward(self, step: StepOutputs) -> Tensor:
        if self.mini_head is None or not self.mini_head.ready:
            raise ValueError("MiniClusterSelfLabel's mini head is not initialised: train it inside "
                             "DebiasedClusterModule (its on_setup builds it, the module's k-means places it)")
        mini_a, mini_b = self.mini_head(step.h_a), self.mini_head(step.h_b)  # this process's rows
        if self._gather and world_size() > 1:  # the module's logits span the global batch: so must these
            mini_a, mini_b = gather_with_grad(mini_a), gather_with_grad(mini_b)
        la, lb = step.logits["a"], step.logits["b"]
        with torch.no_grad():
            counts = torch.bincount(torch.cat([la, lb]).argmax(1), minlength=la.shape[1])
            self._epoch_counts = counts if self._epoch_counts is None else self._epoch_counts + counts
        args = (self.threshold, self.delta, self.alpha, self.beta)
        return 0.5 * (minicluster_loss(la.detach(), lb, mini_a.detach(), mini_b, *args)
                      + minicluster_loss(lb.detach(), la, mini_b.detach(), mini_a, *args))

