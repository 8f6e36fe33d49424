"""The closing report of a run: clustering scores of the final model on the long-tailed
train set and on the balanced held-out set, as a printed table and a JSON file; without
labels (an ``images`` folder), label-free diagnostics instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from dcl_cluster.cluster import KMeans
from dcl_cluster.cluster.diagnostics import label_free_diagnostics
from dcl_cluster.metrics import clustering_scores

__all__ = ["collect", "cluster_predictions", "diagnose_clustering", "evaluate_clustering", "final_report"]

_COLUMNS = {
    "nmi": "NMI", "acc": "ACC", "balanced_acc": "bACC", "macro_f1": "F1", "ari": "ARI",
    "head_acc": "head", "medium_acc": "medium", "tail_acc": "tail",
}


@torch.no_grad()
def collect(model: torch.nn.Module, loader: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Embeddings, cluster probabilities (None without a ready head) and labels of a loader."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    embeddings, probs, labels = [], [], []
    for batch in loader:
        out = model._embed(batch[0].to(device)) if hasattr(model, "_embed") else {"embeddings": model(batch[0])}
        embeddings.append(out["embeddings"].cpu())
        if "cluster_probs" in out:
            probs.append(out["cluster_probs"].cpu())
        labels.append(batch[1].cpu())
    model.train(was_training)
    return torch.cat(embeddings), (torch.cat(probs) if probs else None), torch.cat(labels)


def cluster_predictions(
    embeddings: torch.Tensor, probs: torch.Tensor | None, num_clusters: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Cluster ids from the head's argmax (when there are probabilities) and from k-means
    with ``num_clusters`` clusters on the embeddings."""
    predictions = {"head": probs.argmax(1)} if probs is not None else {}
    predictions["k-means"] = torch.as_tensor(KMeans(num_clusters, n_init=3, seed=seed).fit(embeddings).labels_)
    return predictions


def evaluate_clustering(
    model: torch.nn.Module, loader: Any, num_classes: int, class_counts: list[int] | None, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Scores of the cluster head's argmax (when the model has a ready head) and of k-means
    with ``num_classes`` clusters on the backbone embeddings."""
    embeddings, probs, labels = collect(model, loader)
    return {
        source: clustering_scores(labels, pred, class_counts=class_counts, num_classes=num_classes,
                                  num_clusters=int(max(num_classes, int(pred.max()) + 1)))
        for source, pred in cluster_predictions(embeddings, probs, num_classes, seed).items()
    }


def diagnose_clustering(model: torch.nn.Module, loader: Any, num_clusters: int,
                        seed: int = 0) -> dict[str, dict[str, Any]]:
    """Label-free diagnostics (:func:`~dcl_cluster.cluster.diagnostics.label_free_diagnostics`)
    of the head's argmax (when the model has a ready head) and of k-means with ``num_clusters``."""
    embeddings, probs, _ = collect(model, loader)
    return {
        source: label_free_diagnostics(embeddings, pred, probs if source == "head" else None, seed=seed)
        for source, pred in cluster_predictions(embeddings, probs, min(num_clusters, len(embeddings)), seed).items()
    }


def _report_num_clusters(model: torch.nn.Module) -> int:
    """The model's number of clusters (an int in its hyperparameters, or its head's width), else 10."""
    k = getattr(getattr(model, "hparams", {}), "get", lambda _: None)("num_clusters")
    head = getattr(model, "cluster_head", None)
    if not isinstance(k, int) and head is not None:
        k = getattr(head, "num_clusters", None)
    return k if isinstance(k, int) and k >= 2 else 10


def _sizes_cell(sizes: list[int], shown: int = 8) -> str:
    return " ".join(map(str, sizes[:shown])) + (f" ... ({len(sizes)})" if len(sizes) > shown else "")


def unlabelled_report(model: torch.nn.Module, datamodule: Any, log_dir: str | None) -> dict[str, Any]:
    """The closing table of a run without labels: cluster sizes, confidence, silhouette."""
    k = _report_num_clusters(model)
    splits = {"train": datamodule.train_eval_dataloader(), "held-out": datamodule.val_dataloader()}
    report = {split: diagnose_clustering(model, loader, k) for split, loader in splits.items()}
    table = Table(
        title=f"Final clustering (no labels): {k} clusters",
        caption="sizes: images per non-empty cluster, largest first; confidence: mean of each "
        "image's largest cluster probability (the head only); silhouette: on at most 2,000 "
        "images' features, in [-1, 1], higher is better separated.",
    )
    for header in ("set", "clusters", "used", "sizes", "confidence", "silhouette"):
        table.add_column(header, justify="left" if header in ("set", "clusters", "sizes") else "right")
    for split, by_source in report.items():
        for source, d in by_source.items():
            table.add_row(split, source, str(int(d["clusters_used"])), _sizes_cell(d["cluster_sizes"]),
                          _cell(d.get("mean_confidence")), _cell(d["silhouette"]))
    print_table(table)
    _write_report(report, log_dir, "diagnostics")
    return report


def held_out_caption(counts: list[int] | None, class_names: list[str]) -> str:
    """What the held-out split is: balanced, or its class counts and the classes it lacks."""
    if not counts:
        return ""
    if min(counts) == max(counts):
        return f"held-out is balanced ({counts[0]} images per class)."
    missing = [name for name, n in zip(class_names, counts, strict=False) if n == 0]
    present = [n for n in counts if n > 0]
    text = f"held-out class counts {max(present)}..{min(present)}"
    if missing:
        text += f"; no held-out image of {missing}: n/a where a score needs them"
    return text + "."


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return "n/a" if value != value else f"{value:.3f}"  # NaN: a class without images


def final_report(trainer: Any, model: torch.nn.Module, datamodule: Any) -> dict[str, Any] | None:
    """Evaluate the final model, print the table and write ``final_metrics.json`` in the
    log directory (label-free diagnostics when the datamodule's ``labelled`` is False). Runs
    on the global-zero process only."""
    log_dir = trainer.log_dir  # a collective under DDP: every process must ask
    if not trainer.is_global_zero or datamodule is None:
        return None
    if not getattr(datamodule, "labelled", True):
        return unlabelled_report(model, datamodule, log_dir)
    counts = list(datamodule.train_class_counts)
    splits = {"train (LT)": datamodule.train_eval_dataloader(), "held-out": datamodule.val_dataloader()}
    report = {
        split: evaluate_clustering(model, loader, datamodule.num_classes, counts) for split, loader in splits.items()
    }
    table = Table(
        title=f"Final clustering scores: {datamodule.num_classes} classes, train class counts "
        f"{max(counts)}..{min(counts)}",
        caption="ACC: Hungarian-matched accuracy; bACC: its per-class mean; F1: macro F1 under the "
        "same map; head / medium / tail: "
        "per-class ACC of the 30% / 40% / 30% most / middle / least frequent training classes. "
        + held_out_caption(getattr(datamodule, "val_class_counts", None), datamodule.class_names),
    )
    table.add_column("set")
    table.add_column("clusters")
    for header in _COLUMNS.values():
        table.add_column(header, justify="right")
    for split, by_source in report.items():
        for source, scores in by_source.items():
            table.add_row(split, source, *(_cell(scores.get(c)) for c in _COLUMNS))
    print_table(table)
    _write_report(report, log_dir, "scores")
    return report


def print_table(table: Table) -> None:
    """Print ``table`` whole: on a terminal at the terminal's width; into a pipe or a log file
    (where rich would assume 80 columns and cut cells to ``0.3…``) as wide as the table needs."""
    console = Console()
    if not console.is_terminal:
        needed = Measurement.get(console, console.options.update(width=1000), table).maximum
        console = Console(width=max(console.width, needed))
    console.print(table)


def _write_report(report: dict, log_dir: str | Path | None, what: str) -> None:
    """``final_metrics.json`` in the run's log directory (when it has one), and a line saying where."""
    if log_dir is None:
        return
    path = Path(log_dir) / "final_metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    Console().print(f"{what} written to {path}")
