"""Clustering evaluation of any LightningModule at the end of validation: ACC, NMI, ARI...

A drop-in Callback: it needs nothing of ``dcl_cluster`` in the module (see
``callbacks.collect`` for the protocol), runs k-means on the validation embeddings
and/or takes the argmax of the module's cluster probabilities, and logs
:func:`~dcl_cluster.metrics.clustering_scores` through ``pl_module.log``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from dcl_cluster.callbacks.collect import EmbeddingCollector
from dcl_cluster.cluster import KMeans
from dcl_cluster.cluster.diagnostics import label_free_diagnostics
from dcl_cluster.metrics import clustering_scores

_SOURCES = ("auto", "kmeans", "head")


class ClusteringEvaluator(EmbeddingCollector):
    """Log clustering scores of the validation set every ``every_n_epochs`` epochs.

    Predictions come from the argmax of ``cluster_probs`` (a cluster head) and/or from
    k-means (Lloyd 1982, k-means++ seeding, :class:`~dcl_cluster.cluster.KMeans`) on
    the embeddings, as in DEC (Xie et al. 2016) and Contrastive Clustering (Li et al.
    2021). Scores: ``acc``, ``balanced_acc``, ``macro_f1`` (Hungarian-matched, P²OT's
    protocol), ``nmi``, ``ari``, ``ami`` and, when training class counts are known,
    ``head_acc``, ``medium_acc``, ``tail_acc``.

    Keys (``prefix="val/"``; ``trainer.test()`` logs the same under ``test_prefix``):

    - ``source="auto"``: with ``cluster_probs``, the head's scores as ``val/acc``,
      ``val/nmi``, ... and k-means' as ``val/kmeans_acc``, ``val/kmeans_nmi``, ...;
      without, k-means' as ``val/acc``, ``val/nmi``, ...
    - ``source="kmeans"``: k-means only, as ``val/acc``, ...
    - ``source="head"``: the head only, as ``val/acc``, ... (error without probs).

    Without labels (every label ``-1``, as an ``images`` folder), label-free diagnostics
    are logged instead (:func:`~dcl_cluster.cluster.diagnostics.label_free_diagnostics`):
    ``val/clusters_used``, ``val/largest_share``, ``val/smallest_share``,
    ``val/silhouette`` and, with ``cluster_probs``, ``val/mean_confidence``; k-means then
    needs ``num_clusters`` (or runs with the head's width) and is skipped when neither is
    known.

    Missing sizes are filled in at each evaluation: ``num_classes`` and
    ``class_counts`` from the public ``num_classes`` / ``train_class_counts``
    attributes of ``trainer.datamodule`` when present, else ``num_classes`` from the
    labels seen; ``num_clusters`` defaults to ``num_classes`` (k-means; the head uses
    its own width). Only the first validation dataloader is evaluated. Under DDP
    every rank's embeddings are gathered (a DistributedSampler's padding duplicates
    are kept), rank 0 computes, and the scores are broadcast so every rank logs the
    same numbers (``sync_dist=False``). Works with ``trainer.validate()`` (always
    evaluates there). ``last_metrics`` holds the last logged dict and is saved with
    the checkpoint. It works alone: no other callback reads or sets its state.

    Args:
        num_clusters: Clusters for k-means; default ``num_classes``.
        num_classes: Ground-truth classes; default from the datamodule or labels.
        class_counts: Training images per class (head/medium/tail groups).
        every_n_epochs: Evaluate on epochs ``n - 1, 2n - 1, ...`` (0-based) of a fit.
        source: ``"auto"``, ``"kmeans"`` or ``"head"`` (see above).
        prefix: Prefix of the logged keys.
        kmeans_n_init: k-means seedings per evaluation.
        seed: k-means seed (the same on every rank and epoch).
        max_samples: Evaluate on at most this many validation samples.
        kmeans_metric: ``"euclidean"`` or ``"cosine"`` (spherical k-means).
        test_prefix: Prefix of the keys logged by ``trainer.test()``, which is always
            evaluated; None ignores test runs.
        shot_thresholds: ``(many, few)`` training counts for the head/medium/tail groups
            instead of 30/40/30 % of the classes, e.g. ``(100, 20)`` for ImageNet-LT's
            many/medium/few-shot split (Liu et al. 2019).
        keep_outputs: Keep the last evaluation's embeddings, labels and predictions
            (CPU tensors, rank 0) in ``last_outputs``; see :meth:`evaluate`.

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[ClusteringEvaluator(num_clusters=10)])  # doctest: +SKIP
    """

    def __init__(
        self,
        num_clusters: int | None = None,
        num_classes: int | None = None,
        class_counts: list[int] | None = None,
        every_n_epochs: int = 1,
        source: str = "auto",
        prefix: str = "val/",
        kmeans_n_init: int = 3,
        seed: int = 0,
        max_samples: int | None = None,
        kmeans_metric: str = "euclidean",
        test_prefix: str = "test/",
        shot_thresholds: tuple[int, int] | None = None,
        keep_outputs: bool = False,
    ) -> None:
        if source not in _SOURCES:
            raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
        for name, value in (("num_clusters", num_clusters), ("num_classes", num_classes)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or >= 1, got {value}")
        if (class_counts is not None and num_classes is not None
                and len(class_counts) != num_classes):
            raise ValueError(f"class_counts must have num_classes={num_classes} entries, "
                             f"got {len(class_counts)}")
        KMeans(1, n_init=kmeans_n_init, metric=kmeans_metric)  # validates both
        super().__init__(every_n_epochs, max_samples, prefix, test_prefix)
        self.num_clusters = num_clusters
        self.num_classes = num_classes
        self.class_counts = class_counts
        self.source = source
        self.shot_thresholds = shot_thresholds
        self.kmeans_n_init = kmeans_n_init
        self.seed = seed
        self.kmeans_metric = kmeans_metric
        self.keep_outputs = keep_outputs
        self.last_metrics: dict[str, float] = {}
        self.last_epoch: int | None = None
        self.last_outputs: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix, source=self.source)

    def on_collected(self, trainer: Trainer, pl_module: LightningModule,
                     data: dict[str, torch.Tensor | None], prefix: str) -> None:
        """Score the gathered run on rank 0 and log the same numbers on every rank."""
        kept: dict[str, Any] = {}

        def compute() -> dict[str, float]:
            metrics, kept["outputs"] = self.evaluate(data, getattr(trainer, "datamodule", None),
                                                     prefix)
            return metrics

        self.last_metrics = self.log_from_rank_zero(trainer, pl_module, compute)
        self.last_epoch = trainer.current_epoch
        if self.keep_outputs and "outputs" in kept:
            kept["outputs"]["epoch"] = trainer.current_epoch
            self.last_outputs = kept["outputs"]

    # ----------------------------------------------------------------- computation
    def evaluate(self, data: dict[str, torch.Tensor | None], datamodule: Any = None,
                 prefix: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
        """Scores (keys with ``prefix``) and predictions from gathered validation data.

        Args:
            data: ``{"embeddings": (N, d), "cluster_probs": (N, K) or None,
                "labels": (N,)}``.
            datamodule: Optional object with ``num_classes`` / ``train_class_counts``.
            prefix: Prefix of the keys; default ``self.prefix``.

        Returns:
            The metrics dict and ``{"embeddings", "labels", "preds", "head_preds",
            "kmeans_preds", "num_classes", "class_counts"}`` (tensors on CPU).
        """
        prefix = self.prefix if prefix is None else prefix
        labels, emb, probs = data["labels"], data["embeddings"], data["cluster_probs"]
        if labels.numel() and int(labels.max()) < 0:
            return self._evaluate_unlabelled(emb, probs, labels, prefix)
        num_classes = self.num_classes or getattr(datamodule, "num_classes", None)
        class_counts = self.class_counts or getattr(datamodule, "train_class_counts", None)
        if num_classes is None:
            num_classes = len(class_counts) if class_counts is not None else int(labels.max()) + 1
        if class_counts is not None:
            class_counts = [int(c) for c in class_counts]
        if class_counts is not None and len(class_counts) != num_classes:
            raise ValueError(f"class_counts has {len(class_counts)} entries but "
                             f"num_classes={num_classes}")
        if self.source == "head" and probs is None:
            raise ValueError("ClusteringEvaluator(source='head') needs validation_step to "
                             "return {'embeddings': ..., 'cluster_probs': ...}")
        head_preds = kmeans_preds = None
        metrics: dict[str, float] = {}
        if probs is not None and self.source in ("auto", "head"):
            head_preds = probs.argmax(1)
            scores = clustering_scores(labels, head_preds, class_counts, num_classes,
                                       probs.shape[1], self.shot_thresholds)
            metrics.update({f"{prefix}{name}": v for name, v in scores.items()})
        if self.source in ("kmeans", "auto"):
            k = min(self.num_clusters or num_classes, emb.shape[0])
            kmeans_preds = KMeans(k, n_init=self.kmeans_n_init, seed=self.seed,
                                  metric=self.kmeans_metric).fit_predict(emb)
            scores = clustering_scores(labels, kmeans_preds, class_counts, num_classes, k,
                                       self.shot_thresholds)
            key = f"{prefix}kmeans_" if head_preds is not None else prefix
            metrics.update({f"{key}{name}": v for name, v in scores.items()})
        preds = head_preds if head_preds is not None else kmeans_preds
        outputs = {
            "num_clusters": probs.shape[1] if head_preds is not None else k,
            "embeddings": emb.cpu(), "labels": labels.cpu(), "preds": preds.cpu(),
            "head_preds": None if head_preds is None else head_preds.cpu(),
            "kmeans_preds": None if kmeans_preds is None else kmeans_preds.cpu(),
            "num_classes": num_classes, "class_counts": class_counts,
        }
        return metrics, outputs

    def _evaluate_unlabelled(self, emb: torch.Tensor, probs: torch.Tensor | None, labels: torch.Tensor,
                             prefix: str) -> tuple[dict[str, float], dict[str, Any]]:
        """Label-free diagnostics of the head's argmax (else of k-means with ``num_clusters``,
        else of k-means with the head's width), with the same outputs as :meth:`evaluate`."""
        if self.source == "head" and probs is None:
            raise ValueError("ClusteringEvaluator(source='head') needs validation_step to "
                             "return {'embeddings': ..., 'cluster_probs': ...}")
        head_preds = probs.argmax(1) if probs is not None and self.source in ("auto", "head") else None
        kmeans_preds, k = None, self.num_clusters or (probs.shape[1] if probs is not None else None)
        if head_preds is None and k is not None:
            k = min(k, emb.shape[0])
            kmeans_preds = KMeans(k, n_init=self.kmeans_n_init, seed=self.seed,
                                  metric=self.kmeans_metric).fit_predict(emb)
        preds = head_preds if head_preds is not None else kmeans_preds
        metrics: dict[str, float] = {}
        if preds is not None:
            found = label_free_diagnostics(emb, preds, probs if head_preds is not None else None, seed=self.seed)
            metrics = {f"{prefix}{name}": float(v) for name, v in found.items() if name != "cluster_sizes"}
        outputs = {
            "num_clusters": probs.shape[1] if head_preds is not None else k,
            "embeddings": emb.cpu(), "labels": labels.cpu(), "preds": None if preds is None else preds.cpu(),
            "head_preds": None if head_preds is None else head_preds.cpu(),
            "kmeans_preds": None if kmeans_preds is None else kmeans_preds.cpu(),
            "num_classes": 0, "class_counts": None,
        }
        return metrics, outputs

    # ----------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"last_metrics": dict(self.last_metrics), "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_metrics = dict(state_dict.get("last_metrics", {}))
        self.last_epoch = state_dict.get("last_epoch")
