"""What ``predict`` writes for a person to look at, from clusters and confidences alone: the
CSV, ``report.html``, a contact sheet per cluster and the sizes chart. No Lightning, so
``dcl-cluster recluster`` writes the same files without paying for it.
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
from matplotlib.figure import Figure

from dcl_cluster.callbacks.html_report import Thumbnails, cluster_members, write_html_report

__all__ = ["write_cluster_results"]


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
    clusters, confidence = clusters.reshape(-1).long(), confidence.reshape(-1).float()
    for name, given in (("confidence", confidence), ("labels", labels), ("paths", paths), ("images", images)):
        if given is not None and len(given) != len(clusters):  # before anything is written
            raise ValueError(f"write_cluster_results: {name} has {len(given)} entries for {len(clusters)} clusters")
    out = Path(output_dir)
    (out / "clusters").mkdir(parents=True, exist_ok=True)
    with_labels = labels is not None and bool((labels >= 0).any())
    csv_path = out / "predictions.csv"
    with open(csv_path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:  # any file name
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
