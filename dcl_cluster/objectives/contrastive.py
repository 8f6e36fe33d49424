"""The instance-level contrastive terms (METHOD.md 1.1-1.4) over the functions of
:mod:`dcl_cluster.losses.contrastive`."""

from __future__ import annotations

import torch
from torch import Tensor

from dcl_cluster.losses.checks import check_beta, check_tau_plus, check_temperature
from dcl_cluster.losses.contrastive import debiased_contrastive_loss, hard_negative_loss, info_nce_loss
from dcl_cluster.objectives.base import Needs, Objective
from dcl_cluster.objectives.step import StepOutputs

__all__ = ["InfoNCE", "DebiasedContrastive", "HardNegativeContrastive"]

TAU_MODES = ("uniform", "cluster_prior")


class InfoNCE(Objective):
    """InfoNCE / NT-Xent of SimCLR (Chen et al., ICML 2020; METHOD.md 1.1) on the two views.

    Args:
        weight: Weight in the sum.
        temperature: ``t > 0``.

    Examples:
        >>> import torch
        >>> from dcl_cluster.objectives import StepOutputs
        >>> InfoNCE(temperature=0.5)(StepOutputs(torch.randn(8, 16), torch.randn(8, 16))).ndim
        0
    """

    name = "contrastive"

    def __init__(self, weight: float = 1.0, temperature: float = 0.5) -> None:
        super().__init__(weight)
        self.temperature = temperature

    def check(self) -> None:
        super().check()
        check_temperature(self.temperature)

    def forward(self, step: StepOutputs) -> Tensor:
        return info_nce_loss(step.z_a, step.z_b, self.temperature)


class DebiasedContrastive(Objective):
    """The debiased contrastive loss (Chuang et al., NeurIPS 2020; METHOD.md 1.2) with a
    constant, uniform or per-anchor cluster-prior ``tau+`` (METHOD.md 1.3, reconstruction).

    ``tau_plus="cluster_prior"``: ``tau+_i = clip(q_i . pi, tau_min, tau_max)`` from the
    anchor's soft assignment and the running cluster prior ``pi``; ``tau_plus_warmup``
    until the cluster head is ready. ``"uniform"``: ``1/K``.

    Args:
        weight: Weight in the sum.
        temperature: ``t > 0``.
        tau_plus: A float in ``[0, 1)``, ``"uniform"`` or ``"cluster_prior"``.
        tau_plus_warmup: The constant ``tau+`` of ``"cluster_prior"`` before the head is ready.
        tau_min: Lower clip of the per-anchor ``tau+``.
        tau_max: Upper clip of the per-anchor ``tau+`` (``< 1``).

    Examples:
        >>> import torch
        >>> from dcl_cluster.objectives import StepOutputs
        >>> term = DebiasedContrastive(tau_plus=0.1)
        >>> term(StepOutputs(torch.randn(8, 16), torch.randn(8, 16))).ndim
        0
    """

    name = "contrastive"

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float = 0.5,
        tau_plus: float | str = 0.1,
        tau_plus_warmup: float = 0.1,
        tau_min: float = 1e-3,
        tau_max: float = 0.5,
    ) -> None:
        super().__init__(weight)
        self.temperature = temperature
        self.tau_plus = tau_plus
        self.tau_plus_warmup = tau_plus_warmup
        self.tau_min = tau_min
        self.tau_max = tau_max
        self._last_tau: float | Tensor | None = None
        self.num_clusters: int | None = None

    def check(self) -> None:
        super().check()
        check_temperature(self.temperature)
        if isinstance(self.tau_plus, str):
            if self.tau_plus not in TAU_MODES:
                raise ValueError(f"tau_plus must be a float in [0, 1) or one of {TAU_MODES}, got {self.tau_plus!r}")
        else:
            check_tau_plus(self.tau_plus)
        check_tau_plus(self.tau_plus_warmup, "tau_plus_warmup")
        if not (isinstance(self.tau_min, (int, float)) and isinstance(self.tau_max, (int, float))
                and 0 <= self.tau_min <= self.tau_max < 1):
            raise ValueError(f"need 0 <= tau_min <= tau_max < 1, got tau_min={self.tau_min}, tau_max={self.tau_max}")

    def needs(self) -> Needs:
        if self.tau_plus == "cluster_prior":
            return Needs(head=(), prior=True)
        return Needs(num_clusters=self.tau_plus == "uniform")

    def build(self, num_clusters: int | None) -> None:
        self.num_clusters = num_clusters
        if self.tau_plus == "uniform" and num_clusters is None:
            raise ValueError("tau_plus='uniform' is 1/K: give the module num_clusters (or train with a datamodule "
                             "that knows its number of classes)")

    def tau_per_anchor(self, step: StepOutputs) -> float | Tensor:
        """``tau+`` for the ``2B`` anchors, ordered ``[a, b]`` (METHOD.md 1.3)."""
        if self.tau_plus == "uniform":
            return 1.0 / self.num_clusters
        if self.tau_plus == "cluster_prior":
            if not step.clustering or step.cluster_prior is None:
                return float(self.tau_plus_warmup)
            q = torch.cat([step.q["a"], step.q["b"]]).detach().float()  # (2B, K): no gradient through tau+
            return (q @ step.cluster_prior.float()).clamp(self.tau_min, self.tau_max)
        return float(self.tau_plus)

    def forward(self, step: StepOutputs) -> Tensor:
        tau = self._last_tau = self.tau_per_anchor(step)
        return debiased_contrastive_loss(step.z_a, step.z_b, self.temperature, tau)

    def logs(self) -> dict[str, Tensor | float]:
        tau = self._last_tau
        if isinstance(tau, Tensor):
            return {"tau_plus_mean": tau.mean(), "tau_plus_min": tau.min(), "tau_plus_max": tau.max()}
        return {} if tau is None else {"tau_plus_mean": float(tau)}


class HardNegativeContrastive(DebiasedContrastive):
    """The hard-negative debiased loss (Robinson et al., ICLR 2021; METHOD.md 1.4): negatives
    importance-weighted by ``s_ik^beta``; ``beta = 0`` is :class:`DebiasedContrastive`.

    Args:
        weight: Weight in the sum.
        temperature: ``t > 0``.
        tau_plus: A float in ``[0, 1)``, ``"uniform"`` or ``"cluster_prior"``.
        beta: Concentration on hard negatives, ``>= 0``.
        tau_plus_warmup: The constant ``tau+`` of ``"cluster_prior"`` before the head is ready.
        tau_min: Lower clip of the per-anchor ``tau+``.
        tau_max: Upper clip of the per-anchor ``tau+``.

    Examples:
        >>> import torch
        >>> from dcl_cluster.objectives import StepOutputs
        >>> HardNegativeContrastive(beta=1.0)(StepOutputs(torch.randn(8, 16), torch.randn(8, 16))).ndim
        0
    """

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float = 0.5,
        tau_plus: float | str = 0.1,
        beta: float = 1.0,
        tau_plus_warmup: float = 0.1,
        tau_min: float = 1e-3,
        tau_max: float = 0.5,
    ) -> None:
        super().__init__(weight, temperature, tau_plus, tau_plus_warmup, tau_min, tau_max)
        self.beta = beta

    def check(self) -> None:
        super().check()
        check_beta(self.beta)

    def forward(self, step: StepOutputs) -> Tensor:
        tau = self._last_tau = self.tau_per_anchor(step)
        return hard_negative_loss(step.z_a, step.z_b, self.temperature, tau, self.beta)

