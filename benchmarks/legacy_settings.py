"""The 0.1 flat objective settings (``contrastive``, ``tau_plus``, ``clustering``, ``gamma``,
``delta``, ...) and the 0.2 term lists, converted both ways, so that the ablation variants
and the result rows recorded before 0.2 keep their meaning."""

from __future__ import annotations

from typing import Any

#: the 0.1 defaults of the objective's settings
FLAT_DEFAULTS: dict[str, Any] = {
    "contrastive": "debiased", "temperature": 0.5, "tau_plus": 0.1, "tau_plus_warmup": 0.1, "tau_min": 1e-3,
    "tau_max": 0.5, "beta": 1.0, "clustering": "dec", "gamma": 1.0, "delta": 0.0, "size_exponent": 1.0,
    "dec_target": "batch", "dec_input": "clean", "cluster_temperature": 1.0,
}
#: 0.1 module arguments that 0.2 renamed
RENAMED = {"dec_alpha": "student_t_alpha"}


def terms_from_flat(settings: dict[str, Any]) -> list:
    """The 0.2 terms of 0.1 flat settings (keys not about the objective are ignored)."""
    from dcl_cluster.objectives import (
        AnchorConsistency,
        ClusterContrastive,
        DebiasedContrastive,
        DECClustering,
        HardNegativeContrastive,
        InfoNCE,
    )

    s = {**FLAT_DEFAULTS, **{k: v for k, v in settings.items() if k in FLAT_DEFAULTS}}
    tau = {k: s[k] for k in ("tau_plus", "tau_plus_warmup", "tau_min", "tau_max")}
    if s["contrastive"] == "info_nce":
        terms = [InfoNCE(temperature=s["temperature"])]
    elif s["contrastive"] == "debiased":
        terms = [DebiasedContrastive(temperature=s["temperature"], **tau)]
    else:
        terms = [HardNegativeContrastive(temperature=s["temperature"], beta=s["beta"], **tau)]
    if s["clustering"] == "dec":
        terms.append(DECClustering(s["gamma"], s["size_exponent"], s["dec_target"], s["dec_input"]))
    elif s["clustering"] == "cc":
        terms.append(ClusterContrastive(s["gamma"], s["cluster_temperature"]))
    if s["delta"] > 0:
        terms.append(AnchorConsistency(s["delta"]))
    return terms


def flat_from_terms(configs: list[dict]) -> dict[str, Any]:
    """The 0.1 flat settings of a list of term configs (``Objective.config()``)."""
    flat = dict(FLAT_DEFAULTS, clustering="none", delta=0.0)
    for config in configs:
        name, args = config["class_path"].rsplit(".", 1)[-1], dict(config["init_args"])
        if name in ("InfoNCE", "DebiasedContrastive", "HardNegativeContrastive"):
            flat["contrastive"] = {"InfoNCE": "info_nce", "DebiasedContrastive": "debiased"}.get(name, "hard_negative")
            flat.update({k: v for k, v in args.items() if k != "weight"})
        elif name == "DECClustering":
            flat.update(clustering="dec", gamma=args["weight"], size_exponent=args["size_exponent"],
                        dec_target=args["target"], dec_input=args["inputs"])
        elif name == "ClusterContrastive":
            flat.update(clustering="cc", gamma=args["weight"], cluster_temperature=args["temperature"])
        elif name == "AnchorConsistency":
            flat["delta"] = args["weight"]
        else:
            flat.setdefault("other_terms", []).append(config)
    return flat


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(objective settings, module arguments)`` of a 0.1-style override dict."""
    objective = {k: v for k, v in overrides.items() if k in FLAT_DEFAULTS}
    module = {RENAMED.get(k, k): v for k, v in overrides.items() if k not in FLAT_DEFAULTS}
    return objective, module
