"""The objectives of METHOD.md 1-2: pure functions on tensors, and thin module wrappers."""

from dcl_cluster.losses.checks import tensor_value_checks
from dcl_cluster.losses.clustering import (
    anchor_loss,
    cluster_contrastive_loss,
    dec_clustering_loss,
    prior_matched_target,
    student_t_assignment,
    student_t_logits,
    target_distribution,
)
from dcl_cluster.losses.contrastive import (
    debiased_contrastive_loss,
    hard_negative_loss,
    info_nce_loss,
)
from dcl_cluster.losses.minicluster import mini_cluster_weights, minicluster_loss
from dcl_cluster.losses.modules import (
    AnchorLoss,
    ClusterContrastiveLoss,
    DebiasedContrastiveLoss,
    DECClusteringLoss,
    HardNegativeLoss,
    InfoNCELoss,
)
from dcl_cluster.losses.pseudo_labels import (
    p2ot_loss,
    p2ot_rho,
    partial_ot_targets,
    soft_cross_entropy,
)
from dcl_cluster.losses.scan import confident_self_label_loss, scan_loss

__all__ = [
    "tensor_value_checks",
    "info_nce_loss",
    "debiased_contrastive_loss",
    "hard_negative_loss",
    "student_t_assignment",
    "student_t_logits",
    "target_distribution",
    "prior_matched_target",
    "dec_clustering_loss",
    "anchor_loss",
    "cluster_contrastive_loss",
    "partial_ot_targets",
    "p2ot_rho",
    "soft_cross_entropy",
    "p2ot_loss",
    "scan_loss",
    "mini_cluster_weights",
    "minicluster_loss",
    "confident_self_label_loss",
    "InfoNCELoss",
    "DebiasedContrastiveLoss",
    "HardNegativeLoss",
    "DECClusteringLoss",
    "AnchorLoss",
    "ClusterContrastiveLoss",
]
