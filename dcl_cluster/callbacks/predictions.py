"""Results a person can look at after ``predict``: a CSV of every image's cluster and
confidence, a contact sheet of each cluster's most confident images, and the cluster sizes.

A drop-in Callback: it reads the predict batches ``(x, y, ...)`` and what ``predict_step``
returns (a dict with ``"cluster_probs"`` and/or ``"embeddings"``, or a tensor of embeddings);
without cluster probabilities it runs k-means on the embeddings. Image files come from the
datamodule's ``predict_paths`` and the thumbnails from its ``predict_dataset.images`` when it
has them (:class:`~dcl_cluster.data.LongTailDataModule` has both); otherwise rows are indexed.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from matplotlib.figure import Figure

from dcl_cluster.cluster import KMeans

__all__ = ["ClusterPredictionWriter", "write_cluster_results"]


class ClusterPredictionWriter(Callback):
    """Write ``predictions.csv``, ``clusters/cluster_<k>.png`` and ``clusters/cluster_sizes.png``
    into ``output_dir`` at the end of ``trainer.predict`` (global rank 0; one process sees
    only its own shard under DDP, so predict on one device).

    Args:
        output_dir: Folder of the files (created).
        num_clusters: k-means clusters when ``predict_step`` gives no ``cluster_probs``;
            default the module's ``hparams.num_clusters``, else 10.
        per_sheet: Images on each cluster's contact sheet (its most confident ones).
        thumbnail: Side of each thumbnail in pixels.

    Attributes:
        files: The paths written by the last run.
    """

    def __init__(self, output_dir: str | os.PathLike, num_clusters: int | None = None, per_sheet: int = 25,
                 thumbnail: int = 64) -> None:
        if per_sheet < 1 or thumbnail < 4:
            raise ValueError(f"per_sheet must be >= 1 and thumbnail >= 4, got {per_sheet} and {thumbnail}")
        self.output_dir = Path(output_dir)
        self.num_clusters = num_clusters
        self.per_sheet = per_sheet
        self.thumbnail = thumbnail
        self.files: list[Path] = []
        self._probs: list[torch.Tensor] = []
        self._embeddings: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._probs, self._embeddings, self._labels = [], [], []

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx != 0:
            return
        if isinstance(outputs, dict):
            if "cluster_probs" in outputs:
                self._probs.append(outputs["cluster_probs"].detach().float().cpu())
            if "embeddings" in outputs:
                self._embeddings.append(outputs["embeddings"].detach().float().cpu())
        elif isinstance(outputs, torch.Tensor):
            self._embeddings.append(outputs.detach().float().cpu().flatten(1))
        labels = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        if isinstance(labels, torch.Tensor):
            self._labels.append(labels.detach().long().cpu().reshape(-1))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self._probs:
            probs = torch.cat(self._probs)
            clusters, confidence = probs.argmax(1), probs.max(1).values
        elif self._embeddings:
            x = torch.cat(self._embeddings)
            k = self.num_clusters or getattr(pl_module, "hparams", {}).get("num_clusters")
            k = min(k if isinstance(k, int) and k >= 2 else 10, len(x))
            km = KMeans(k, n_init=3, seed=0).fit(x)
            clusters = torch.as_tensor(km.labels_)
            distances = torch.cdist(x, km.cluster_centers_.float())  # (N, K): nearer = more confident
            confidence = torch.softmax(-distances, dim=1).max(1).values
        else:
            raise ValueError("ClusterPredictionWriter needs predict_step to return cluster_probs or embeddings")
        labels = torch.cat(self._labels) if self._labels else None
        if labels is not None and len(labels) != len(clusters):
            labels = None
        dm = getattr(trainer, "datamodule", None)
        paths = getattr(dm, "predict_paths", None)
        dataset = getattr(dm, "predict_dataset", None)
        images = getattr(dataset, "images", None)
        self.files = write_cluster_results(self.output_dir, clusters, confidence, labels,
                                           paths if paths is not None and len(paths) == len(clusters) else None,
                                           images if images is not None and len(images) == len(clusters) else None,
                                           self.per_sheet, self.thumbnail)
        print(f"predictions of {len(clusters)} images in {len(torch.unique(clusters))} clusters written to "
              f"{self.output_dir / 'predictions.csv'} (contact sheets and sizes in {self.output_dir / 'clusters'})",
              flush=True)


def write_cluster_results(output_dir: str | os.PathLike, clusters: torch.Tensor, confidence: torch.Tensor,
                          labels: torch.Tensor | None = None, paths: list[str] | None = None, images: Any = None,
                          per_sheet: int = 25, thumbnail: int = 64) -> list[Path]:
    """Write ``predictions.csv`` (``path`` or ``index``, ``cluster``, ``confidence``, and ``label``
    when any label is >= 0), one contact sheet per non-empty cluster (its ``per_sheet`` most
    confident images, from ``images[i]``, uint8 ``(C, H, W)``) and the cluster-size chart.
    Returns the files written."""
    out = Path(output_dir)
    (out / "clusters").mkdir(parents=True, exist_ok=True)
    clusters, confidence = clusters.reshape(-1).long(), confidence.reshape(-1).float()
    with_labels = labels is not None and bool((labels >= 0).any())
    csv_path = out / "predictions.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path" if paths is not None else "index", "cluster", "confidence"]
                        + (["label"] if with_labels else []))
        for i, (c, p) in enumerate(zip(clusters.tolist(), confidence.tolist(), strict=True)):
            row = [paths[i] if paths is not None else i, c, f"{p:.4f}"]
            if with_labels:
                row.append(int(labels[i]) if labels[i] >= 0 else "")
            writer.writerow(row)
    files = [csv_path]
    sizes = torch.bincount(clusters)
    order = [int(k) for k in torch.argsort(sizes, descending=True, stable=True) if sizes[k] > 0]
    files.append(_save(_sizes_figure(sizes, order), out / "clusters" / "cluster_sizes.png"))
    if images is not None:
        for k in order:
            members = torch.nonzero(clusters == k).flatten()
            best = members[torch.argsort(confidence[members], descending=True, stable=True)][:per_sheet]
            fig = _contact_sheet([images[int(i)] for i in best], confidence[best].tolist(),
                                 f"cluster {k}: {int(sizes[k])} images" + (f" (the {len(best)} most confident)"
                                                         if len(best) < int(sizes[k]) else ""), thumbnail)
            files.append(_save(fig, out / "clusters" / f"cluster_{k:03d}.png"))
    return files


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def _sizes_figure(sizes: torch.Tensor, order: list[int]) -> Figure:
    fig = Figure(figsize=(max(4.0, 0.3 * len(order) + 2), 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(len(order)), [int(sizes[k]) for k in order], color=matplotlib.colormaps["tab10"](0))
    ax.set_xticks(range(len(order)), [str(k) for k in order], fontsize=7, rotation=90 if len(order) > 20 else 0)
    ax.set_xlabel("cluster (largest first)")
    ax.set_ylabel("images")
    ax.set_title(f"{int(sizes.sum())} images in {len(order)} clusters")
    return fig


def _thumbnail(image: Any, side: int) -> np.ndarray:
    from PIL import Image

    array = torch.as_tensor(image).detach().cpu()
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.permute(1, 2, 0)  # (H, W, C)
    array = array.numpy()
    if array.dtype != np.uint8:
        array = np.clip(array * (255 if array.max() <= 1 else 1), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    pil = Image.fromarray(array).convert("RGB")
    pil.thumbnail((side, side)) if max(pil.size) > side else None
    scale = side / max(pil.size)
    pil = pil.resize((max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale))), Image.NEAREST)
    return np.asarray(pil)


def _contact_sheet(images: list[Any], confidence: list[float], title: str, side: int) -> Figure:
    cols = min(5, len(images))
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(1.3 * cols + 0.4, 1.3 * rows + 0.6), layout="constrained")
    fig.suptitle(title, fontsize=9)
    for n, (image, p) in enumerate(zip(images, confidence, strict=True)):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(_thumbnail(image, side), interpolation="nearest")
        ax.set_title(f"{p:.2f}", fontsize=7)
        ax.axis("off")
    return fig
