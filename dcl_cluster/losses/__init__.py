"""The objectives of METHOD.md 1-2: pure functions on tensors, and thin module wrappers."""

from dcl_cluster.losses.clustering import (
    anchor_loss,
    cluster_contrastive_loss,
    dec_clustering_loss,
    prior_matched_target,
    student_t_assignment,
    target_distribution,
)
from dcl_cluster.losses.contrastive import (
    debiased_contrastive_loss,
    hard_negative_loss,
    info_nce_loss,
)
from dcl_cluster.losses.modules import (
    AnchorLoss,
    ClusterContrastiveLoss,
    DebiasedContrastiveLoss,
    DECClusteringLoss,
    HardNegativeLoss,
    InfoNCELoss,
)

__all__ = [
    "info_nce_loss",
    "debiased_contrastive_loss",
    "hard_negative_loss",
    "student_t_assignment",
    "target_distribution",
    "prior_matched_target",
    "dec_clustering_loss",
    "anchor_loss",
    "cluster_contrastive_loss",
    "InfoNCELoss",
    "DebiasedContrastiveLoss",
    "HardNegativeLoss",
    "DECClusteringLoss",
    "AnchorLoss",
    "ClusterContrastiveLoss",
]
