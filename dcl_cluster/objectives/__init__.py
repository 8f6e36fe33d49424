"""The terms of the training objective (0.2): an :class:`Objective` base and one thin class per
term over a pure function of :mod:`dcl_cluster.losses`. A preset is a list of terms.

    from dcl_cluster import DebiasedClusterModule
    from dcl_cluster.objectives import DebiasedContrastive, DECClustering, AnchorConsistency

    model = DebiasedClusterModule(objectives=[
        DebiasedContrastive(tau_plus="cluster_prior"),
        DECClustering(target="prior"),
        AnchorConsistency(weight=1.0),
    ])
"""

from dcl_cluster.objectives.base import Needs, Objective, apply_term_settings, build_objectives
from dcl_cluster.objectives.clustering import AnchorConsistency, ClusterContrastive, DECClustering
from dcl_cluster.objectives.contrastive import DebiasedContrastive, HardNegativeContrastive, InfoNCE
from dcl_cluster.objectives.minicluster import MiniClusterSelfLabel
from dcl_cluster.objectives.pseudo_labels import P2OTPseudoLabels
from dcl_cluster.objectives.scan import ConfidentSelfLabel, SCANConsistency
from dcl_cluster.objectives.schedule import WarmupOnly
from dcl_cluster.objectives.step import StepOutputs

__all__ = [
    "Objective",
    "Needs",
    "StepOutputs",
    "build_objectives",
    "apply_term_settings",
    "InfoNCE",
    "DebiasedContrastive",
    "HardNegativeContrastive",
    "DECClustering",
    "AnchorConsistency",
    "ClusterContrastive",
    "P2OTPseudoLabels",
    "WarmupOnly",
    "SCANConsistency",
    "ConfidentSelfLabel",
    "MiniClusterSelfLabel",
]
