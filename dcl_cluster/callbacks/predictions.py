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

from dcl_cluster.callbacks.html_report import Thumbnails, cluster_members, write_html_report
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

    Attributes:
        files: The paths written by the last run.
    """

    def __init__(self, output_dir: str | os.PathLike, num_clusters: int | None = None, per_sheet: int = 15,
                 thumbnail: int = 96, per_group: int = 10) -> None:
        if per_sheet < 1 or thumbnail < 4 or per_group < 1:
            raise ValueError(f"per_sheet and per_group must be >= 1 and thumbnail >= 4, got {per_sheet}, "
                             f"{per_group} and {thumbnail}")
        self.output_dir = Path(output_dir)
        self.num_clusters = num_clusters
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


def write_cluster_results(output_dir: str | os.PathLike, clusters: torch.Tensor, confidence: torch.Tensor,
                          labels: torch.Tensor | None = None, paths: list[str] | None = None, images: Any = None,
                          per_sheet: int = 15, thumbnail: int = 96, *, summary: dict[str, Any] | None = None,
                          k_choice: dict[str, Any] | None = None, class_names: list[str] | None = None,
                          class_counts: list[int] | None = None, per_group: int = 10, seed: int = 0) -> list[Path]:
    """Write ``predictions.csv`` (``path`` or ``index``, ``cluster``, ``confidence``, and ``label``
    when any label is >= 0), ``report.html`` (:func:`~dcl_cluster.callbacks.html_report.write_html_report`:
    ``summary``, ``k_choice``, ``class_names``, ``class_counts``, ``per_group`` and ``seed`` go
    to it), one contact sheet per non-empty cluster (its ``per_sheet`` most confident images
    and a random ``per_sheet`` of the others, with their file names and confidences, from the
    files in ``paths`` or ``images[i]``, uint8 ``(C, H, W)``) and the cluster-size chart. Each
    image is thumbnailed once for the page and the sheets. Returns the files written.

    ``k_choice``, when K was chosen automatically: ``{"chosen": int, "how": str, "k": [int, ...],
    "score": [float, ...], "score_name": str}`` (the page draws the score over K).
    """
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
    thumbs = Thumbnails(images, paths, thumbnail)
    files.append(write_html_report(out, clusters, confidence, labels, paths, images, summary=summary,
                                   k_choice=k_choice, class_names=class_names, class_counts=class_counts,
                                   per_group=per_group, seed=seed, thumbnails=thumbs))
    sizes = torch.bincount(clusters)
    members = cluster_members(clusters, confidence)
    files.append(_save(_sizes_figure(sizes, list(members)), out / "clusters" / "cluster_sizes.png"))
    if images is not None or paths is not None:
        for k, m in members.items():
            rest = m[per_sheet:]
            picked = np.sort(np.random.default_rng([seed, k]).choice(len(rest), min(per_sheet, len(rest)),
                                                                     replace=False))
            halves = [(f"the {min(per_sheet, len(m))} most confident", m[:per_sheet]),
                      (f"a random {len(picked)} of the other {len(rest)}", rest[picked])]
            sheet = _contact_sheet(f"cluster {k}: {len(m)} images", halves, confidence, paths, thumbs)
            path = out / "clusters" / f"cluster_{k:03d}.png"
            sheet.save(path, compress_level=3)  # zlib's default 6 took twice as long for 7% less
            files.append(path)
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


def _contact_sheet(title: str, halves: list[tuple[str, np.ndarray]], confidence: torch.Tensor,
                   paths: list[str] | None, thumbs: Thumbnails, cols: int = 5):
    """A PNG-ready PIL image: the title, then each half (its heading, then a grid of
    thumbnails with the file name and the confidence under each), side by side."""
    from PIL import Image, ImageDraw

    font = _font(11)
    side, line = thumbs.side, 14
    cell_w, cell_h = max(side, 80) + 8, side + 2 * line + 6
    halves = [(heading, rows) for heading, rows in halves if len(rows)]
    grid_rows = max(math.ceil(len(rows) / cols) for _, rows in halves)
    width = len(halves) * cols * cell_w + (len(halves) - 1) * 16 + 16
    sheet = Image.new("RGB", (width, 2 * line + 16 + grid_rows * cell_h + 8), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 6), title, fill="black", font=_font(13))
    for h, (heading, rows) in enumerate(halves):
        x0 = 8 + h * (cols * cell_w + 16)
        draw.text((x0, 8 + line + 2), heading, fill="#444444", font=font)
        for n, i in enumerate(rows.tolist()):
            x, y = x0 + (n % cols) * cell_w, 2 * line + 16 + (n // cols) * cell_h
            thumb = thumbs[i]
            if thumb is not None:
                thumb = thumb.resize(thumbs.display_size(thumb), Image.NEAREST)  # small images: scaled up
                sheet.paste(thumb, (x + (side - thumb.size[0]) // 2, y + (side - thumb.size[1]) // 2))
            name = os.path.basename(paths[i]) if paths is not None else f"#{i}"
            draw.text((x, y + side + 2), _fit_text(draw, name, font, cell_w - 6), fill="black", font=font)
            draw.text((x, y + side + 2 + line), f"{float(confidence[i]):.2f}", fill="#555555", font=font)
    return sheet


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` cut with an ellipsis in the middle (the start and the extension stay) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        cut = text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]
        if draw.textlength(cut, font=font) <= width:
            return cut
    return text[:1] + "…"
