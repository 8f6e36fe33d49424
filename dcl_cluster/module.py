"""DebiasedClusterModule: the LightningModule that trains a backbone with the debiased
contrastive loss and a clustering objective jointly (METHOD.md 2.4).

One backbone forward for all views; the projector feeds the contrastive loss and the
cluster head the clustering terms. Objective terms are a name -> (weight, value) dict
built by :meth:`DebiasedClusterModule.loss_terms`, which a subclass extends with a line.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from dcl_cluster.cluster.centroids import kmeans_centroids
from dcl_cluster.losses import (
    ClusterContrastiveLoss,
    DebiasedContrastiveLoss,
    DECClusteringLoss,
    HardNegativeLoss,
    InfoNCELoss,
    anchor_loss,
)
from dcl_cluster.nn import ClusterHead, MLPProjectionHead, ResNet, SmallCNN, feature_dim
from dcl_cluster.objective import StepOutputs, check_finite, check_num_clusters, step_metrics, validate_objective
from dcl_cluster.optim import build_optimizer
from dcl_cluster.presets import preset

__all__ = ["DebiasedClusterModule", "StepOutputs"]

class DebiasedClusterModule(pl.LightningModule):
    """Joint debiased contrastive learning and clustering for long-tailed images.

    Implements METHOD.md 2.4: ``L = L_con + gamma * L_clu + delta * L_anc`` with ``L_con``
    InfoNCE (Chen et al. 2020), the debiased loss (Chuang et al. 2020) with a constant,
    uniform or cluster-prior ``tau+`` (METHOD.md 1.3), or the hard-negative loss (Robinson
    et al. 2021); ``L_clu`` DEC (Xie et al. 2016) or the cluster-level loss of CC (Li et
    al. 2021); ``L_anc`` the anchor loss (Sundareswaran et al. 2021).

    Dataset facts (``in_channels``, ``input_size``, ``num_clusters`` = number of classes)
    are read from the datamodule at ``setup`` when not given, and then stored in the
    hyperparameters so checkpoints reload without it.

    Args:
        backbone: Feature extractor (``nn.Module``; an ``out_dim`` attribute saves a dummy
            forward). ``None``: :class:`~dcl_cluster.nn.SmallCNN` up to 64 px, else a
            ResNet-18.
        projector: Head from features to the contrastive space; ``None``: a 2-layer MLP.
        in_channels: Image channels; ``None``: from the datamodule.
        input_size: Image side in pixels; ``None``: the datamodule's ``image_size``.
        num_clusters: ``K >= 2``; ``None``: the datamodule's number of classes.
        backbone_width: Width of the default SmallCNN.
        projection_dim: Size of ``z``.
        projection_hidden_dim: Hidden width of the default projector.
        contrastive: ``"info_nce"``, ``"debiased"`` or ``"hard_negative"``.
        temperature: Contrastive temperature ``t > 0``.
        tau_plus: A float in ``[0, 1)``, ``"uniform"`` (1/K) or ``"cluster_prior"``.
        tau_plus_warmup: Constant ``tau+`` used by ``"cluster_prior"`` until the cluster
            head is initialised.
        tau_min: Lower clip of the per-anchor cluster-prior ``tau+``.
        tau_max: Upper clip of the per-anchor cluster-prior ``tau+``.
        prior_momentum: EMA momentum of the cluster-size prior ``pi`` (estimated by k-means
            at the end of the warm-up, then from the head's assignments); 1 keeps the
            k-means estimate.
        beta: Hard-negative concentration (``contrastive="hard_negative"``).
        clustering: ``"none"``, ``"dec"`` (Student-t centroids) or ``"cc"`` (softmax head).
        gamma: Weight of the clustering term.
        delta: Weight of the anchor loss (needs a clean view and a cluster head).
        size_exponent: DEC target's cluster-size exponent (1 = DEC, 0 = no size pressure).
        dec_target: DEC target: ``"batch"`` sizes, ``"dataset"`` sizes (the prior ``pi``),
            or ``"prior"``-matched sizes (see :class:`~dcl_cluster.losses.DECClusteringLoss`).
        dec_input: ``"clean"`` (the un-augmented view; the datamodule needs
            ``clean_view=True``) or ``"views"`` (both augmented views).
        dec_alpha: Student-t degrees of freedom.
        cluster_temperature: Cluster-level temperature of CC.
        cluster_hidden_dim: Hidden width of the softmax cluster head.
        detach_cluster_input: Feed the cluster head detached features: the clustering and
            anchor terms then train the head only, the encoder the contrastive loss alone.
        warmup_epochs: Epochs of contrastive-only training before the clustering terms;
            DEC centroids are initialised by k-means on training features at its end.
        kmeans_n_init: k-means restarts for the centroid initialisation.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: Peak learning rate.
        weight_decay: Weight decay.
        momentum: SGD momentum.
        lr_warmup_epochs: Linear learning-rate warm-up epochs.
        cosine: Cosine decay of the learning rate after the warm-up, per step.
        gather_distributed: Gather projections and assignments across DDP processes, so
            negatives and cluster frequencies come from the global batch.
        channels_last: Run the backbone in channels-last memory format.

    Examples:
        >>> module = DebiasedClusterModule.from_preset("dcl_cluster", in_channels=1, input_size=8,
        ...                                            num_clusters=10, backbone_width=8)
        >>> module(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 64])
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        projector: nn.Module | None = None,
        in_channels: int | None = None,
        input_size: int | None = None,
        num_clusters: int | None = None,
        backbone_width: int = 32,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        contrastive: str = "debiased",
        temperature: float = 0.5,
        tau_plus: float | str = 0.1,
        tau_plus_warmup: float = 0.1,
        tau_min: float = 1e-3,
        tau_max: float = 0.5,
        prior_momentum: float = 0.99,
        beta: float = 1.0,
        clustering: str = "dec",
        gamma: float = 1.0,
        delta: float = 0.0,
        size_exponent: float = 1.0,
        dec_target: str = "batch",
        dec_input: str = "clean",
        dec_alpha: float = 1.0,
        cluster_temperature: float = 1.0,
        cluster_hidden_dim: int = 512,
        detach_cluster_input: bool = False,
        warmup_epochs: int = 0,
        kmeans_n_init: int = 3,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
        lr_warmup_epochs: int = 0,
        cosine: bool = True,
        gather_distributed: bool = True,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("backbone", backbone), ("projector", projector)):
            if isinstance(value, str):  # a checkpoint of an injected module, reloaded without it
                raise ValueError(
                    f"this checkpoint was trained with an injected {name} ({value}); pass "
                    f"{name}=<the same architecture> to load_from_checkpoint"
                )
        with warnings.catch_warnings():  # injected modules are handled just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        for name in ("backbone", "projector"):
            value = self.hparams.get(name)
            # A module built in Python: its weights live in the state dict; keep a marker.
            # (Under LightningCLI the hparams hold its class_path config, which reloads.)
            if isinstance(value, nn.Module):
                self.hparams[name] = f"injected {type(value).__qualname__}"
        validate_objective(self.hparams)
        self.backbone = backbone
        self.projector = projector
        self.cluster_head: ClusterHead | None = None
        self.register_buffer("cluster_prior", torch.empty(0))
        self.contrastive_loss = self._make_contrastive_loss()
        self.dec_loss = DECClusteringLoss(size_exponent, gather_distributed, dec_target)
        self.cc_loss = ClusterContrastiveLoss(cluster_temperature, gather_distributed)
        if None not in (in_channels, input_size) and (num_clusters is not None or clustering == "none"):
            self._build(in_channels, input_size, num_clusters)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DebiasedClusterModule:
        """Build the module with preset ``name`` (``simclr``, ``dcl``, ``cc``, ``sic``,
        ``dcl_cluster``; METHOD.md 2.4), any argument overridden."""
        return cls(**{**preset(name), **overrides})

    def _make_contrastive_loss(self) -> nn.Module:
        hp = self.hparams
        t, gather = hp.temperature, hp.gather_distributed
        if hp.contrastive == "info_nce":
            return InfoNCELoss(t, gather)
        default_tau = hp.tau_plus if isinstance(hp.tau_plus, float | int) else hp.tau_plus_warmup
        if hp.contrastive == "debiased":
            return DebiasedContrastiveLoss(t, default_tau, gather)
        return HardNegativeLoss(t, default_tau, hp.beta, gather)

    def _build(self, in_channels: int, image_size: int, num_clusters: int | None) -> None:
        hp = self.hparams
        if self.backbone is None:
            small = image_size <= 64  # else ResNet-18 with the ImageNet stem
            self.backbone = (SmallCNN(in_channels, hp.backbone_width) if small
                             else ResNet(cifar_stem=False, in_channels=in_channels))
        dim = feature_dim(self.backbone, in_channels, image_size)
        if self.projector is None:
            self.projector = MLPProjectionHead(dim, hp.projection_hidden_dim, hp.projection_dim)
        if hp.clustering != "none" and self.cluster_head is None:
            check_num_clusters(num_clusters)
            kind = "student_t" if hp.clustering == "dec" else "softmax"
            self.cluster_head = ClusterHead(dim, num_clusters, kind, hp.dec_alpha, hp.cluster_hidden_dim)
            self.cluster_prior = torch.full((num_clusters,), 1.0 / num_clusters)
        if hp.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.hparams.update(in_channels=in_channels, input_size=image_size, num_clusters=num_clusters)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        facts = {
            "in_channels": hp.in_channels if hp.in_channels is not None else getattr(dm, "num_channels", None),
            "input_size": hp.input_size if hp.input_size is not None else getattr(dm, "image_size", None),
            "num_clusters": hp.num_clusters if hp.num_clusters is not None else getattr(dm, "num_classes", None),
        }
        missing = [k for k, v in facts.items() if v is None and (k != "num_clusters" or hp.clustering != "none")]
        if missing:
            raise ValueError(f"{', '.join(missing)} unknown: pass them to DebiasedClusterModule or train with a "
                             "datamodule that has num_channels, image_size and num_classes (LongTailDataModule has)")
        if self.projector is None or (hp.clustering != "none" and self.cluster_head is None):
            self._build(facts["in_channels"], facts["input_size"], facts["num_clusters"])
        needs_clean = hp.delta > 0 or (hp.clustering == "dec" and hp.dec_input == "clean")
        if needs_clean and dm is not None and getattr(dm, "hparams", {}).get("clean_view") is False:
            raise ValueError(
                "this objective needs the un-augmented view (dec_input='clean' or delta > 0): "
                "set clean_view=True in the datamodule, or dec_input='views' with delta=0"
            )

    def on_fit_start(self) -> None:
        hp, max_epochs = self.hparams, self.trainer.max_epochs
        if hp.clustering != "none" and max_epochs not in (None, -1) and hp.warmup_epochs >= max_epochs:
            raise ValueError(
                f"warmup_epochs={hp.warmup_epochs} leaves no epoch for the clustering terms with "
                f"trainer.max_epochs={max_epochs}: use warmup_epochs < max_epochs"
            )

    def forward(self, x: Tensor) -> Tensor:
        """Backbone features ``h`` (the embeddings used for k-means and kNN evaluation)."""
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x).flatten(1)

    @property
    def clustering_active(self) -> bool:
        """Whether the clustering terms are on: past the warm-up with a ready head."""
        head = self.cluster_head
        return head is not None and head.ready and self.current_epoch >= self.hparams.warmup_epochs

    def shared_step(self, views: list[Tensor]) -> StepOutputs:
        """One backbone forward for all views, then the projector and the cluster head."""
        if len(views) not in (2, 3):
            raise ValueError(f"a training batch needs 2 views (+1 clean view), got {len(views)}")
        n = views[0].shape[0]
        h = self(torch.cat(views))  # (V*B, F)
        z = self.projector(h[: 2 * n])  # (2B, projection_dim)
        h_clean = h[2 * n :] if len(views) == 3 else None
        out = StepOutputs(h_a=h[:n], h_b=h[n : 2 * n], z_a=z[:n], z_b=z[n:], h_clean=h_clean)
        if self.clustering_active:
            q = self.cluster_head(h.detach() if self.hparams.detach_cluster_input else h)  # (V*B, K)
            out.q_a, out.q_b = q[:n], q[n : 2 * n]
            out.q_clean = q[2 * n :] if len(views) == 3 else None
        return out

    def tau_plus_per_anchor(self, out: StepOutputs) -> float | Tensor:
        """``tau+`` for the 2B anchors: constant, 1/K, or ``clip(q_i . pi)`` (METHOD.md 1.3)."""
        hp = self.hparams
        if hp.tau_plus == "uniform":
            return 1.0 / hp.num_clusters
        if hp.tau_plus == "cluster_prior":
            if out.q_a is None:
                return hp.tau_plus_warmup
            q = torch.cat([out.q_a, out.q_b]).detach().float()  # (2B, K), ordered [a, b]
            return (q @ self.cluster_prior.float()).clamp(hp.tau_min, hp.tau_max)
        return float(hp.tau_plus)

    def loss_terms(self, out: StepOutputs, tau_plus: float | Tensor) -> dict[str, tuple[float, Tensor]]:
        """Every objective term as ``name -> (weight, value)``; extend in a subclass."""
        hp = self.hparams
        if hp.contrastive == "info_nce":
            terms = {"contrastive": (1.0, self.contrastive_loss(out.z_a, out.z_b))}
        else:
            terms = {"contrastive": (1.0, self.contrastive_loss(out.z_a, out.z_b, tau_plus))}
        if out.q_a is None:
            return terms
        if hp.clustering == "dec":
            if hp.dec_input == "clean":
                q = self._require_clean(out.q_clean, "dec_input='clean'")
            else:
                q = torch.cat([out.q_a, out.q_b])
            terms["clustering"] = (hp.gamma, self.dec_loss(q, prior=self.cluster_prior))
        elif hp.clustering == "cc":
            terms["clustering"] = (hp.gamma, self.cc_loss(out.q_a, out.q_b))
        if hp.delta > 0:
            q_clean = self._require_clean(out.q_clean, f"delta={hp.delta} (the anchor loss)")
            terms["anchor"] = (hp.delta, anchor_loss(q_clean, out.q_a, out.q_b))
        return terms

    @staticmethod
    def _require_clean(q_clean: Tensor | None, what: str) -> Tensor:
        if q_clean is None:
            raise ValueError(f"{what} needs the un-augmented view: set clean_view=True in the datamodule")
        return q_clean

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        views = batch[0]
        out = self.shared_step(list(views))
        tau = self.tau_plus_per_anchor(out)
        terms = self.loss_terms(out, tau)
        loss = sum(weight * value for weight, value in terms.values())
        if self.cluster_head is not None and out.q_a is None:
            # The head is idle in the warm-up: a zero term keeps it in the graph for DDP.
            loss = loss + 0.0 * sum(p.sum() for p in self.cluster_head.parameters())
        check_finite(loss, terms, f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})")
        if out.q_a is not None:
            self._update_cluster_prior(torch.cat([out.q_a, out.q_b]).detach())
        self._log_step(loss, terms, tau, len(views[0]))
        return loss

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # The idle head's zero gradient only kept DDP happy: drop it, or weight decay erases the head.
        if self.cluster_head is not None and not self.clustering_active:
            for p in self.cluster_head.parameters():
                p.grad = None

    @torch.no_grad()
    def _update_cluster_prior(self, q: Tensor) -> None:
        batch_sizes = q.float().mean(dim=0)
        if self.trainer.world_size > 1:
            batch_sizes = self.trainer.strategy.reduce(batch_sizes, reduce_op="mean")
        m = self.hparams.prior_momentum
        self.cluster_prior.mul_(m).add_((1 - m) * batch_sizes)

    def _log_step(self, loss: Tensor, terms: dict, tau: float | Tensor, batch_size: int) -> None:
        tau = tau if self.hparams.contrastive != "info_nce" else None  # InfoNCE has no tau+
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log_dict(step_metrics(terms, tau, self.cluster_prior), batch_size=batch_size)

    def on_train_epoch_start(self) -> None:
        head = self.cluster_head
        if head is not None and not head.ready and self.current_epoch >= self.hparams.warmup_epochs:
            self.init_centroids()

    @torch.no_grad()
    def init_centroids(self, loader: Any = None) -> None:
        """Initialise the DEC centroids (and the cluster prior) by k-means on the backbone
        features of the training set, identically on every process.

        Args:
            loader: Batches ``(x, ...)`` of un-augmented training images; default the
                datamodule's ``train_eval_dataloader()``.
        """
        if loader is None:
            dm = getattr(self.trainer, "datamodule", None)
            if dm is None or not hasattr(dm, "train_eval_dataloader"):
                raise ValueError("DEC centroids are initialised from training features: train with a datamodule "
                                 "that has train_eval_dataloader() (LongTailDataModule does) or call "
                                 "init_centroids(loader)")
            loader = dm.train_eval_dataloader()
        was_training = self.training
        self.eval()
        features = torch.cat([self(batch[0].to(self.device)).float() for batch in loader])
        self.train(was_training)
        centers, sizes = kmeans_centroids(features, self.cluster_head.num_clusters, self.hparams.kmeans_n_init)
        centers = centers.to(self.device)
        if self._trainer is not None and self.trainer.world_size > 1:  # rank 0's result everywhere
            centers = self.trainer.strategy.broadcast(centers, src=0)
            sizes = self.trainer.strategy.broadcast(sizes, src=0)
        self.cluster_head.init_centroids(centers)
        self.cluster_prior.copy_((sizes / sizes.sum()).to(self.cluster_prior))

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Returns the evaluator protocol's ``{"embeddings", "cluster_probs"}``."""
        return self._embed(batch[0])

    test_step = validation_step

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        out = self._embed(batch[0])
        if "cluster_probs" in out:
            out["cluster"] = out["cluster_probs"].argmax(dim=1)
        return out

    def _embed(self, x: Tensor) -> dict[str, Tensor]:
        h = self(x)
        out = {"embeddings": h.float()}
        if self.cluster_head is not None and self.cluster_head.ready:
            out["cluster_probs"] = self.cluster_head(h).float()
        return out

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return build_optimizer(
            self.parameters(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum, hp.lr_warmup_epochs,
            hp.cosine, self.trainer.estimated_stepping_batches, self.trainer.max_epochs,
        )

    def export_backbone(self, path: str) -> None:
        """Save the backbone's plain ``state_dict`` (loadable without this package).

        A :class:`~dcl_cluster.nn.ResNet` is saved as torchvision's ResNet with
        ``fc = nn.Identity()`` (and, with the CIFAR stem, a 3x3 ``conv1`` and no max-pool).
        """
        backbone = self.backbone.net if isinstance(self.backbone, ResNet) else self.backbone
        state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
        torch.save(state, path)
