"""How the module's cluster head comes to be, apart from the training step: built when K is
known or estimated (``num_clusters="auto"``), placed by k-means on the training features,
joined to a running optimizer, rebuilt from a checkpoint; and the running cluster prior."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dcl_cluster.cluster.centroids import kmeans_centroids
from dcl_cluster.cluster.estimate_k import KEstimate, NoClusterStructureError, score_num_clusters
from dcl_cluster.nn import cluster_head, feature_dim
from dcl_cluster.objectives.assembly import check_num_clusters

__all__ = ["ClusterHeadSetup", "NoClusterStructureError"]


class ClusterHeadSetup:
    """Mixed into :class:`~dcl_cluster.module.DebiasedClusterModule` (a LightningModule with
    ``backbone``, ``cluster_head``, ``cluster_prior``, ``head_kind`` and ``objectives``)."""

    def training_images_loader(self, why: str) -> Any:
        """The datamodule's un-augmented training images (``train_eval_dataloader()``)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "train_eval_dataloader"):
            raise ValueError(f"{why} on training features: train with a datamodule that has "
                             "train_eval_dataloader() (LongTailDataModule does)")
        return dm.train_eval_dataloader()

    @torch.no_grad()
    def embed_loader(self, loader: Any) -> Tensor:
        """Backbone features ``(N, F)`` (float32) of every batch ``(x, ...)`` of ``loader``, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self(batch[0].to(self.device)).float() for batch in loader])
        finally:
            self.train(was_training)

    @torch.no_grad()
    def _update_cluster_prior(self, q: Tensor, gathered: bool) -> None:
        batch_sizes = q.float().mean(dim=0)
        if not gathered and self._trainer is not None and self.trainer.world_size > 1:
            batch_sizes = self.trainer.strategy.reduce(batch_sizes, reduce_op="mean")
        m = self.hparams.prior_momentum
        self.cluster_prior.mul_(m).add_((1 - m) * batch_sizes)

    def estimate_num_clusters(self, loader: Any = None) -> int:
        """``K`` by :func:`~dcl_cluster.cluster.score_num_clusters` (at most ``max_clusters``,
        cosine for a cosine head, else Euclidean) on the backbone features of ``loader``
        (default the datamodule's ``train_eval_dataloader()``). The scores per ``K`` are kept
        as ``self.k_choice`` (saved in checkpoints, shown by ``report.html``) and drawn into
        the run folder (``k_scores.png``, ``k_scores.json``).

        Raises:
            NoClusterStructureError: the features show no clear cluster structure (mean
                silhouette below 0.25 at every ``K``); the message gives the scores and asks
                for ``num_clusters``.
        """
        loader = self.training_images_loader("num_clusters='auto' estimates K") if loader is None else loader
        features = self.embed_loader(loader).cpu()
        k_max = self.hparams.max_clusters
        if k_max > features.shape[0]:
            raise ValueError(f"max_clusters={k_max} is above the number of training images ({features.shape[0]}); "
                             f"use max_clusters <= {features.shape[0]}")
        metric = "cosine" if self.head_kind == "cosine" else "euclidean"
        estimate = score_num_clusters(features, k_max, seed=0, metric=metric)
        self.k_choice = estimate.as_dict()
        written = self._write_k_scores(estimate)
        if not estimate.structured:
            raise NoClusterStructureError(
                f"num_clusters='auto' stops: {estimate.explain()}. Training with a guessed K would give clusters "
                "that mean nothing. Set the number of clusters yourself: --model.num_clusters N (more than you "
                "expect is safe: after predict, `dcl-cluster recluster --predictions <folder> --num_clusters N` "
                "tries another K on the saved features in seconds)"
                + (f"; the scores per K are drawn in {written}" if written else "") + ".")
        return estimate.k

    def _write_k_scores(self, estimate: KEstimate) -> Any:
        """``k_scores.json`` and ``k_scores.png`` (mean silhouette per ``K``, the choice
        marked) in the trainer's log folder on global rank 0; returns the PNG's path or None."""
        trainer = self._trainer
        if trainer is None or not trainer.loggers or not trainer.is_global_zero:  # no run folder: nothing to write
            return None
        folder = trainer.log_dir
        if folder is None:
            return None
        from dcl_cluster.cluster.k_scores_plot import write_k_scores

        return write_k_scores(estimate, folder)

    def build_estimated_head(self, k: int | None = None) -> int:
        """With ``num_clusters="auto"``: estimate ``K`` (unless given), build the cluster head and
        the terms' state for it, add the head to the running optimizer (and its schedule), log
        ``train/num_clusters`` and store ``K`` in the hyperparameters. Returns ``K``."""
        k = self.estimate_num_clusters() if k is None else int(k)
        self._build_head(k)
        if self._trainer is not None and self.trainer.optimizers and self.cluster_head is not None:
            self._add_head_to_optimizer(self.trainer.optimizers[0], self.trainer.lr_scheduler_configs)
        self.log("train/num_clusters", float(k), on_step=False, on_epoch=True)
        print(f"num_clusters='auto': estimated K={k} (max_clusters={self.hparams.max_clusters}) on the training "
              f"features at epoch {self.current_epoch}", flush=True)
        return k

    def _build_head(self, k: int, dim: int | None = None) -> None:
        """The cluster head and the terms' state for ``k`` clusters, on the module's device."""
        hp = self.hparams
        check_num_clusters(k)
        if self.head_kind is not None:
            dim = dim or feature_dim(self.backbone, hp.in_channels, hp.input_size)
            self.cluster_head = cluster_head(self.head_kind, dim, k, alpha=hp.student_t_alpha,
                                             hidden_dim=hp.cluster_hidden_dim, scale=hp.cosine_scale).to(self.device)
            self.cluster_prior = torch.full((k,), 1.0 / k, device=self.device)
        for term in self.objectives:
            term.build(k)
            term.to(self.device)
        self.hparams.num_clusters = k

    def _add_head_to_optimizer(self, optimizer: Any, scheduler_configs: Any = ()) -> None:
        """Append the head's parameters as a new group with the first group's settings; a
        LambdaLR gets the first group's schedule for it, at the current step's factor."""
        settings = {k: v for k, v in optimizer.param_groups[0].items() if k not in ("params", "initial_lr")}
        group = {**settings, "params": list(self.cluster_head.parameters())}
        for config in scheduler_configs or ():
            scheduler = config.scheduler
            if scheduler.optimizer is optimizer and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                base = scheduler.base_lrs[0]
                group.update(initial_lr=base, lr=base * scheduler.lr_lambdas[0](scheduler.last_epoch))
                optimizer.add_param_group(group)
                scheduler.base_lrs.append(base)
                scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
                if hasattr(scheduler, "_last_lr"):
                    scheduler._last_lr.append(group["lr"])
                break
        else:
            optimizer.add_param_group(group)
        self._head_param_group = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a run that estimated K (num_clusters="auto") saved a head of that size and an optimizer
        # whose last group is the head: rebuild both before the state loads
        if isinstance(checkpoint.get("k_choice"), dict):  # how num_clusters='auto' chose K
            self.k_choice = checkpoint["k_choice"]
        k = checkpoint.get("hyper_parameters", {}).get("num_clusters")
        has_head = any(key.startswith("cluster_head.") for key in checkpoint.get("state_dict", {}))
        if isinstance(k, int) and has_head and self.cluster_head is None and self.head_kind is not None:
            self._build_head(k)
        groups = [len(s.get("param_groups", ())) for s in checkpoint.get("optimizer_states", ())]
        if groups and groups[0] == 2 and self.cluster_head is not None:
            self._head_param_group = True

    @torch.no_grad()
    def init_centroids(self, loader: Any = None) -> None:
        """Initialise a k-means initialised cluster head (Student-t centroids, cosine
        prototypes) and the cluster prior by k-means on the backbone features of the
        training set, identically on every process; the terms' own k-means initialised heads
        (:meth:`~dcl_cluster.objectives.Objective.kmeans_heads`) from the same features.

        Args:
            loader: Batches ``(x, ...)`` of un-augmented training images; default the
                datamodule's ``train_eval_dataloader()``.
        """
        if loader is None:
            loader = self.training_images_loader("the cluster head is initialised (or call init_centroids(loader))")
        features = self.embed_loader(loader)
        sizes = self._place_by_kmeans(self.cluster_head, features)
        self.cluster_prior.copy_((sizes / sizes.sum()).to(self.cluster_prior))
        for term in self.objectives:
            for head in term.kmeans_heads():
                self._place_by_kmeans(head, features)

    def _place_by_kmeans(self, head: Any, features: Tensor) -> Tensor:
        """``head.init_centroids`` at the k-means centres (``head.num_clusters`` of them) of the
        features (L2-normalised for a cosine head), rank 0's everywhere; returns the sizes."""
        if getattr(head, "normalize_features", False):
            features = F.normalize(features, dim=1)
        centers, sizes = kmeans_centroids(features, head.num_clusters, self.hparams.kmeans_n_init,
                                          seed=self.hparams.get("kmeans_seed", 0))
        centers = centers.to(self.device)
        if self._trainer is not None and self.trainer.world_size > 1:  # rank 0's result everywhere
            centers = self.trainer.strategy.broadcast(centers, src=0)
            sizes = self.trainer.strategy.broadcast(sizes, src=0)
        head.init_centroids(centers)
        return sizes
