"""DebiasedClusterModule: the LightningModule that trains a backbone on a list of objective
terms, contrastive and clustering, jointly (METHOD.md 2.4).

One backbone forward for all views; the projector feeds the contrastive terms and the
cluster head the clustering terms; projections and head outputs are gathered across
processes once, and every term sees the global batch. The module never asks which terms it
runs: it reads what they need (views, a head, the cluster prior) once, at ``setup``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from dcl_cluster.distributed import gather_with_grad, world_size
from dcl_cluster.frozen_encoder import FrozenEncoderFeatures
from dcl_cluster.head_setup import ClusterHeadSetup
from dcl_cluster.losses.checks import tensor_value_checks
from dcl_cluster.nn import MLPProjectionHead, ResNet, SmallCNN, feature_dim
from dcl_cluster.nn.heads import HEAD_KINDS
from dcl_cluster.objectives import Objective, StepOutputs, apply_term_settings, build_objectives
from dcl_cluster.objectives.assembly import check_finite, check_num_clusters, head_kind_for, step_metrics, views_for
from dcl_cluster.objectives.base import Needs, TermSettingError
from dcl_cluster.optim import build_optimizer
from dcl_cluster.presets import preset

__all__ = ["DebiasedClusterModule", "StepOutputs"]


class DebiasedClusterModule(ClusterHeadSetup, FrozenEncoderFeatures, pl.LightningModule):
    """Joint debiased contrastive learning and clustering for long-tailed images.

    Trains ``sum(term.weight * term(step) for term in objectives)`` (METHOD.md 2.4); the
    terms live in :mod:`dcl_cluster.objectives` and the presets of
    :func:`~dcl_cluster.presets.preset` are lists of them. Dataset facts (``in_channels``,
    ``input_size``, ``num_clusters`` = number of classes) are read from the datamodule at
    ``setup`` when not given, then stored in the hyperparameters so checkpoints reload
    without it.

    Args:
        objectives: The terms (``Objective`` instances or ``class_path`` configs); ``None``:
            the ``dcl_cluster`` preset.
        term_settings: Changes to the terms' settings, ``{"<term name>.<setting>": value}``
            (a bare ``"<setting>"`` when one term has it): the command line's one-liner,
            ``--model.term_settings '{contrastive.tau_plus: 0.05}'``.
        backbone: Feature extractor (``nn.Module``; an ``out_dim`` attribute saves a dummy
            forward). ``None``: :class:`~dcl_cluster.nn.SmallCNN` up to 64 px, else a
            ResNet-18.
        projector: Head from features to the contrastive space; ``None``: a 2-layer MLP.
        in_channels: Image channels; ``None``: from the datamodule.
        input_size: Image side in pixels; ``None``: the datamodule's ``image_size``.
        num_clusters: ``K >= 2``; ``None``: the datamodule's number of classes; ``"auto"``:
            estimated (:func:`~dcl_cluster.cluster.estimate_num_clusters`, at most
            ``max_clusters``) on the training features at the end of the warm-up (which must be
            at least one epoch), when the cluster head is built; then logged as
            ``train/num_clusters`` and stored in the hyperparameters, so checkpoints reload
            with it. One process only (the head's parameters join the optimizer then).
        max_clusters: Largest ``K`` that ``num_clusters="auto"`` considers, in ``[2, N]``.
        backbone_width: Width of the default SmallCNN.
        projection_dim: Size of ``z``.
        projection_hidden_dim: Hidden width of the default projector.
        cluster_head: Kind of cluster head (``"student_t"``, ``"softmax"``, ``"cosine"``);
            ``None``: the one the terms prefer (none when no term needs one).
        cluster_hidden_dim: Hidden width of the softmax head.
        student_t_alpha: Degrees of freedom of the Student-t head.
        cosine_scale: Logit scale of the cosine head.
        prior_momentum: EMA momentum of the cluster-size prior ``pi`` (k-means sizes at the
            end of the warm-up, then the head's assignments); 1 keeps the k-means estimate.
        detach_cluster_input: Feed the cluster head detached features: the clustering terms
            then train the head only, the encoder the contrastive terms alone.
        warmup_epochs: Epochs of contrastive-only training before the clustering terms;
            k-means initialised heads are initialised on training features at its end.
        kmeans_n_init: k-means restarts for that initialisation.
        kmeans_seed: Seed of that k-means (vary it, with the trainer's seed, to repeat a run on
            the same data with another initialisation of the head).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: Peak learning rate.
        weight_decay: Weight decay.
        momentum: SGD momentum.
        lr_warmup_epochs: Linear learning-rate warm-up epochs.
        cosine: Cosine decay of the learning rate after the warm-up, per step.
        gather_distributed: Gather projections and head outputs across DDP processes, so
            negatives, cluster sizes and transport plans span the global batch.
        channels_last: Run the backbone in channels-last memory format.

    Examples:
        >>> module = DebiasedClusterModule.from_preset("dcl_cluster", in_channels=1, input_size=8,
        ...                                            num_clusters=10, backbone_width=8)
        >>> module(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 64])
    """

    def __init__(
        self,
        objectives: list[Objective] | None = None,
        term_settings: dict[str, Any] | None = None,
        backbone: nn.Module | None = None,
        projector: nn.Module | None = None,
        in_channels: int | None = None,
        input_size: int | None = None,
        num_clusters: int | str | None = None,
        max_clusters: int = 50,
        backbone_width: int = 32,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        cluster_head: str | None = None,
        cluster_hidden_dim: int = 512,
        student_t_alpha: float = 1.0,
        cosine_scale: float = 10.0,
        prior_momentum: float = 0.99,
        detach_cluster_input: bool = False,
        warmup_epochs: int = 0,
        kmeans_n_init: int = 3,
        kmeans_seed: int = 0,
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
        terms = build_objectives(preset("dcl_cluster")["objectives"] if objectives is None else objectives)
        terms = apply_term_settings(terms, term_settings or {})
        # save_hyperparameters reads these locals: the terms as configs, settings applied
        objectives, term_settings = [t.config() for t in terms], None  # noqa: F841
        with warnings.catch_warnings():  # injected modules are handled just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        if "objectives" in self.hparams:  # a subclass's **kwargs shadow the locals above: say it again
            self.hparams.update(objectives=objectives, term_settings=None)
        for name in ("backbone", "projector"):
            value = self.hparams.get(name)
            # A module built in Python: its weights live in the state dict; keep a marker.
            # (Under LightningCLI the hparams hold its class_path config, which reloads.)
            if isinstance(value, nn.Module):
                self.hparams[name] = f"injected {type(value).__qualname__}"
        self._terms = terms  # read by _check_settings; registered as self.objectives below
        self._check_settings()
        self.objectives = nn.ModuleList(terms)
        self.head_kind = head_kind_for(terms, cluster_head, list(HEAD_KINDS))
        self.extra_views = views_for(terms)
        self.backbone = backbone
        self.projector = projector
        self.cluster_head: nn.Module | None = None
        self.register_buffer("cluster_prior", torch.empty(0))
        self._clustering_start_step = 0
        self._total_steps = 0.0
        self._head_param_group = False  # the head was added to the optimizer as its own group (auto K)
        self._plan_key: tuple[int, bool] | None = None  # the (epoch, phase) that _step_plan last read
        self._plan: tuple[list[tuple[Objective, Needs]], frozenset[str]] = ([], frozenset())
        if None not in (in_channels, input_size) and (num_clusters is not None or not self._needs_k()):
            self._build(in_channels, input_size, num_clusters)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DebiasedClusterModule:
        """Build the module with preset ``name``, any argument overridden.

        An override that is not a module argument sets the term setting of that name
        (``tau_plus=0.05`` on the ``dcl`` preset's debiased term); ``"<term name>.<setting>"``
        picks the term when several have the setting (``**{"anchor.weight": 0.5}``); see
        :func:`~dcl_cluster.objectives.apply_term_settings`.

        Examples:
            >>> m = DebiasedClusterModule.from_preset("dcl", tau_plus=0.05)
            >>> m.objectives[0].tau_plus
            0.05
        """
        kwargs = preset(name)
        # a subclass's own arguments and, through its **kwargs, the module's
        module_args = {name for klass in (cls, DebiasedClusterModule)
                       for name in inspect.signature(klass.__init__).parameters} - {"self"}
        settings = {k: v for k, v in overrides.items() if k not in module_args}
        kwargs.update({k: v for k, v in overrides.items() if k in module_args})
        try:
            kwargs["objectives"] = apply_term_settings(kwargs["objectives"], settings)
        except TermSettingError as err:
            raise TypeError(f"an override of preset {name!r} is neither an argument of {cls.__name__} nor a "
                            f"term setting: {err}") from None
        return cls(**kwargs)

    def _check_settings(self) -> None:
        hp = self.hparams
        if not 0 <= hp.prior_momentum <= 1:
            raise ValueError(f"prior_momentum must be in [0, 1], got {hp.prior_momentum}")
        if hp.warmup_epochs < 0 or hp.lr_warmup_epochs < 0:
            raise ValueError("warmup_epochs and lr_warmup_epochs must be >= 0, got "
                             f"{hp.warmup_epochs} and {hp.lr_warmup_epochs}")
        if hp.num_clusters == "auto":
            if isinstance(hp.max_clusters, bool) or not isinstance(hp.max_clusters, int) or hp.max_clusters < 2:
                raise ValueError(f"max_clusters must be an integer >= 2, got {hp.max_clusters!r}")
            if hp.warmup_epochs < 1:
                raise ValueError(f"num_clusters='auto' estimates K on the features at the end of the warm-up: set "
                                 f"warmup_epochs >= 1, got {hp.warmup_epochs}")
            early = [type(t).__name__ for t in self._terms if t.needs().num_clusters and not t.needs().clustering]
            if early:
                raise ValueError(f"num_clusters='auto' knows K only after the warm-up, but {', '.join(early)} "
                                 "needs it from the first step (tau_plus='uniform' is 1/K): give num_clusters or "
                                 "another tau_plus")
        elif isinstance(hp.num_clusters, str):
            raise ValueError(f"num_clusters must be an integer >= 2 or 'auto', got {hp.num_clusters!r}")
        elif hp.num_clusters is not None:
            check_num_clusters(hp.num_clusters)

    def _needs_k(self) -> bool:
        """Whether the number of clusters must be known to build (a head, or a term asks)."""
        return self.head_kind is not None or any(t.needs().prior or t.needs().num_clusters for t in self.objectives)

    def _build(self, in_channels: int, image_size: int, num_clusters: int | str | None) -> None:
        hp = self.hparams
        auto = num_clusters == "auto"  # the head and the terms' state wait for the estimate
        if self.backbone is None:
            small = image_size <= 64  # else ResNet-18 with the ImageNet stem
            self.backbone = (SmallCNN(in_channels, hp.backbone_width) if small
                             else ResNet(cifar_stem=False, in_channels=in_channels))
        dim = feature_dim(self.backbone, in_channels, image_size)
        if self.projector is None:
            self.projector = MLPProjectionHead(dim, hp.projection_hidden_dim, hp.projection_dim)
        self.hparams.update(in_channels=in_channels, input_size=image_size, num_clusters=num_clusters)
        if self.head_kind is not None and self.cluster_head is None and not auto:
            self._build_head(num_clusters, dim)  # the head, the prior and the terms' state
        elif not auto:
            for term in self.objectives:
                term.build(num_clusters)
        if hp.detach_cluster_input and self.cluster_head is None and not (auto and self.head_kind is not None):
            raise ValueError("detach_cluster_input=True needs a cluster head: no objective term uses one "
                             "(set cluster_head or add a clustering term)")
        if hp.channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        facts = {
            "in_channels": hp.in_channels if hp.in_channels is not None else getattr(dm, "num_channels", None),
            "input_size": hp.input_size if hp.input_size is not None else getattr(dm, "image_size", None),
            # an unlabelled source has 0 classes: no count to take K from
            "num_clusters": hp.num_clusters if hp.num_clusters is not None else (getattr(dm, "num_classes", None)
                                                                                 or None),
        }
        missing = [k for k, v in facts.items() if v is None and (k != "num_clusters" or self._needs_k())]
        if "num_clusters" in missing and getattr(dm, "labelled", True) is False:
            raise ValueError("num_clusters unknown: the dataset has no labels to count classes; set num_clusters "
                             "to an integer >= 2, or to 'auto' to estimate it (--model.num_clusters auto)")
        if missing:
            raise ValueError(f"{', '.join(missing)} unknown: pass them to DebiasedClusterModule or train with a "
                             "datamodule that has num_channels, image_size and num_classes (LongTailDataModule has)")
        if self.projector is None or (self.head_kind is not None and self.cluster_head is None):
            self._build(facts["in_channels"], facts["input_size"], facts["num_clusters"])
        if stage == "fit":
            self._check_max_clusters(dm)
        for term in self.objectives:
            term.check()
        if stage == "fit" and self.extra_views and dm is not None:
            self._request_views(dm)
        if stage == "fit" and dm is not None and self._trainer is not None:
            self.serve_frozen_features(dm)  # a frozen encoder: its features once, cached
        elif not self.features_cached and hasattr(dm, "serve_images"):
            dm.serve_images()  # another module's cached features: this one reads images
        if stage == "fit" and self._trainer is not None:
            for term in self.objectives:  # before any loader: Lightning makes the first one for its step count
                term.on_setup(self)
        self._plan_key = None  # the terms' schedules are set now: read them afresh

    def _check_max_clusters(self, dm: Any) -> None:
        """``max_clusters`` (``num_clusters="auto"``), or a cluster head's ``num_clusters``, must not
        exceed the training images: checked at setup, not after the warm-up."""
        dataset = getattr(dm, "train_eval_dataset", None)
        n = len(dataset) if dataset is not None else None
        k = getattr(self.cluster_head, "num_clusters", None)
        if n is not None and isinstance(k, int) and k > n:
            raise ValueError(f"num_clusters={k} is more than the {n} training images (a cluster needs one image "
                             f"at least); use num_clusters <= {n}")
        if n is not None and self.hparams.num_clusters == "auto" and self.hparams.max_clusters > n:
            raise ValueError(f"max_clusters={self.hparams.max_clusters} is above the number of training images "
                             f"({n}); use max_clusters <= {n}")

    def _request_views(self, dm: Any) -> None:
        """Ask the datamodule for the extra views the terms need (``require_views``), or check
        its ``clean_view`` flag when it has only that."""
        if hasattr(dm, "require_views"):
            dm.require_views(self.extra_views)
        elif "clean" in self.extra_views and getattr(dm, "hparams", {}).get("clean_view") is False:
            users = [type(t).__name__ for t in self.objectives if "clean" in t.needs().views]
            raise ValueError(f"{', '.join(users)} need(s) the un-augmented view: set clean_view=True in the datamodule")

    def on_fit_start(self) -> None:
        hp, trainer = self.hparams, self.trainer
        self.check_cached_weights()
        for term in self.objectives:  # after a restore of weights and buffers
            term.on_fit_start(self)
        self._plan_key = None
        if hp.num_clusters == "auto" and trainer.world_size > 1:
            raise ValueError(f"num_clusters='auto' runs on one process (the estimated head joins the optimizer "
                             f"mid-run), not {trainer.world_size}: estimate K on one device, then pass "
                             f"num_clusters=<K> to the multi-process run")
        if self.cluster_head is None and hp.num_clusters != "auto":
            return
        max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
        if trainer.fast_dev_run:
            return  # one batch to check the wiring: the warm-up is not at stake
        if max_epochs not in (None, -1) and hp.warmup_epochs >= max_epochs:
            raise ValueError(
                f"warmup_epochs={hp.warmup_epochs} leaves no epoch for the clustering terms with "
                f"trainer.max_epochs={max_epochs}: use warmup_epochs < max_epochs"
            )
        batches = trainer.num_training_batches
        if max_steps not in (None, -1) and math.isfinite(batches) and batches > 0:
            steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
            if hp.warmup_epochs * steps_per_epoch >= max_steps:
                raise ValueError(
                    f"trainer.max_steps={max_steps} ends inside the warm-up (warmup_epochs={hp.warmup_epochs} x "
                    f"{steps_per_epoch} steps per epoch): use more steps or fewer warm-up epochs"
                )

    def on_train_start(self) -> None:
        trainer = self.trainer
        total = float(trainer.estimated_stepping_batches)
        batches, max_epochs = trainer.num_training_batches, trainer.max_epochs
        if math.isfinite(batches) and batches > 0:  # optimizer steps per epoch, whatever bounds the run
            per_epoch = float(math.ceil(batches / trainer.accumulate_grad_batches))
        else:
            per_epoch = total / max_epochs if max_epochs not in (None, -1) and math.isfinite(total) else 0.0
        self._total_steps = total
        self._clustering_start_step = int(round(self.hparams.warmup_epochs * per_epoch))

    # ------------------------------------------------------------------ training

    def forward(self, x: Tensor) -> Tensor:
        """Backbone features ``h`` (the embeddings used for k-means and kNN evaluation); a
        frozen encoder's cached feature rows ``(B, F)`` pass through."""
        if self.passes_features(x):
            return x
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x).flatten(1)

    @property
    def clustering_active(self) -> bool:
        """Whether the clustering terms are on: past the warm-up with a ready head."""
        head = self.cluster_head
        return head is not None and head.ready and self.current_epoch >= self.hparams.warmup_epochs

    def clustering_progress(self) -> float:
        """Fraction of the clustering phase done (optimizer steps), in ``[0, 1]``."""
        start, total = self._clustering_start_step, self._total_steps
        if not self.clustering_active or not math.isfinite(total) or total <= start:
            return 0.0
        return min(1.0, max(0.0, (self.global_step - start) / (total - start)))

    def _named_views(self, views: Any) -> tuple[list[str], list[Tensor]]:
        """``(names, tensors)`` of a batch's views: a dict keeps its keys; a list is ``[a, b]``
        plus the first of the extra views the terms need, in the order clean, neighbor, strong."""
        if isinstance(views, Mapping):
            if not {"a", "b"} <= set(views):
                raise ValueError(f"a training batch's views need the keys 'a' and 'b', got {list(views)}")
            names = ["a", "b"] + [k for k in views if k not in ("a", "b")]
            return names, [views[k] for k in names]
        views = list(views)
        # a list serves the extra views in this order, those switched on so far (a clean view
        # nobody asked for is computed, unused)
        order = self.extra_views or ["clean"]
        if 2 <= len(views) <= 2 + len(order):
            return ["a", "b"] + order[: len(views) - 2], views
        raise ValueError(f"a training batch needs 2 to {2 + len(order)} views (a, b, {', '.join(order)}), "
                         f"got {len(views)}")

    def _step_plan(self, clustering: bool) -> tuple[list[tuple[Objective, Needs]], frozenset[str]]:
        """The terms of this phase with their :class:`Needs`, and the views some term reads
        (:meth:`Objective.reads`, ``"a"`` always): read from the terms once per (epoch, phase),
        and afresh after ``setup`` and at fit start (where the terms set their schedules)."""
        key = (self.current_epoch, clustering)
        if self._plan_key != key:
            running = []
            for term in self.objectives:
                needs = term.needs()
                if needs.runs_in(clustering):
                    running.append((term, needs))
            read = {"a"}.union(*(term.reads(key[0], clustering) for term in self.objectives))
            self._plan, self._plan_key = (running, frozenset(read)), key
        return self._plan

    def shared_step(self, views: Any, index: Tensor | None = None) -> StepOutputs:
        """One backbone forward for the views some term reads in this epoch and phase (others
        in the batch are left out: SCAN's stages read neither view ``b`` nor all the extra
        views), then the projector and the cluster head; the projections and head outputs
        gathered across processes in one collective."""
        names, views = self._named_views(views)
        read = self._step_plan(self.clustering_active)[1]
        if not read.issuperset(names):
            names, views = map(list, zip(*[(m, v) for m, v in zip(names, views, strict=True) if m in read],
                                         strict=True))
        n, pair = views[0].shape[0], names[:2] == ["a", "b"]
        h = self(torch.cat(views))  # (V*B, F)
        z = self.projector(h[: 2 * n if pair else n])  # (2B or B, projection_dim)
        parts = [z[:n], z[n:]] if pair else [z]
        if self.clustering_active:
            logits = self.cluster_head(h.detach() if self.hparams.detach_cluster_input else h)  # (V*B, K)
            parts += list(logits.float().split(n))
        if self.hparams.gather_distributed and world_size() > 1:
            widths = [p.shape[1] for p in parts]
            dtype = torch.promote_types(z.dtype, torch.float32)  # the projections' (z_a, z_b: one tensor)
            parts = list(gather_with_grad(torch.cat([p.to(dtype) for p in parts], dim=1)).split(widths, dim=1))
        h_clean = h[names.index("clean") * n:][:n] if "clean" in names else None
        out = StepOutputs(z_a=parts[0], z_b=parts[1] if pair else None, h_a=h[:n], h_b=h[n: 2 * n] if pair else None,
                          h_clean=h_clean, cluster_prior=self.cluster_prior if self.cluster_head is not None else None,
                          progress=self.clustering_progress(), index=index, epoch=self.current_epoch,
                          views=tuple(names))
        for name, logit in zip(names, parts[2 if pair else 1:], strict=False):
            out.logits[name] = logit
            out.q[name] = torch.softmax(logit, dim=1)
        return out

    def loss_terms(self, step: StepOutputs) -> dict[str, tuple[float, Tensor]]:
        """Every active term as ``name -> (weight, value)``; extend in a subclass."""
        terms = {}
        with tensor_value_checks(False):  # the module builds tau+ and the prior in range
            for term, needs in self._step_plan(step.clustering)[0]:  # the terms of this phase
                if not term.active(step):
                    continue
                missing = [v for v in needs.views if v not in step.views]
                if missing:
                    raise ValueError(f"{type(term).__name__} needs the view(s) {missing}, which this batch lacks "
                                     f"(it has {list(step.views)}): the datamodule must serve them "
                                     "(LongTailDataModule does when the module asks at setup)")
                terms[term.name] = (float(term.weight), term(step))
        return terms

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        views = batch[0]
        index = batch[2] if len(batch) > 2 else None
        step = self.shared_step(views, index)
        terms = self.loss_terms(step)
        loss = sum(weight * value for weight, value in terms.values())
        if not terms:  # no term runs on this step (a gap in a schedule): a zero that keeps every parameter
            loss = 0.0 * sum(p.sum() for p in self.parameters() if p.requires_grad)
        if self.cluster_head is not None and not step.clustering:
            # The head is idle in the warm-up: a zero term keeps it in the graph for DDP.
            loss = loss + 0.0 * sum(p.sum() for p in self.cluster_head.parameters())
        # so are the parameters of a term that did not run (a term's own head, MiniClusterSelfLabel's)
        self._idle_term_params = [p for t in self.objectives if t.name not in terms for p in t.parameters()
                                  if p.requires_grad]
        if self._idle_term_params and terms:
            loss = loss + 0.0 * sum(p.sum() for p in self._idle_term_params)
        if batch_idx == 0 or self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            where = f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
            check_finite(loss, terms, where)
        if step.clustering:
            pair = [step.q[v] for v in ("a", "b") if v in step.q]  # b where a term reads it
            self._update_cluster_prior(torch.cat(pair).detach(), gathered=self._gathers())
        batch_size = len(step.z_a)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        if batch_idx == 0 or (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            # step values reach the logger only every log_every_n_steps: logging them on the other
            # steps cost a third of an epoch on cached features (Lightning walks and copies each)
            extra = {k: v for term in self.objectives for k, v in term.logs().items()}
            self.log_dict(step_metrics(terms, extra, step.cluster_prior), batch_size=batch_size)
        return loss

    def _gathers(self) -> bool:
        return bool(self.hparams.gather_distributed) and world_size() > 1

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # The idle head's zero gradient only kept DDP happy: drop it, or weight decay erases the head.
        if self.cluster_head is not None and not self.clustering_active:
            for p in self.cluster_head.parameters():
                p.grad = None
        for p in getattr(self, "_idle_term_params", ()):  # an idle term's zero gradient: no decay, no step
            p.grad = None

    def on_train_epoch_start(self) -> None:
        if self.hparams.num_clusters == "auto" and self.current_epoch >= self.hparams.warmup_epochs:
            self.build_estimated_head()
        head = self.cluster_head
        if head is not None and not head.ready and self.current_epoch >= self.hparams.warmup_epochs:
            self.init_centroids()
        for term in self.objectives:
            term.on_train_epoch_start(self)

    def on_train_epoch_end(self) -> None:
        for term in self.objectives:
            term.on_train_epoch_end(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # terms edited after construction are saved with their current settings
        hparams = checkpoint.setdefault("hyper_parameters", {})
        hparams.update(objectives=[t.config() for t in self.objectives], term_settings=None)
        if isinstance(getattr(self, "k_choice", None), dict):  # num_clusters="auto": the scores per K
            checkpoint["k_choice"] = self.k_choice

    # ------------------------------------------------------------------ evaluation

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
            out["cluster_probs"] = torch.softmax(self.cluster_head(h).float(), dim=1)
        return out

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = self.parameters()
        if self._head_param_group:  # an estimated head (num_clusters="auto") is the optimizer's second group
            head = {id(p) for p in self.cluster_head.parameters()}
            params = [p for p in self.parameters() if id(p) not in head]
        built = build_optimizer(
            params, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum, hp.lr_warmup_epochs,
            hp.cosine, self.trainer.estimated_stepping_batches, self.trainer.max_epochs,
        )
        if self._head_param_group:
            optimizer = built["optimizer"] if isinstance(built, dict) else built
            scheduler = built["lr_scheduler"]["scheduler"] if isinstance(built, dict) else None
            settings = {k: v for k, v in optimizer.param_groups[0].items() if k not in ("params",)}
            optimizer.add_param_group({**settings, "params": list(self.cluster_head.parameters())})
            if scheduler is not None:
                scheduler.base_lrs.append(scheduler.base_lrs[0])
                scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
        return built

    def export_backbone(self, path: str) -> None:
        """Save the backbone's plain ``state_dict`` (loadable without this package).

        A :class:`~dcl_cluster.nn.ResNet` is saved as torchvision's ResNet with
        ``fc = nn.Identity()`` (and, with the CIFAR stem, a 3x3 ``conv1`` and no max-pool).
        """
        backbone = self.backbone.net if isinstance(self.backbone, ResNet) else self.backbone
        state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
        torch.save(state, path)
