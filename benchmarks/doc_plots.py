"""The plots of docs/benchmarks.md: per-class accuracy and cluster sizes against the classes,
drawn from the rows of benchmarks/results/*.json (used by write_docs)."""

from __future__ import annotations

import math
from pathlib import Path

#: the order of the methods in tables and plots (the ablations' variants come after, as they come)
METHOD_ORDER = ("k-means on PCA-50 pixels", "simclr", "dcl", "cc", "sic", "dcl_cluster", "p2ot", "p2ot_alone", "scan",
                "scan_prior")
MARKERS = "os^vDP*Xhd"


def _ordered(groups: dict) -> list:
    """``(style index, name, value)`` in METHOD_ORDER, then the rest (ablation variants) as they
    come; a method's index is its place in METHOD_ORDER, so it keeps its colour from plot to plot."""
    rank = {name: i for i, name in enumerate(METHOD_ORDER)}
    items = sorted(groups.items(), key=lambda kv: rank.get(kv[0], len(rank)))  # stable
    return [(rank.get(name, i), name, value) for i, (name, value) in enumerate(items)]


def _mean(values):
    return sum(values) / len(values)


def plot_per_class(rows, split, path: Path, budget="") -> None:
    """Per-class accuracy (Hungarian-matched recall) against class rank, one line per method
    (``budget``, e.g. ``"80 epochs"``, goes into the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = sorted({r["imbalance_factor"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(factors), figsize=(6.5 * len(factors), 4.5), squeeze=False)
    for ax, factor in zip(axes[0], factors, strict=True):
        groups: dict = {}
        for r in rows:
            if r["imbalance_factor"] == factor:
                groups.setdefault(r.get("variant") or r["preset"], []).append(r[split]["per_class_recall"])
        # tab10's ten distinct hues for the methods; tab20 (paired shades) only for more lines (ablation variants)
        colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
        for i, preset, recalls in _ordered(groups):
            counts = next(r for r in rows if r["imbalance_factor"] == factor and "train_class_counts" in r)
            order = sorted(range(len(recalls[0])), key=lambda c: -counts["train_class_counts"][c])
            mean = [sum(rec[c] for rec in recalls) / len(recalls) for c in order]
            style = {"linestyle": ":", "color": "grey"} if preset.startswith("k-means") else {
                "marker": MARKERS[i % len(MARKERS)], "ms": 3, "color": colours[i % len(colours)]}
            ax.plot(range(1, len(mean) + 1), mean, label=preset, **style)
        ax.set_title(f"CIFAR-10-LT, IF {factor:g}, {split} set" + (f", {budget}" if budget else ""))
        ax.set_xlabel("class rank by training frequency (1 = largest)")
        ax.set_ylabel("per-class accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_cluster_sizes(rows, path: Path, factor=100.0, budget="") -> None:
    """Cluster sizes against class sizes on the long-tailed train set, both sorted, one panel
    per method: does the tail survive? Empty clusters stay visible (symlog axis) and are counted
    in the panel's title (over all seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split, groups = "train", {}
    for r in rows:
        if r["imbalance_factor"] == factor and "cluster_sizes" in r.get(split, {}):
            groups.setdefault(r.get("variant") or r["preset"], []).append(r)
    if not groups:
        return
    cols = min(len(groups), 5)
    rows_ = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(2.9 * cols, 3.0 * rows_), sharey=True, squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, (_, name, runs) in zip(axes.flat, _ordered(groups), strict=False):
        classes = sorted(runs[0]["train_class_counts"], reverse=True)
        sizes = [sorted(r[split]["cluster_sizes"], reverse=True) for r in runs]
        ranks = range(1, len(classes) + 1)
        ax.plot(ranks, classes, "k-", label="classes")
        ax.plot(ranks, [_mean(col) for col in zip(*sizes, strict=True)], "o-", label="clusters (mean)")
        ax.fill_between(ranks, [min(col) for col in zip(*sizes, strict=True)],
                        [max(col) for col in zip(*sizes, strict=True)], alpha=0.25)
        ax.set_yscale("symlog", linthresh=10)  # a log scale that keeps empty clusters (0) on the plot
        ax.set_ylim(bottom=0)
        empty = sum(size == 0 for r in runs for size in r[split]["cluster_sizes"])
        empty_text = f"{empty} empty" + (" over the seeds" if len(runs) > 1 else "") if empty else ""
        detail = ", ".join(x for x in (runs[0][split]["source"], f"{len(runs)} seeds", budget, empty_text) if x)
        ax.set_title(f"{name}\n({detail})", fontsize=9)
        ax.set_xlabel("rank by size")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel(f"images ({split} set, IF {factor:g})")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
