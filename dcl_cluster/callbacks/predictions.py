"""Results a person can look at after ``predict``: a CSV of every image's cluster and
confidence, ``report.html`` (one offline page of every cluster: :mod:`.html_report`), a
contact sheet of each cluster's most confident images and a random sample of the others,
with their file names, and the cluster sizes.

A drop-in Callback: it reads the predict batches ``(x, y, ...)`` and what ``predict_step``
returns (a dict with ``"cluster_probs"`` and/or ``"embeddings"``, or a tensor of embeddings);
without cluster probabilities it runs k-means on the embeddings. Image files come from the
datamodule's ``predict_paths`` and the thumbnails from its ``predict_dataset.images`` when it
has them (:class:`~dcl_cluster.data.LongTailDataModule` has both); otherwise rows are indexed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from dcl_cluster.callbacks.cluster_results import write_cluster_results
from dcl_cluster.callbacks.outputs import record_outputs
from dcl_cluster.callbacks.saved_features import save_predict_features
from dcl_cluster.cluster import KMeans

__all__ = ["ClusterPredictionWriter", "write_cluster_results"]


class ClusterPredictionWriter(Callback):
    """Write ``predictions.csv``, ``report.html``, ``clusters/cluster_<k>.png`` and
    ``clusters/cluster_sizes.png`` into ``output_dir`` at the end of ``trainer.predict``
    (global rank 0; one process sees only its own shard under DDP, so predict on one device).

    The report's summary names the data (the datamodule's ``hparams`` ``dataset`` and
    ``data_dir`` when it has them) and the encoder (the module's ``backbone``), and takes the
    class names and training class counts from the datamodule's ``class_names`` and
    ``train_class_counts``. When the module has a ``k_choice`` attribute or hyperparameter
    (a dict, see :func:`write_cluster_results`), the report shows how K was chosen.

    Args:
        output_dir: Folder of the files (created).
        num_clusters: k-means clusters when ``predict_step`` gives no ``cluster_probs``;
            default the module's ``hparams.num_clusters``, else 10.
        per_sheet: Images in each half of a cluster's contact sheet: its most confident
            ones, and a random sample of the others.
        per_group: Images in each of the three groups of a cluster in ``report.html``.
        thumbnail: Side of each thumbnail in pixels.
        save_features: Also write ``features.pt`` (the embeddings, float16; the files or
            small images; the head's clusters), which ``dcl-cluster recluster`` clusters
            again at another K in seconds (:mod:`dcl_cluster.recluster`).

    Attributes:
        files: The paths written by the last run.
    """

    def __init__(self, output_dir: str | os.PathLike, num_clusters: int | None = None, per_sheet: int = 15,
                 thumbnail: int = 96, per_group: int = 10, save_features: bool = True) -> None:
        if per_sheet < 1 or thumbnail < 4 or per_group < 1:
            raise ValueError(f"per_sheet and per_group must be >= 1 and thumbnail >= 4, got {per_sheet}, "
                             f"{per_group} and {thumbnail}")
        self.output_dir = Path(output_dir)
        self.num_clusters = num_clusters
        self.save_features = save_features
        self.per_sheet = per_sheet
        self.per_group = per_group
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
            how = f"the cluster head's most probable cluster (K = {probs.shape[1]})"
        elif self._embeddings:
            x = torch.cat(self._embeddings)
            k = self.num_clusters or getattr(pl_module, "hparams", {}).get("num_clusters")
            k = min(k if isinstance(k, int) and k >= 2 else 10, len(x))
            km = KMeans(k, n_init=3, seed=0).fit(x)
            clusters = torch.as_tensor(km.labels_)
            distances = torch.cdist(x, km.cluster_centers_.float())  # (N, K): nearer = more confident
            confidence = torch.softmax(-distances, dim=1).max(1).values
            how = f"k-means on the embeddings (K = {k})"
        else:
            raise ValueError("ClusterPredictionWriter needs predict_step to return cluster_probs or embeddings")
        labels = torch.cat(self._labels) if self._labels else None
        if labels is not None and len(labels) != len(clusters):
            labels = None
        dm = getattr(trainer, "datamodule", None)
        paths = getattr(dm, "predict_paths", None)
        dataset = getattr(dm, "predict_dataset", None)
        images = getattr(dataset, "images", None)
        k_choice = getattr(pl_module, "k_choice", None) or getattr(pl_module, "hparams", {}).get("k_choice")
        labelled = labels is not None and bool((labels >= 0).any())
        self.files = write_cluster_results(self.output_dir, clusters, confidence, labels,
                                           paths if paths is not None and len(paths) == len(clusters) else None,
                                           images if images is not None and len(images) == len(clusters) else None,
                                           self.per_sheet, self.thumbnail,
                                           summary={**_run_summary(trainer, pl_module), "clusters from": how},
                                           k_choice=k_choice if isinstance(k_choice, dict) else None,
                                           class_names=getattr(dm, "class_names", None) if labelled else None,
                                           class_counts=getattr(dm, "train_class_counts", None) if labelled else None,
                                           per_group=self.per_group)
        if self.save_features and self._embeddings:  # recluster tries another K on them in seconds
            head = getattr(pl_module, "cluster_head", None)
            self.files.append(save_predict_features(
                self.output_dir, torch.cat(self._embeddings),
                paths=paths if paths is not None and len(paths) == len(clusters) else None,
                images=images if images is not None and len(images) == len(clusters) else None, labels=labels,
                head_clusters=clusters if self._probs else None, head_confidence=confidence if self._probs else None,
                head_k=int(probs.shape[1]) if self._probs else None,
                metric="cosine" if getattr(head, "normalize_features", False) else "euclidean",
                summary=_run_summary(trainer, pl_module), k_choice=k_choice if isinstance(k_choice, dict) else None,
                class_names=getattr(dm, "class_names", None) if labelled else None,
                class_counts=getattr(dm, "train_class_counts", None) if labelled else None))
        record_outputs(self.output_dir, self.files)  # what the next predict into this folder replaces
        print(f"predictions of {len(clusters)} images in {len(torch.unique(clusters))} clusters written to "
              f"{self.output_dir / 'predictions.csv'}; browse them in {self.output_dir / 'report.html'} "
              f"(contact sheets and sizes in {self.output_dir / 'clusters'})", flush=True)


def _run_summary(trainer: Trainer, pl_module: LightningModule) -> dict[str, str]:
    """The data and the encoder of a predict run, as far as public attributes tell."""
    summary = {}
    hparams = getattr(getattr(trainer, "datamodule", None), "hparams", None) or {}
    if hparams.get("dataset"):
        summary["data"] = str(hparams["dataset"]) + (f": {hparams['data_dir']}" if hparams.get("data_dir") else "")
    backbone = getattr(pl_module, "backbone", None)
    if isinstance(backbone, torch.nn.Module):
        name = getattr(backbone, "name", None)
        summary["encoder"] = type(backbone).__name__ + (f" {name}" if isinstance(name, str) else "")
    if getattr(trainer, "ckpt_path", None):
        summary["checkpoint"] = str(trainer.ckpt_path)
    return summary
