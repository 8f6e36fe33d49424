"""Network parts: backbones and heads."""

from dcl_cluster.nn.backbones import MLP, ResNet, SmallCNN, feature_dim
from dcl_cluster.nn.heads import (
    CosineHead,
    MLPProjectionHead,
    ProjectionHead,
    SoftmaxHead,
    StudentTHead,
    cluster_head,
)
from dcl_cluster.nn.packaged import PACKAGED, packaged_weights
from dcl_cluster.nn.pretrained import TimmBackbone, load_weights_file

__all__ = ["ResNet", "SmallCNN", "MLP", "TimmBackbone", "load_weights_file", "packaged_weights", "PACKAGED",
           "feature_dim", "ProjectionHead", "MLPProjectionHead", "StudentTHead", "SoftmaxHead", "CosineHead",
           "cluster_head"]
