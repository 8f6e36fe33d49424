"""Terms that run for part of training only: a contrastive pretext kept to the warm-up, as
SCAN and P²OT's own protocol train their clustering terms without it."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from dcl_cluster.objectives.base import Needs, Objective, build_objectives
from dcl_cluster.objectives.step import StepOutputs

__all__ = ["WarmupOnly"]


class WarmupOnly(Objective):
    """Run ``term`` in the warm-up only; from the clustering phase on, the other terms train alone.

    Args:
        term: The wrapped term (an ``Objective`` or its ``class_path`` config); its name,
            needs, logs and hooks are this term's.
        weight: Weight in the sum (multiplies the wrapped term's own weight).

    Examples:
        >>> from dcl_cluster.objectives import InfoNCE
        >>> pretext = WarmupOnly(InfoNCE())
        >>> pretext.name, pretext.needs().warmup
        ('contrastive', True)
    """

    def __init__(self, term: Objective | dict, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.term = term if isinstance(term, Objective) else build_objectives([term])[0]

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.term.name

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["init_args"]["term"] = self.term.config()
        return config

    def accepts(self, setting: str) -> bool:
        return super().accepts(setting) or self.term.accepts(setting)

    def replace(self, **changes: Any) -> Objective:
        """A copy with some settings changed: its own (``weight``, ``term``) or the wrapped term's."""
        own = {k: v for k, v in changes.items() if k in ("weight", "term")}
        inner = {k: v for k, v in changes.items() if k not in own}
        term = own.pop("term", self.term)
        if inner:
            term = (term if isinstance(term, Objective) else build_objectives([term])[0]).replace(**inner)
        return type(self)(term=term, weight=own.get("weight", self.weight))

    def needs(self) -> Needs:
        return dataclasses.replace(self.term.needs(), warmup=True)

    def check(self) -> None:
        super().check()
        self.term.check()

    def build(self, num_clusters: int | None) -> None:
        self.term.build(num_clusters)

    def on_setup(self, module: nn.Module) -> None:
        self.term.on_setup(module)

    def on_fit_start(self, module: nn.Module) -> None:
        self.term.on_fit_start(module)

    def on_train_epoch_start(self, module: nn.Module) -> None:
        self.term.on_train_epoch_start(module)

    def on_train_epoch_end(self, module: nn.Module) -> None:
        self.term.on_train_epoch_end(module)

    def logs(self) -> dict[str, Tensor | float]:
        return self.term.logs()

    def active(self, step: StepOutputs) -> bool:
        return self.term.active(step)

    def reads(self, epoch: int, clustering: bool) -> tuple[str, ...]:
        return () if clustering else self.term.reads(epoch, clustering)

    def forward(self, step: StepOutputs) -> Tensor:
        return self.term.weight * self.term(step)
