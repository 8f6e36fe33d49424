"""What one training step produces and the checks on the objective's settings, apart from
the LightningModule that uses them (METHOD.md 2.4)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dcl_cluster.losses.clustering import check_size_exponent
from dcl_cluster.losses.contrastive import check_tau_plus, check_temperature
from dcl_cluster.losses.modules import DECClusteringLoss

__all__ = ["StepOutputs", "validate_objective", "check_num_clusters", "check_finite", "step_metrics"]

_CONTRASTIVE = ("info_nce", "debiased", "hard_negative")
_CLUSTERING = ("none", "dec", "cc")
_TAU_MODES = ("uniform", "cluster_prior")


@dataclass
class StepOutputs:
    """What one forward of a training batch produced; ``q_*`` are None while the
    clustering terms are off, ``*_clean`` when the batch has no clean view."""

    h_a: Tensor
    h_b: Tensor
    z_a: Tensor
    z_b: Tensor
    h_clean: Tensor | None = None
    q_a: Tensor | None = None
    q_b: Tensor | None = None
    q_clean: Tensor | None = None


def validate_objective(hp: Any) -> None:
    """Raise ``ValueError`` naming the first setting of the objective that is out of range."""
    if hp.contrastive not in _CONTRASTIVE:
        raise ValueError(f"contrastive must be one of {_CONTRASTIVE}, got {hp.contrastive!r}")
    if hp.clustering not in _CLUSTERING:
        raise ValueError(f"clustering must be one of {_CLUSTERING}, got {hp.clustering!r}")
    check_temperature(hp.temperature)
    check_temperature(hp.cluster_temperature)
    if isinstance(hp.tau_plus, str):
        if hp.tau_plus not in _TAU_MODES:
            raise ValueError(f"tau_plus must be a float in [0, 1) or one of {_TAU_MODES}, got {hp.tau_plus!r}")
        if hp.tau_plus == "cluster_prior" and hp.clustering == "none":
            raise ValueError("tau_plus='cluster_prior' needs a cluster head: set clustering to 'dec' or 'cc'")
    else:
        check_tau_plus(hp.tau_plus)
    check_tau_plus(hp.tau_plus_warmup)
    if not 0 <= hp.tau_min <= hp.tau_max < 1:
        raise ValueError(f"need 0 <= tau_min <= tau_max < 1, got tau_min={hp.tau_min}, tau_max={hp.tau_max}")
    if not 0 <= hp.prior_momentum <= 1:
        raise ValueError(f"prior_momentum must be in [0, 1], got {hp.prior_momentum}")
    dec_target = hp.get("dec_target", "batch")
    if dec_target not in DECClusteringLoss.TARGETS:
        raise ValueError(f"dec_target must be one of {DECClusteringLoss.TARGETS}, got {dec_target!r}")
    if dec_target != "batch" and hp.clustering != "dec":
        raise ValueError(f"dec_target={dec_target!r} sets the DEC target: it needs clustering='dec', "
                         f"got clustering={hp.clustering!r}")
    for name in ("gamma", "delta", "beta"):
        if not math.isfinite(hp[name]) or hp[name] < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {hp[name]}")
    check_size_exponent(hp.size_exponent)
    if hp.dec_input not in ("clean", "views"):
        raise ValueError(f"dec_input must be 'clean' or 'views', got {hp.dec_input!r}")
    if hp.get("detach_cluster_input") and hp.clustering == "none":
        raise ValueError("detach_cluster_input=True needs a cluster head: set clustering to 'dec' or 'cc'")
    if hp.delta > 0 and hp.clustering == "none":
        raise ValueError(f"delta={hp.delta} (anchor loss) needs a cluster head: set clustering to 'dec' or 'cc'")
    if hp.warmup_epochs < 0 or hp.lr_warmup_epochs < 0:
        raise ValueError("warmup_epochs and lr_warmup_epochs must be >= 0, got "
                         f"{hp.warmup_epochs} and {hp.lr_warmup_epochs}")
    if hp.num_clusters is not None:
        check_num_clusters(hp.num_clusters)


def check_num_clusters(k: int) -> None:
    """Raise ``ValueError`` unless ``k`` is an integer >= 2."""
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"num_clusters must be an integer >= 2, got {k!r}")


def check_finite(loss: Tensor, terms: dict[str, tuple[float, Tensor]], where: str) -> None:
    """Stop with ``FloatingPointError`` naming the step and the term(s) when ``loss`` is not finite."""
    if torch.isfinite(loss):
        return
    bad = [name for name, (_, value) in terms.items() if not torch.isfinite(value)]
    values = {name: float(value.detach()) for name, (_, value) in terms.items()}
    raise FloatingPointError(
        f"non-finite loss at {where}: term(s) {bad or list(terms)} = {values}; "
        "lower the learning rate or raise the temperature"
    )


def step_metrics(terms: dict[str, tuple[float, Tensor]], tau: float | Tensor | None, prior: Tensor) -> dict:
    """What a training step logs besides the loss: every term, ``tau+`` (mean, and min/max
    when per anchor) and the normalised entropy of the cluster-size prior (1 = equal sizes)."""
    out: dict = {f"train/{name}": value for name, (_, value) in terms.items()}
    if isinstance(tau, Tensor):
        out.update({"train/tau_plus_mean": tau.mean(), "train/tau_plus_min": tau.min(),
                    "train/tau_plus_max": tau.max()})
    elif tau is not None:
        out["train/tau_plus_mean"] = float(tau)
    if prior.numel():
        pi = prior.clamp_min(1e-12)
        out["train/cluster_size_entropy"] = -(pi * pi.log()).sum() / math.log(pi.numel())
    return out
