"""One offline page a person can browse after ``predict``: ``report.html``, beside
``predictions.csv``, shows every cluster with its size, its most confident, least confident
and a random sample of members (thumbnails with file names and confidences), its label mix
when labels exist, and a summary (the data, the encoder, how K was chosen, the sizes, the
scores against labels).

The page is one self-contained file: thumbnails are embedded as base64 JPEG, charts are
inline SVG, and there is no script, font or address outside it, so it opens from a copied
folder, an e-mail or a machine without network. The thumbnails per cluster are capped
(``per_group`` in each of the three groups), so the page stays a few megabytes at 100
clusters of 100,000 images (docs/benchmarks.md, "report.html").
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch

from dcl_cluster.metrics import clustering_scores

__all__ = ["Thumbnails", "cluster_members", "member_groups", "write_html_report"]

#: categorical colours for the label mix (matplotlib's tab20, so classes look as in the plots)
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
            "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")

_SCORES = {"nmi": "NMI", "acc": "ACC", "balanced_acc": "balanced ACC", "macro_f1": "macro F1", "ari": "ARI",
           "head_acc": "head ACC", "medium_acc": "medium ACC", "tail_acc": "tail ACC"}


class Thumbnails:
    """Each image made into a thumbnail once (Pillow), on first use, and kept.

    A readable file in ``paths`` is opened directly (a JPEG is decoded at reduced size,
    so large photos cost little); otherwise ``images[i]`` (uint8 ``(C, H, W)`` or
    ``(H, W, C)``, or floats in ``[0, 1]``). ``thumbs[i]`` is a PIL image whose longer side
    is ``side`` pixels, or the image itself when it is smaller (a 32 px image is not stored
    at 96 px: whoever shows it scales it up, :meth:`display_size`), or None when there is
    no image.
    """

    def __init__(self, images: Any = None, paths: Sequence[str] | None = None, side: int = 96) -> None:
        if side < 4:
            raise ValueError(f"thumbnail side must be >= 4 pixels, got {side}")
        self.images, self.paths, self.side = images, paths, side
        self._cache: dict[int, Any] = {}
        self._jpeg: dict[int, str] = {}

    def __getitem__(self, i: int):
        i = int(i)
        if i not in self._cache:
            self._cache[i] = self._make(i)
        return self._cache[i]

    def display_size(self, thumb) -> tuple[int, int]:
        """``(width, height)`` at which to show ``thumb``: its longer side ``side`` pixels."""
        scale = self.side / max(thumb.size)
        return max(1, round(thumb.size[0] * scale)), max(1, round(thumb.size[1] * scale))

    def jpeg_data_uri(self, i: int, quality: int = 75) -> str | None:
        """The thumbnail as a ``data:image/jpeg;base64,...`` URI (None when there is no image)."""
        i = int(i)
        if i not in self._jpeg:
            thumb = self[i]
            if thumb is None:
                return None
            buffer = io.BytesIO()
            thumb.save(buffer, format="JPEG", quality=quality)
            self._jpeg[i] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return self._jpeg[i]

    def _make(self, i: int):
        from PIL import Image, ImageOps

        side = self.side
        if self.paths is not None and os.path.isfile(self.paths[i]):
            try:
                with Image.open(self.paths[i]) as im:
                    im.draft("RGB", (side, side))  # JPEG: decode at 1/2..1/8 scale when that is enough
                    pil = ImageOps.exif_transpose(im).convert("RGB")
                return _fit(pil, side)
            except Exception:  # noqa: BLE001 - an unreadable file falls back to the decoded image, or none
                pass
        if self.images is None:
            return None
        array = torch.as_tensor(np.asarray(self.images[i])).detach().cpu()
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
            array = array.permute(1, 2, 0)  # (H, W, C)
        array = array.numpy()
        if array.dtype != np.uint8:
            array = np.clip(array * (255 if array.max() <= 1 else 1), 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        return _fit(Image.fromarray(array).convert("RGB"), side)


def _fit(pil, side: int):
    """Scale down so that the longer side is ``side`` (a smaller image is kept as it is)."""
    from PIL import Image

    scale = side / max(pil.size)
    if scale >= 1:
        return pil
    size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
    return pil.resize(size, Image.LANCZOS)


def cluster_members(clusters: torch.Tensor, confidence: torch.Tensor) -> dict[int, np.ndarray]:
    """Each non-empty cluster's members (row indices), most confident first (ties: lower index
    first), keyed by cluster id in the order largest cluster first (ties: lower id first)."""
    c = np.asarray(clusters.reshape(-1).long().cpu().numpy())
    p = np.asarray(confidence.reshape(-1).float().cpu().numpy())
    order = np.lexsort((np.arange(len(c)), -p, c))  # by cluster, then confidence descending
    ids, starts, sizes = np.unique(c[order], return_index=True, return_counts=True)
    by_size = sorted(range(len(ids)), key=lambda j: (-sizes[j], ids[j]))
    return {int(ids[j]): order[starts[j]:starts[j] + sizes[j]] for j in by_size}


def member_groups(members: np.ndarray, per_group: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Three disjoint groups of a cluster's ``members`` (most confident first): its
    ``per_group`` most confident, its ``per_group`` least confident of the rest (least
    confident first), and a random ``per_group`` of those in between (most confident first).
    A cluster of at most ``2 * per_group`` members is shown whole in the first two."""
    confident, rest = members[:per_group], members[per_group:]
    doubtful = rest[-per_group:][::-1] if len(rest) else rest
    middle = rest[:-per_group] if len(rest) > per_group else rest[:0]
    picked = np.sort(rng.choice(len(middle), size=min(per_group, len(middle)), replace=False))
    return {"most confident": confident, "least confident": doubtful, "random sample": middle[picked]}


def write_html_report(
    output_dir: str | os.PathLike,
    clusters: torch.Tensor,
    confidence: torch.Tensor,
    labels: torch.Tensor | None = None,
    paths: Sequence[str] | None = None,
    images: Any = None,
    *,
    summary: dict[str, Any] | None = None,
    k_choice: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    class_counts: Sequence[int] | None = None,
    per_group: int = 10,
    thumbnail: int = 96,
    seed: int = 0,
    thumbnails: Thumbnails | None = None,
    filename: str = "report.html",
) -> Path:
    """Write ``output_dir/report.html`` and return its path.

    Args:
        output_dir: Folder of the page (created); paths of images under it are shown
            relative to it, others absolute.
        clusters: Cluster id of each image ``(N,)``.
        confidence: Confidence of each image's cluster ``(N,)``, in ``[0, 1]``.
        labels: Class of each image ``(N,)``, ``-1`` where unknown; with any label ``>= 0``
            the page gives NMI, ACC, balanced ACC, macro F1, ARI (and head / medium / tail
            ACC) over the labelled images, and each cluster's label mix.
        paths: Image file of each row (names on the page, links to the files).
        images: Indexable of images (what :class:`Thumbnails` takes) where there are no files.
        summary: Rows of the summary table, ``{"data": ..., "encoder": ...}``, shown as text.
        k_choice: How K was chosen, when automatically: ``{"chosen": int, "how": str,
            "k": [int, ...], "score": [float, ...], "score_name": str}``; the page draws
            ``score`` over ``k`` and marks ``chosen``.
        class_names: Name of each class id (else the id).
        class_counts: Training images per class, for the head / medium / tail groups
            (:func:`~dcl_cluster.metrics.head_medium_tail_groups`); default the labelled
            images' own counts (no groups when those are all equal).
        per_group: Thumbnails in each of a cluster's three groups (:func:`member_groups`).
        thumbnail: Longer side of a thumbnail in pixels.
        seed: Seed of the random samples (per cluster, so one cluster's sample does not
            depend on the others).
        thumbnails: A :class:`Thumbnails` already used elsewhere (the contact sheets), so
            each image is thumbnailed once; made from ``images``, ``paths`` and ``thumbnail``
            when None.
        filename: Name of the page in ``output_dir``.
    """
    if per_group < 1:
        raise ValueError(f"per_group must be >= 1, got {per_group}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clusters, confidence = clusters.reshape(-1).long().cpu(), confidence.reshape(-1).float().cpu()
    if paths is not None and len(paths) != len(clusters):
        raise ValueError(f"paths must have one entry per image ({len(clusters)}), got {len(paths)}")
    labels = labels.reshape(-1).long().cpu() if labels is not None else None
    with_labels = labels is not None and bool((labels >= 0).any())
    thumbs = thumbnails if thumbnails is not None else Thumbnails(images, paths, thumbnail)
    members = cluster_members(clusters, confidence)
    names = _class_namer(class_names)
    shown = _PathsShown(paths, out)
    mix = _label_mix(clusters, labels) if with_labels else {}

    parts = [_head(len(members), len(clusters), thumbs.side), _summary(summary, k_choice, members, len(clusters))]
    if with_labels:
        parts.append(_scores_section(clusters, labels, class_counts, class_names))
    parts.append(_index(members, confidence, mix, names, len(clusters)))
    for k, m in members.items():
        groups = member_groups(m, per_group, np.random.default_rng([seed, k]))
        parts.append(_cluster_section(k, m, groups, confidence, labels if with_labels else None, mix.get(k),
                                      names, thumbs, shown, len(clusters)))
    parts.append('<footer><p class="note">Written by dcl_cluster. Every image and its cluster: '
                 '<a href="predictions.csv">predictions.csv</a>.</p></footer>\n</body>\n</html>\n')
    path = out / filename
    path.write_text("".join(parts), encoding="utf-8")
    return path


# ------------------------------------------------------------------ pieces of the page

_CSS = """/* thumbnails: SIDE px */
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1400px;padding:0 16px;
color:#222;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin:0 0 6px}h3{font-size:14px;margin:10px 0 4px;color:#444}
table{border-collapse:collapse;margin:6px 0}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{font-weight:600}td.num,th.num{text-align:right}
.cluster{border-top:1px solid #ccc;padding:12px 0;content-visibility:auto;contain-intrinsic-size:auto 600px}
.grid{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;width:calc(SIDEpx + 4px);font-size:11px}
figure .img{width:SIDEpx;height:SIDEpx;display:flex;align-items:center;justify-content:center;background:#f2f2f2}
figure img{image-rendering:pixelated}
figcaption{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.p{color:#555}.lab{color:#06c}
.mix{display:flex;height:14px;width:100%;max-width:600px;border:1px solid #999;margin:4px 0}
.mix span{display:block;height:100%}
.note{color:#555;font-size:12px}
.labelmix ul{display:flex;flex-wrap:wrap;gap:0 14px;list-style:none;padding:0;margin:2px 0}
nav a{margin-right:6px}
"""


def _head(n_clusters: int, n_images: int, side: int) -> str:
    title = f"dcl_cluster report: {n_clusters} clusters, {n_images} images"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS.replace('SIDE', str(side))}</style>\n</head>\n<body>\n"
            f'<h1>{html.escape(title)}</h1>\n<nav><a href="#summary">summary</a><a href="#index">clusters</a>'
            f'<a href="predictions.csv">predictions.csv</a></nav>\n')


def _summary(summary: dict[str, Any] | None, k_choice: dict[str, Any] | None, members: dict[int, np.ndarray],
             n_images: int) -> str:
    rows = [(str(key), str(value)) for key, value in (summary or {}).items()]
    rows.append(("images", f"{n_images}"))
    rows.append(("clusters", f'<span id="cluster-count">{len(members)}</span> non-empty'))
    body = "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>"
                   for key, value in rows[:-1])
    body += f"<tr><th>clusters</th><td>{rows[-1][1]}</td></tr>"
    if k_choice:
        body += f"<tr><th>K</th><td>{html.escape(_k_choice_text(k_choice))}</td></tr>"
    chart = _k_choice_svg(k_choice) if k_choice and k_choice.get("k") else ""
    return (f'<section id="summary">\n<h2>Summary</h2>\n<table>{body}</table>\n{chart}'
            f"<h3>Images per cluster, largest first</h3>\n{_sizes_svg(members)}</section>\n")


def _k_choice_text(k_choice: dict[str, Any]) -> str:
    text = f"{k_choice.get('chosen', '?')}"
    if k_choice.get("how"):
        text += f", {k_choice['how']}"
    return text


def _k_choice_svg(k_choice: dict[str, Any]) -> str:
    ks = [int(k) for k in k_choice["k"]]
    scores = [float(s) for s in k_choice.get("score", [])]
    if len(scores) != len(ks) or not ks:
        return ""
    finite = [s for s in scores if math.isfinite(s)] or [0.0]
    lo, hi = min(finite), max(finite)
    hi = hi if hi > lo else lo + 1.0
    w, h, left, bottom = 640, 200, 50, 30
    kmin, kmax = min(ks), max(ks)
    span = max(kmax - kmin, 1)

    def x(k):
        return left + (w - left - 10) * (k - kmin) / span

    def y(s):
        return 10 + (h - bottom - 10) * (1 - (s - lo) / (hi - lo))

    points = [(k, s) for k, s in zip(ks, scores, strict=True) if math.isfinite(s)]
    line = " ".join(f"{x(k):.1f},{y(s):.1f}" for k, s in points)
    chosen = k_choice.get("chosen")
    dots = "".join(
        f'<circle cx="{x(k):.1f}" cy="{y(s):.1f}" r="{5 if k == chosen else 3}" '
        f'fill="{"#d62728" if k == chosen else "#1f77b4"}"><title>K = {k}: {s:.4g}</title></circle>'
        for k, s in points)
    ticks = "".join(f'<text x="{x(k):.1f}" y="{h - 12}" text-anchor="middle">{k}</text>'
                    for k in ks if len(ks) <= 25 or k in (kmin, kmax, chosen) or k % 5 == 0)
    name = html.escape(str(k_choice.get("score_name", "score")))
    return (f"<h3>{name} per K (the chosen K in red)</h3>\n"
            f'<svg class="kchart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-size="11" '
            f'role="img" aria-label="{name} per K">'
            f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#999"/>'
            f'<text x="{left - 4}" y="14" text-anchor="end">{hi:.3g}</text>'
            f'<text x="{left - 4}" y="{h - bottom}" text-anchor="end">{lo:.3g}</text>'
            f'<polyline points="{line}" fill="none" stroke="#1f77b4"/>{dots}{ticks}'
            f'<text x="{(w + left) / 2:.0f}" y="{h - 1}" text-anchor="middle">K</text></svg>\n')


def _sizes_svg(members: dict[int, np.ndarray]) -> str:
    sizes = [(k, len(m)) for k, m in members.items()]
    w, h, left, bottom = max(320, min(1200, 60 + 12 * len(sizes))), 180, 50, 24
    bar = (w - left - 10) / max(len(sizes), 1)
    top = max((n for _, n in sizes), default=1)
    bars = []
    for j, (k, n) in enumerate(sizes):
        bh = (h - bottom - 10) * n / top
        bars.append(f'<a href="#c{k}"><rect x="{left + j * bar:.1f}" y="{h - bottom - bh:.1f}" '
                    f'width="{max(bar - 1, 0.5):.1f}" height="{bh:.1f}" fill="#1f77b4">'
                    f"<title>cluster {k}: {n} images</title></rect></a>")
    labels = "".join(f'<text x="{left + (j + 0.5) * bar:.1f}" y="{h - 8}" text-anchor="middle">{k}</text>'
                     for j, (k, _) in enumerate(sizes) if len(sizes) <= 40 or j % 10 == 0)
    return (f'<svg class="sizes" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-size="10" '
            f'role="img" aria-label="images per cluster">'
            f'<text x="{left - 4}" y="14" text-anchor="end">{top}</text>'
            f'<text x="{left - 4}" y="{h - bottom}" text-anchor="end">0</text>{"".join(bars)}{labels}</svg>\n')


def _scores_section(clusters: torch.Tensor, labels: torch.Tensor, class_counts: Sequence[int] | None,
                    class_names: Sequence[str] | None) -> str:
    known = labels >= 0
    y, pred = labels[known], clusters[known]
    num_classes = max(int(y.max()) + 1, len(class_names or ()), len(class_counts or ()))
    counts = list(class_counts) if class_counts is not None else torch.bincount(y, minlength=num_classes).tolist()
    counts = counts + [0] * (num_classes - len(counts))
    groups = min(counts) != max(counts)
    scores = clustering_scores(y, pred, class_counts=counts if groups else None, num_classes=num_classes,
                               num_clusters=int(clusters.max()) + 1)
    cells = "".join(f'<tr><th>{name}</th><td class="num" data-score="{key}">{_number(scores[key])}</td></tr>'
                    for key, name in _SCORES.items() if key in scores)
    basis = ("training images per class" if class_counts is not None
             else "the labelled images' own class counts")
    note = (f"ACC: clusters matched to classes one to one (Hungarian); balanced ACC: its mean per class; "
            f"head / medium / tail: ACC of the 30% / 40% / 30% most / middle / least frequent classes by "
            f"{basis}." if groups else
            "ACC: clusters matched to classes one to one (Hungarian); balanced ACC: its mean per class. "
            "No head / medium / tail: every class has as many images.")
    return (f'<section id="scores">\n<h2>Scores against the labels ({int(known.sum())} labelled images)</h2>\n'
            f'<table>{cells}</table>\n<p class="note">{html.escape(note)}</p>\n</section>\n')


def _number(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"


def _label_mix(clusters: torch.Tensor, labels: torch.Tensor) -> dict[int, list[tuple[int, int]]]:
    """Per cluster, ``(class, count)`` of its labelled members, most frequent first."""
    known = labels >= 0
    c, y = clusters[known], labels[known]
    n_cls = int(y.max()) + 1
    table = torch.bincount(c * n_cls + y, minlength=(int(clusters.max()) + 1) * n_cls).reshape(-1, n_cls)
    return {k: [(int(j), int(row[j])) for j in torch.argsort(row, descending=True, stable=True) if row[j] > 0]
            for k, row in enumerate(table)}


def _index(members: dict[int, np.ndarray], confidence: torch.Tensor, mix: dict, names, n_images: int) -> str:
    head = "<tr><th>cluster</th><th class=\"num\">images</th><th class=\"num\">share</th>" \
           "<th class=\"num\">mean confidence</th>" + ("<th>largest class</th>" if mix else "") + "</tr>"
    rows = []
    for k, m in members.items():
        row = (f'<tr><td><a href="#c{k}">{k}</a></td><td class="num">{len(m)}</td>'
               f'<td class="num">{100 * len(m) / n_images:.1f}%</td>'
               f'<td class="num">{float(confidence[torch.as_tensor(m)].mean()):.3f}</td>')
        if mix:
            top = mix.get(k) or []
            labelled = sum(n for _, n in top)
            row += (f"<td>{html.escape(names(top[0][0]))} ({100 * top[0][1] / labelled:.0f}%)</td>" if top
                    else "<td>-</td>")
        rows.append(row + "</tr>")
    return (f'<section id="index">\n<h2>Clusters, largest first</h2>\n<table>{head}{"".join(rows)}</table>\n'
            f"</section>\n")


def _cluster_section(k: int, m: np.ndarray, groups: dict[str, np.ndarray], confidence: torch.Tensor,
                     labels: torch.Tensor | None, mix: list[tuple[int, int]] | None, names, thumbs: Thumbnails,
                     shown: _PathsShown, n_images: int) -> str:
    conf = confidence[torch.as_tensor(m)]
    parts = [f'<section class="cluster" id="c{k}" data-cluster="{k}" data-size="{len(m)}">\n'
             f"<h2>Cluster {k}: {len(m)} images ({100 * len(m) / n_images:.1f}%)</h2>\n"
             f'<p class="note">confidence: mean {float(conf.mean()):.3f}, from {float(conf.min()):.3f} '
             f"to {float(conf.max()):.3f}</p>\n"]
    if labels is not None:
        parts.append(_mix_html(mix or [], names))
    others = len(m) - len(groups["most confident"]) - len(groups["least confident"])
    what = {"most confident": "the {} most confident", "least confident": "the {} least confident of the others",
            "random sample": "a random {} of the other " + str(others)}
    for title, rows in groups.items():
        if len(rows):
            figures = "".join(_figure(int(i), float(confidence[i]), labels, names, thumbs, shown) for i in rows)
            parts.append(f'<h3>{html.escape(what[title].format(len(rows)))}</h3>\n'
                         f'<div class="grid {title.split()[0]}">{figures}</div>\n')
    parts.append("</section>\n")
    return "".join(parts)


def _mix_html(mix: list[tuple[int, int]], names, shown: int = 8) -> str:
    total = sum(n for _, n in mix)
    if not total:
        return '<p class="note">label mix: no labelled image</p>\n'
    spans = "".join(f'<span style="width:{100 * n / total:.2f}%;background:{_PALETTE[c % len(_PALETTE)]}" '
                    f'title="{html.escape(names(c))}: {n}"></span>' for c, n in mix[:shown])
    items = [f'<li data-class="{c}"><span style="color:{_PALETTE[c % len(_PALETTE)]}">&#9632;</span> '
             f"{html.escape(names(c))}: {n} ({100 * n / total:.0f}%)</li>" for c, n in mix[:shown]]
    if len(mix) > shown:
        rest = sum(n for _, n in mix[shown:])
        items.append(f"<li>{len(mix) - shown} other classes: {rest} ({100 * rest / total:.0f}%)</li>")
    return (f'<div class="labelmix"><h3>label mix ({total} labelled)</h3><div class="mix">{spans}</div>'
            f'<ul class="note">{"".join(items)}</ul></div>\n')


def _figure(i: int, p: float, labels: torch.Tensor | None, names, thumbs: Thumbnails, shown: _PathsShown) -> str:
    name, where, href = shown(i)
    uri = thumbs.jpeg_data_uri(i)
    if uri is not None:
        w, h = thumbs.display_size(thumbs[i])
        img = f'<img src="{uri}" width="{w}" height="{h}" alt="{html.escape(name)}" loading="lazy">'
    else:
        img = '<span class="note">no image</span>'

    if href is not None:
        img = f'<a href="{html.escape(href)}">{img}</a>'
    label = ""
    if labels is not None and int(labels[i]) >= 0:
        label = f' <span class="lab">{html.escape(names(int(labels[i])))}</span>'
    return (f'<figure class="member" data-index="{i}" data-confidence="{p:.4f}"><div class="img">{img}</div>'
            f'<figcaption title="{html.escape(where)}"><span class="name">{html.escape(name)}</span><br>'
            f'<span class="p">{p:.3f}</span>{label}</figcaption></figure>')


def _class_namer(class_names: Sequence[str] | None):
    def name(c: int) -> str:
        return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)
    return name


class _PathsShown:
    """``(name, path shown, link)`` of a row: relative to the report's folder for an image under it,
    absolute otherwise; rows without paths are ``#index``."""

    def __init__(self, paths: Sequence[str] | None, out: Path) -> None:
        self.paths, self.root = paths, out.absolute()

    def __call__(self, i: int) -> tuple[str, str, str | None]:
        if self.paths is None:
            return f"#{i}", f"row {i}", None
        path = Path(os.path.abspath(self.paths[i]))
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return path.name, str(path), path.as_uri()
        return path.name, relative.as_posix(), quote(relative.as_posix())
