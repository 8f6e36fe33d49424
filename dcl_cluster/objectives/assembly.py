"""How the module assembles its terms into one loss: the cluster head and views they need
(read once, at ``setup``), the finiteness of their sum, and what a step logs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from dcl_cluster.objectives.base import VIEWS, Objective

__all__ = ["head_kind_for", "views_for", "check_num_clusters", "check_finite", "step_metrics"]


def head_kind_for(terms: Sequence[Objective], requested: str | None, kinds: Sequence[str]) -> str | None:
    """The cluster head the terms need: ``requested`` when every term accepts it, else the
    first kind all terms accept; ``None`` when no term needs a head and none was requested.

    Raises:
        ValueError: an unknown kind, or terms whose head kinds exclude each other.
    """
    if requested is not None and requested not in kinds:
        raise ValueError(f"cluster_head must be one of {list(kinds)} or None, got {requested!r}")
    wants = [(t, t.needs().head) for t in terms if t.needs().head is not None]
    if not wants:
        return requested
    specific = [accepted for _, accepted in wants if accepted]  # () accepts any head
    allowed = list(specific[0]) if specific else list(kinds)  # the first term's order is the preference
    for accepted in specific[1:]:
        allowed = [k for k in allowed if k in accepted]
    described = ", ".join(f"{type(t).__name__} ({'/'.join(a) or 'any head'})" for t, a in wants)
    if requested is not None:
        if requested not in allowed:
            raise ValueError(f"cluster_head={requested!r} does not suit the objective terms: {described}")
        return requested
    if not allowed:
        raise ValueError(f"the objective terms need cluster heads of different kinds: {described}")
    return allowed[0]


def views_for(terms: Sequence[Objective]) -> list[str]:
    """The extra views the terms need, in the batch's order (``clean``, ``neighbor``, ``strong``)."""
    needed = {v for t in terms for v in t.needs().views}
    unknown = needed - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown view(s) {sorted(unknown)} asked for by a term; views are {list(VIEWS)}")
    return [v for v in VIEWS if v in needed]


def check_num_clusters(k: int) -> None:
    """Raise ``ValueError`` unless ``k`` is an integer >= 2."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"num_clusters must be an integer >= 2, got {k!r}")


def check_finite(loss: Tensor, terms: dict[str, tuple[float, Tensor]], where: str) -> None:
    """Stop with ``FloatingPointError`` naming the step and the term(s) when ``loss`` is not
    finite (a host sync: the module calls it every ``log_every_n_steps`` steps, not every step)."""
    if bool(torch.isfinite(loss)):
        return
    bad = [name for name, (_, value) in terms.items() if not torch.isfinite(value)]
    values = {name: float(value.detach()) for name, (_, value) in terms.items()}
    raise FloatingPointError(
        f"non-finite loss at {where}: term(s) {bad or list(terms)} = {values}; "
        "lower the learning rate or raise the temperature"
    )


def step_metrics(terms: dict[str, tuple[float, Tensor]], extra: dict[str, Tensor | float],
                 prior: Tensor | None) -> dict[str, Tensor | float]:
    """What a training step logs besides the loss: every term, the terms' own values (such
    as ``tau+`` statistics) and the normalised entropy of the cluster-size prior (1 = equal sizes)."""
    out: dict[str, Tensor | float] = {f"train/{name}": value for name, (_, value) in terms.items()}
    out.update({f"train/{key}": value for key, value in extra.items()})
    if prior is not None and prior.numel():
        pi = prior.clamp_min(1e-12)
        out["train/cluster_size_entropy"] = -(pi * pi.log()).sum() / math.log(pi.numel())
    return out
