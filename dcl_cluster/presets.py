"""The presets of METHOD.md 2.4 as data: each a list of objective terms.

``examples/configs/method/<name>.yaml`` holds the same terms as ``class_path`` lists for the
CLI (a test keeps the two equal); in Python, ``preset(name)["objectives"]`` is a fresh list
ready to edit, and ``DebiasedClusterModule.from_preset(name, **overrides)`` builds the module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dcl_cluster.objectives import (
    AnchorConsistency,
    ClusterContrastive,
    ConfidentSelfLabel,
    DebiasedContrastive,
    DECClustering,
    InfoNCE,
    Objective,
    P2OTPseudoLabels,
    SCANConsistency,
    WarmupOnly,
)

__all__ = ["PRESETS", "preset"]

#: name -> a function returning the preset's terms (fresh instances on every call)
PRESETS: dict[str, Callable[[], list[Objective]]] = {
    # InfoNCE only; clusters come from k-means on features at evaluation.
    "simclr": lambda: [InfoNCE()],
    # The debiased loss of Chuang et al. with a constant class prior.
    "dcl": lambda: [DebiasedContrastive(tau_plus=0.1)],
    # Contrastive Clustering: InfoNCE + the cluster-level loss on a softmax head.
    "cc": lambda: [InfoNCE(), ClusterContrastive(temperature=1.0)],
    # The second seed: InfoNCE + DEC on the clean view + the anchor loss, all weights 1.
    "sic": lambda: [InfoNCE(), DECClustering(size_exponent=1.0, inputs="clean"), AnchorConsistency()],
    # The main seed: per-anchor tau+ from the cluster prior + DEC on the clean view, with the
    # target's cluster sizes matched to that prior and the anchor loss (chosen by the
    # ablations in docs/benchmarks.md; 0.1.0 used per-batch targets, size_exponent 0.5, no anchor).
    "dcl_cluster": lambda: [DebiasedContrastive(tau_plus="cluster_prior"), DECClustering(target="prior"),
                            AnchorConsistency()],
    # P²OT's pseudo-labels (cosine head, partial transport with a trust ramp) beside the debiased
    # loss with the cluster-prior tau+: the two ideas combined (beyond both papers).
    "p2ot": lambda: [DebiasedContrastive(tau_plus="cluster_prior"), P2OTPseudoLabels()],
    # P²OT as its paper trains it: its term alone once the (contrastive) warm-up is over.
    "p2ot_alone": lambda: [WarmupOnly(DebiasedContrastive(tau_plus=0.1)), P2OTPseudoLabels()],
    # SCAN on this package's warm-up: InfoNCE as the pretext, then neighbour consistency for the
    # first half of the clustering phase and confident self-labelling for the second.
    "scan": lambda: [WarmupOnly(InfoNCE()), SCANConsistency(stop=0.5), ConfidentSelfLabel(start=0.5)],
    # SCAN with the long-tail form: KL of the mean assignment to the estimated cluster prior.
    "scan_prior": lambda: [WarmupOnly(InfoNCE()), SCANConsistency(prior="cluster_prior", stop=0.5),
                           ConfidentSelfLabel(start=0.5)],
}


def preset(name: str) -> dict[str, Any]:
    """The module arguments of preset ``name`` (METHOD.md 2.4): ``{"objectives": [terms]}``.

    ``simclr``: InfoNCE only (Chen et al., ICML 2020); ``dcl``: the debiased loss with a
    constant ``tau+`` (Chuang et al., NeurIPS 2020); ``cc``: Contrastive Clustering (Li et
    al., AAAI 2021); ``sic``: InfoNCE + DEC + anchor loss (Sundareswaran et al., arXiv
    2109.12714); ``dcl_cluster``: the debiased loss with a per-anchor cluster-prior ``tau+``
    and DEC (Xie et al., ICML 2016) toward prior-matched targets, plus the anchor loss;
    ``p2ot``: the debiased loss beside P²OT's pseudo-labels (Zhang et al., ICLR 2024);
    ``p2ot_alone``: P²OT's term alone after a debiased contrastive warm-up; ``scan``: SCAN's
    neighbour consistency then self-labelling after an InfoNCE warm-up (Van Gansbeke et al.,
    ECCV 2020); ``scan_prior``: the same with the KL-to-prior form for long tails.

    Args:
        name: One of :data:`PRESETS`.

    Returns:
        Keyword arguments of :class:`~dcl_cluster.module.DebiasedClusterModule`; the terms
        are new instances, safe to edit.

    Raises:
        ValueError: an unknown name.

    Examples:
        >>> [type(term).__name__ for term in preset("dcl_cluster")["objectives"]]
        ['DebiasedContrastive', 'DECClustering', 'AnchorConsistency']
        >>> sorted(PRESETS)
        ['cc', 'dcl', 'dcl_cluster', 'p2ot', 'p2ot_alone', 'scan', 'scan_prior', 'sic', 'simclr']
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return {"objectives": PRESETS[name]()}
