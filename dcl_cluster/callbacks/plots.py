"""Pictures of a clustering that a reader takes in at a glance, with or without a Trainer.

Three figures: the 2-D embedding coloured by class and by cluster, cluster sizes against
the training class sizes sorted by training frequency (the long-tail picture), and the
Hungarian-matched confusion matrix. Plain functions (for benchmarks and notebooks) plus the
:class:`EmbeddingPlots` callback that logs them to W&B / TensorBoard and saves PNGs.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import matplotlib
import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dcl_cluster.callbacks.collect import EmbeddingCollector
from dcl_cluster.cluster import KMeans
from dcl_cluster.metrics import contingency_table, match_clusters_to_classes

# Figures are built with the object API (no pyplot): headless on servers and CI, no
# global backend switch in a user's notebook, nothing to close.

_METHODS = ("tsne", "umap", "pca")


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _class_colours(n: int) -> np.ndarray:
    if n <= 10:
        return matplotlib.colormaps["tab10"](np.arange(n))
    if n <= 20:
        return matplotlib.colormaps["tab20"](np.arange(n))
    return matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, n))


def _table(y_true, y_pred) -> np.ndarray:
    """``(clusters, classes)`` counts of non-negative integer ids."""
    y_true, y_pred = _np(y_true).astype(np.int64), _np(y_pred).astype(np.int64)
    return contingency_table(y_pred, y_true, int(y_pred.max()) + 1,
                             int(y_true.max()) + 1).numpy()


def match_clusters(y_true, y_pred) -> dict[int, int]:
    """Hungarian map ``{cluster id: class id}`` maximising agreement (Kuhn 1955).

    :func:`~dcl_cluster.metrics.match_clusters_to_classes` on the labels' table; empty
    clusters are left out.
    """
    table = _table(y_true, y_pred)
    rows, cols = match_clusters_to_classes(table)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if table[r].sum() > 0}


def embed_2d(embeddings, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """``(n, 2)`` layout of ``(n, d)`` embeddings for plotting.

    ``"tsne"``: t-SNE (van der Maaten & Hinton 2008, scikit-learn, PCA init);
    ``"umap"``: UMAP (McInnes et al. 2018) when ``umap-learn`` is installed, else t-SNE
    with a warning; ``"pca"``: the two leading principal components (fast).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    x = _np(embeddings).astype(np.float32).reshape(len(embeddings), -1)
    if method == "umap":
        try:
            import umap  # type: ignore[import-not-found]

            return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
        except ImportError:
            warnings.warn("umap-learn is not installed; using t-SNE", stacklevel=2)
            method = "tsne"
    if method == "pca" or len(x) < 5:
        x = x - x.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        out = x @ vt[:2].T
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, (len(x) - 1) / 3))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    # Right after torch work, torch's OpenMP threads still spin; scikit-learn's own
    # OpenMP pool then fights them for the cores (measured: 200 points took 40 s with
    # 2 threads, 0.6 s with 1). Small layouts gain nothing from threads anyway.
    with threadpool_limits(limits=1 if len(x) <= 5000 else None, user_api="openmp"):
        return tsne.fit_transform(x)


def plot_embedding(points, y_true, y_pred, title: str | None = None,
                   class_names: list[str] | None = None) -> Figure:
    """Two panels of a 2-D embedding: coloured by class, and by cluster.

    Each cluster takes the colour of the class it is matched to (Hungarian), so a
    correct clustering looks the same in both panels; unmatched clusters are grey
    with their id at their centre.
    """
    points, y_true, y_pred = _np(points), _np(y_true).astype(int), _np(y_pred).astype(int)
    n_classes = int(y_true.max()) + 1
    colours = _class_colours(n_classes)
    mapping = match_clusters(y_true, y_pred)
    grey = np.array([0.6, 0.6, 0.6, 1.0])
    cluster_colours = np.array([colours[mapping[c]] if c in mapping else grey for c in y_pred])
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
    size = max(2.0, min(14.0, 6000 / max(len(points), 1)))
    for ax, cols, name in ((axes[0], colours[y_true], "class"),
                           (axes[1], cluster_colours, "cluster (colour of matched class)")):
        ax.scatter(points[:, 0], points[:, 1], c=cols, s=size, linewidths=0, alpha=0.8)
        ax.set_title(f"coloured by {name}")
        ax.set_xticks([])
        ax.set_yticks([])
    for c in np.unique(y_pred):
        if int(c) not in mapping:
            centre = points[y_pred == c].mean(0)
            axes[1].annotate(str(c), centre, ha="center", fontsize=8, color="black")
    if n_classes <= 20:
        names = class_names or [str(c) for c in range(n_classes)]
        handles = [Line2D([], [], marker="o", ls="", color=colours[c], label=names[c])
                   for c in range(n_classes)]
        fig.legend(handles=handles, loc="outside right center", title="class", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_cluster_sizes(class_counts, cluster_sizes, title: str | None = None,
                       log: bool = False, class_names: list[str] | None = None,
                       evaluated_counts=None) -> Figure:
    """Class sizes (sorted, largest first) beside cluster sizes (sorted), as fractions.

    The long-tail picture: with the training class counts, if the cluster bars are
    flatter than the class bars the clustering split head classes and merged tail ones
    (METHOD.md 2.1). When the evaluated set's class sizes are given too, a black line
    over each class bar marks the class's share of the evaluated set (on a balanced
    held-out set: flat), the sizes the cluster bars would have under a perfect
    clustering.

    Args:
        class_counts: Images per class, indexed by class id (any order): the training
            counts, or the evaluated set's when they are not known.
        cluster_sizes: Points per cluster (any order, empty clusters included).
        title: Figure title.
        log: Log-scale y axis (for steep tails).
        class_names: Names indexed by class id, shown under the class bars.
        evaluated_counts: Optional points per class of the evaluated set, indexed by
            class id like ``class_counts``.

    Examples:
        >>> fig = plot_cluster_sizes([500, 100, 20], [220, 200, 180], evaluated_counts=[200] * 3)
        >>> [round(float(bar.get_height()), 3) for bar in fig.axes[0].containers[0]]  # training
        [0.806, 0.161, 0.032]
    """
    classes = _np(class_counts).astype(float)
    clusters = np.sort(_np(cluster_sizes).astype(float))[::-1]
    order = np.argsort(-classes, kind="stable")
    class_frac = classes[order] / max(classes.sum(), 1)
    cluster_frac = clusters / max(clusters.sum(), 1)
    n = max(len(class_frac), len(cluster_frac))
    fig = Figure(figsize=(max(6.0, min(0.45 * n + 2, 12)), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    width = 0.42 if n <= 60 else 0.5
    which = "training classes" if evaluated_counts is not None else "classes"
    ax.bar(x[: len(class_frac)] - width / 2, class_frac, width, color="#4C72B0",
           label=f"{which} ({len(class_frac)})")
    empty = int((clusters == 0).sum())
    ax.bar(x[: len(cluster_frac)] + width / 2, cluster_frac, width, color="#DD8452",
           label=f"clusters ({len(cluster_frac)}" + (f", {empty} empty)" if empty else ")"))
    if evaluated_counts is not None:
        evaluated = np.zeros(len(classes))
        given = _np(evaluated_counts).astype(float)[: len(classes)]
        evaluated[: len(given)] = given
        centres = x[: len(order)] - width / 2
        ax.hlines(evaluated[order] / max(evaluated.sum(), 1), centres - width / 2,
                  centres + width / 2, color="black", lw=1.5, label="classes in the evaluated set")
    if len(class_frac):
        ax.axhline(1 / len(class_frac), color="grey", lw=0.8, ls=":", label="uniform")
    if n <= 40:
        names = class_names or [str(c) for c in range(len(classes))]
        ax.set_xticks(x[: len(order)], [names[c] for c in order], fontsize=8)
        ax.set_xlabel(f"{which} by size (label: class id); clusters by size")
    else:
        ax.set_xlabel("rank by size")
    ax.set_ylabel("fraction of samples")
    if log:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    ax.set_title(title or "cluster sizes against class sizes")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_confusion_matrix(y_true, y_pred, title: str | None = None,
                          class_names: list[str] | None = None) -> Figure:
    """Row-normalised confusion matrix with clusters matched to classes (Hungarian).

    Rows are classes by frequency (largest first); column ``i`` is the cluster matched
    to row ``i``'s class, unmatched clusters follow. The diagonal is the per-class
    accuracy that ``balanced_acc`` averages; counts are printed for up to 20 classes.
    """
    y_true, y_pred = _np(y_true).astype(int), _np(y_pred).astype(int)
    n_classes, n_clusters = int(y_true.max()) + 1, int(y_pred.max()) + 1
    table = _table(y_true, y_pred).T  # (classes, clusters)
    by_size = np.argsort(-table.sum(1), kind="stable")
    mapping = {c: k for k, c in match_clusters(y_true, y_pred).items()}  # class -> cluster
    rows = [c for c in by_size if c in mapping] + [c for c in by_size if c not in mapping]
    cols = [mapping[c] for c in rows if c in mapping]
    n_matched = len(cols)
    cols += [k for k in range(n_clusters) if k not in cols]
    table = table[rows][:, cols]
    frac = table / np.maximum(table.sum(1, keepdims=True), 1)
    side = min(max(4.5, 0.5 * max(n_classes, n_clusters) + 2), 16)
    fig = Figure(figsize=(side * max(1, n_clusters / n_classes) ** 0.5, side),
                 layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the class")
    names = class_names or [str(c) for c in range(n_classes)]
    if max(n_classes, n_clusters) <= 40:
        ax.set_yticks(range(n_classes), [names[r] for r in rows], fontsize=8)
        ax.set_xticks(range(n_clusters), [str(c) for c in cols], fontsize=8)
    if n_classes <= 20 and n_clusters <= 30:
        for i in range(n_classes):
            for j in range(n_clusters):
                if table[i, j]:
                    ax.text(j, i, int(table[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set_ylabel("class (largest first)")
    ax.set_xlabel("cluster (column i matched to row i)")
    acc = np.trace(table[:n_matched, :n_matched]) / max(table.sum(), 1)
    balanced = np.mean(np.diag(frac[:n_matched, :n_matched]).tolist()
                       + [0.0] * (n_classes - n_matched))
    ax.set_title(f"{title or 'matched confusion matrix'}\n"
                 f"ACC {acc:.3f}, balanced ACC {balanced:.3f}")
    return fig


def clustering_figures(embeddings, y_true, y_pred, max_points: int = 2000,
                       method: str = "tsne", seed: int = 0, title: str = "",
                       num_clusters: int | None = None,
                       class_counts=None) -> dict[str, Figure]:
    """The three figures, keyed ``embedding``, ``cluster_sizes``, ``confusion``.

    Args:
        embeddings: ``(n, d)`` embeddings.
        y_true: ``(n,)`` class labels.
        y_pred: ``(n,)`` cluster ids.
        max_points: Points in the 2-D embedding (a seeded random subset).
        method: ``"tsne"``, ``"umap"`` or ``"pca"`` (see :func:`embed_2d`).
        seed: Seed of the subset and of the 2-D layout.
        title: Prefix of the figure titles.
        num_clusters: Clusters in all (counts empty ones); default ``max(y_pred) + 1``.
        class_counts: Training images per class (indexed by class id): the class bars
            of the cluster-size figure, sorted by training frequency, with the
            evaluated set's class sizes marked over them. Without them the class bars
            are the evaluated set's class sizes.

    Examples:
        >>> figs = clustering_figures(torch.randn(60, 5), torch.arange(60) % 3,
        ...                           torch.arange(60) % 4, method="pca")
        >>> sorted(figs)
        ['cluster_sizes', 'confusion', 'embedding']
    """
    y_true, y_pred = _np(y_true).astype(int), _np(y_pred).astype(int)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(y_true))[:max_points])
    points = embed_2d(_np(embeddings)[idx], method, seed)
    sizes = np.bincount(y_pred, minlength=num_clusters or 0)
    evaluated = np.bincount(y_true, minlength=0 if class_counts is None else len(class_counts))
    if class_counts is None:
        sizes_figure = plot_cluster_sizes(evaluated, sizes,
                                          f"{title} cluster vs class sizes".strip())
    else:
        sizes_figure = plot_cluster_sizes(class_counts, sizes,
                                          f"{title} cluster sizes vs training class sizes".strip(),
                                          evaluated_counts=evaluated)
    return {
        "embedding": plot_embedding(points, y_true[idx], y_pred[idx],
                                    f"{title} {method} of {len(idx)} points".strip()),
        "cluster_sizes": sizes_figure,
        "confusion": plot_confusion_matrix(y_true, y_pred,
                                           f"{title} matched confusion matrix".strip()),
    }


class EmbeddingPlots(EmbeddingCollector):
    """Draw :func:`clustering_figures` of the validation set every ``every_n_epochs``.

    Works alone, through the protocol of :mod:`~dcl_cluster.callbacks.collect`: it
    collects the validation embeddings itself and predicts with the ``cluster_probs``
    argmax when the module returns them, else with k-means (``num_clusters``, default
    the number of classes; the same k-means settings and seed as a default
    :class:`~dcl_cluster.callbacks.ClusteringEvaluator`, so the plotted clusters are the
    ones it scores). The cluster-size figure compares the clusters with the training
    class counts: ``class_counts``, else the public ``train_class_counts`` attribute of
    ``trainer.datamodule`` when present, sorted by training frequency, with the
    evaluated set's class sizes marked over them; without either, with the evaluated
    set's class sizes. On rank 0 the figures are saved as PNG under ``save_dir``
    (default ``trainer.log_dir/plots``), logged with ``logger.log_image`` (W&B) or
    ``logger.experiment.add_figure`` (TensorBoard) for each attached logger that has
    one, their paths kept in ``last_files`` and the figures in ``last_figures``.

    Args:
        every_n_epochs: Plot on epochs ``n - 1, 2n - 1, ...`` of a fit (always under
            ``trainer.validate()``).
        max_points: Points drawn in the 2-D embedding (a seeded random subset).
        method: ``"tsne"``, ``"umap"`` (when installed) or ``"pca"``.
        save_dir: Directory of the PNGs.
        seed: Seed of the subset, t-SNE/UMAP and k-means.
        num_clusters: k-means clusters; default the number of classes.
        prefix: Prefix of the logged image keys.
        class_counts: Training images per class, indexed by class id; default the
            datamodule's ``train_class_counts``.
        kmeans_n_init: k-means seedings.
        kmeans_metric: ``"euclidean"`` or ``"cosine"`` (spherical k-means).

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> from dcl_cluster.callbacks import ClusteringEvaluator
        >>> cbs = [ClusteringEvaluator(num_clusters=10), EmbeddingPlots(every_n_epochs=5)]
        >>> trainer = Trainer(callbacks=cbs)  # doctest: +SKIP
    """

    def __init__(self, every_n_epochs: int = 1, max_points: int = 2000, method: str = "tsne",
                 save_dir: str | None = None, seed: int = 0, num_clusters: int | None = None,
                 prefix: str = "val/", class_counts: list[int] | None = None,
                 kmeans_n_init: int = 3, kmeans_metric: str = "euclidean") -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if every_n_epochs < 1 or max_points < 2:
            raise ValueError(f"every_n_epochs must be >= 1 and max_points >= 2, got "
                             f"{every_n_epochs} and {max_points}")
        if num_clusters is not None and num_clusters < 1:
            raise ValueError(f"num_clusters must be None or >= 1, got {num_clusters}")
        KMeans(1, n_init=kmeans_n_init, metric=kmeans_metric)  # validates both
        super().__init__(every_n_epochs, prefix=prefix)
        self.max_points = max_points
        self.method = method
        self.save_dir = save_dir
        self.seed = seed
        self.num_clusters = num_clusters
        self.class_counts = class_counts
        self.kmeans_n_init = kmeans_n_init
        self.kmeans_metric = kmeans_metric
        self.last_files: list[str] = []
        self.last_figures: dict[str, Figure] = {}

    def on_collected(self, trainer: Trainer, pl_module: LightningModule,
                     data: dict[str, torch.Tensor | None], prefix: str) -> None:
        """Predict, draw and save on rank 0 (every rank asks for the log directory)."""
        out_dir = self.save_dir or os.path.join(
            trainer.log_dir or trainer.default_root_dir, "plots")  # log_dir: all ranks
        if not trainer.is_global_zero:
            return
        datamodule = getattr(trainer, "datamodule", None)
        counts = self.class_counts or getattr(datamodule, "train_class_counts", None)
        counts = None if counts is None else [int(c) for c in counts]
        outputs = self.predict(data, counts, getattr(datamodule, "num_classes", None))
        figures = clustering_figures(outputs["embeddings"], outputs["labels"],
                                     outputs["preds"], self.max_points, self.method,
                                     self.seed, title=f"epoch {trainer.current_epoch}",
                                     num_clusters=outputs["num_clusters"], class_counts=counts)
        os.makedirs(out_dir, exist_ok=True)
        stage = getattr(trainer.state.fn, "value", trainer.state.fn)
        stem = f"{stage}_epoch{trainer.current_epoch:03d}"
        self.last_files = []
        for name, fig in figures.items():
            path = os.path.join(out_dir, f"{stem}_{name}.png")
            fig.savefig(path, dpi=110)
            self.last_files.append(path)
            self._log(trainer, f"{prefix}{name}", fig, path)
        self.last_figures = figures

    def predict(self, data: dict[str, torch.Tensor | None], class_counts: list[int] | None = None,
                num_classes: int | None = None) -> dict[str, Any]:
        """Cluster ids of gathered data: the ``cluster_probs`` argmax, else k-means.

        Returns:
            ``{"embeddings", "labels", "preds"}`` (CPU tensors) and ``"num_clusters"``.
        """
        labels, emb, probs = data["labels"], data["embeddings"], data["cluster_probs"]
        if probs is not None:
            preds, k = probs.argmax(1), probs.shape[1]
        else:
            num_classes = num_classes or (len(class_counts) if class_counts else None)
            num_classes = num_classes or int(labels.max()) + 1
            k = min(self.num_clusters or num_classes, emb.shape[0])
            preds = KMeans(k, n_init=self.kmeans_n_init, seed=self.seed,
                           metric=self.kmeans_metric).fit_predict(emb)
        return {"embeddings": emb.cpu(), "labels": labels.cpu(), "preds": preds.cpu(),
                "num_clusters": k}

    @staticmethod
    def _log(trainer: Trainer, key: str, fig: Figure, path: str) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=key, images=[path], step=trainer.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_figure"):
                logger.experiment.add_figure(key, fig, global_step=trainer.global_step)
