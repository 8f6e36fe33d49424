"""The clustering terms of METHOD.md 2.1-2.3 (DEC, the anchor loss, Contrastive Clustering's
cluster-level loss) over the functions of :mod:`dcl_cluster.losses.clustering`."""

from __future__ import annotations

import torch
from torch import Tensor

from dcl_cluster.losses.checks import check_size_exponent, check_temperature
from dcl_cluster.losses.clustering import (
    anchor_loss,
    cluster_contrastive_loss,
    dec_clustering_loss,
    prior_matched_target,
    target_distribution,
)
from dcl_cluster.objectives.base import Needs, Objective
from dcl_cluster.objectives.step import StepOutputs

__all__ = ["DECClustering", "AnchorConsistency", "ClusterContrastive"]


class DECClustering(Objective):
    """DEC's divergence loss ``KL(p || q)`` on Student-t assignments (Xie et al., ICML 2016;
    METHOD.md 2.1), with a choice of target for long-tailed data.

    Args:
        weight: Weight in the sum (``gamma`` of METHOD.md 2.4).
        size_exponent: The target's cluster-size exponent (1 = DEC, 0 = sharpening only).
        target: ``"batch"``: cluster sizes from the (global) batch; ``"dataset"``: from the
            running cluster prior (DEC's dataset-wide target); ``"prior"``: a sharpened
            target whose cluster sizes follow that prior
            (:func:`~dcl_cluster.losses.prior_matched_target`; ``size_exponent`` unused).
        inputs: ``"clean"``: assignments of the un-augmented view (the datamodule serves
            it); ``"views"``: of both augmented views.

    Examples:
        >>> import torch
        >>> from dcl_cluster.objectives import StepOutputs
        >>> q = torch.softmax(torch.randn(6, 3), dim=1)
        >>> step = StepOutputs(torch.randn(6, 4), torch.randn(6, 4), q={"a": q, "b": q})
        >>> float(DECClustering(inputs="views")(step)) >= 0
        True
    """

    name = "clustering"
    TARGETS = ("batch", "dataset", "prior")
    INPUTS = ("clean", "views")

    def __init__(self, weight: float = 1.0, size_exponent: float = 1.0, target: str = "batch",
                 inputs: str = "clean") -> None:
        super().__init__(weight)
        self.size_exponent = size_exponent
        self.target = target
        self.inputs = inputs

    def check(self) -> None:
        super().check()
        check_size_exponent(self.size_exponent)
        if self.target not in self.TARGETS:
            raise ValueError(f"target must be one of {self.TARGETS}, got {self.target!r}")
        if self.inputs not in self.INPUTS:
            raise ValueError(f"inputs must be one of {self.INPUTS}, got {self.inputs!r}")

    def needs(self) -> Needs:
        return Needs(views=("clean",) if self.inputs == "clean" else (), head=("student_t",),
                     prior=self.target != "batch", clustering=True)

    def forward(self, step: StepOutputs) -> Tensor:
        q = step.q["clean"] if self.inputs == "clean" else torch.cat([step.q["a"], step.q["b"]])
        p = None
        if self.target == "dataset":
            p = target_distribution(q, self.size_exponent, cluster_sizes=step.cluster_prior)
        elif self.target == "prior":
            p = prior_matched_target(q, step.cluster_prior)
        return dec_clustering_loss(q, p, self.size_exponent)


class AnchorConsistency(Objective):
    """The anchor loss of Sundareswaran et al. (arXiv 2109.12714; METHOD.md 2.2): the clean
    image's (detached) assignment anchors both augmented views'.

    Args:
        weight: Weight in the sum (``delta`` of METHOD.md 2.4).

    Examples:
        >>> import torch
        >>> from dcl_cluster.objectives import StepOutputs
        >>> q = torch.softmax(torch.randn(4, 3), dim=1)
        >>> step = StepOutputs(torch.randn(4, 2), torch.randn(4, 2), q={"a": q, "b": q, "clean": q})
        >>> abs(float(AnchorConsistency()(step))) < 1e-6
        True
    """

    name = "anchor"

    def needs(self) -> Needs:
        return Needs(views=("clean",), head=(), clustering=True)

    def forward(self, step: StepOutputs) -> Tensor:
        return anchor_loss(step.q["clean"], step.q["a"], step.q["b"])


class ClusterContrastive(Objective):
    """The cluster-level contrastive loss of Contrastive Clustering (Li et al., AAAI 2021;
    METHOD.md 2.3) on a softmax head, with its entropy term against collapse.

    Args:
        weight: Weight in the sum.
        temperature: Cluster-level temperature ``t_C > 0``.

    Examples:
        >>> import torch
        >>> from dcl_cluster.objectives import StepOutputs
        >>> y = torch.softmax(torch.randn(16, 4), 1)
        >>> bool(torch.isfinite(ClusterContrastive()(StepOutputs(y, y, q={"a": y, "b": y}))))
        True
    """

    name = "clustering"

    def __init__(self, weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__(weight)
        self.temperature = temperature

    def check(self) -> None:
        super().check()
        check_temperature(self.temperature)

    def needs(self) -> Needs:
        return Needs(head=("softmax", "cosine"), clustering=True)

    def forward(self, step: StepOutputs) -> Tensor:
        return cluster_contrastive_loss(step.q["a"], step.q["b"], self.temperature)
