"""What one training step hands to every objective term: the forward's outputs, already
gathered across processes, and the module's shared state (cluster prior, schedule)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["StepOutputs"]


@dataclass
class StepOutputs:
    """The outputs of one training batch's forward.

    ``z_*``, ``q`` and ``logits`` span the global batch (gathered with gradients across
    processes when the module gathers), so a term computes the loss of the concatenated
    batch; ``h_*`` are this process's backbone features. The module forwards only the views
    some term reads in this epoch and phase (:meth:`Objective.reads`; ``"a"`` always), so
    ``z_b`` and ``h_b`` are ``None`` where no term reads view ``b`` (SCAN's stages). ``q`` and ``logits`` are keyed by
    view (``"a"``, ``"b"``, and ``"clean"``, ``"neighbor"``, ``"strong"`` when the batch has
    them) and empty outside the clustering phase; ``softmax(logits[v]) == q[v]``.

    Attributes:
        z_a: Projections of the first views, ``(B, d)``.
        z_b: Projections of the second views, ``(B, d)``, or ``None`` when view ``b`` was not forwarded.
        h_a: Backbone features of the first views (this process).
        h_b: Backbone features of the second views (this process).
        h_clean: Backbone features of the clean view, or ``None``.
        q: Soft cluster assignments per view, ``(B, K)`` each.
        logits: Cluster-head logits per view, ``(B, K)`` each.
        cluster_prior: The running cluster-size estimate ``(K,)``, or ``None`` without a head.
        progress: Fraction of the clustering phase done, in ``[0, 1]`` (0 in the warm-up).
        index: Dataset indices of this process's batch, or ``None``.
        epoch: The training epoch.
        views: The names of the views in this batch (``"a"``, ``"b"``, ...).
    """

    z_a: Tensor
    z_b: Tensor | None
    h_a: Tensor | None = None
    h_b: Tensor | None = None
    h_clean: Tensor | None = None
    q: dict[str, Tensor] = field(default_factory=dict)
    logits: dict[str, Tensor] = field(default_factory=dict)
    cluster_prior: Tensor | None = None
    progress: float = 0.0
    index: Tensor | None = None
    epoch: int = 0
    views: tuple[str, ...] = ("a", "b")

    @property
    def clustering(self) -> bool:
        """Whether the cluster head ran on this batch (the clustering phase)."""
        return bool(self.q)

    @property
    def q_a(self) -> Tensor | None:
        return self.q.get("a")

    @property
    def q_b(self) -> Tensor | None:
        return self.q.get("b")

    @property
    def q_clean(self) -> Tensor | None:
        return self.q.get("clean")
