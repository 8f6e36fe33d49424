"""SCAN's two clustering stages as terms (METHOD.md 2.6): neighbour consistency over mined
nearest neighbours, then confident self-labelling on a strong view; over
:func:`~dcl_cluster.losses.scan_loss` and :func:`~dcl_cluster.losses.confident_self_label_loss`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from dcl_cluster.losses.scan import confident_self_label_loss, scan_loss
from dcl_cluster.objectives.base import Needs, Objective
from dcl_cluster.objectives.step import StepOutputs

__all__ = ["SCANConsistency", "ConfidentSelfLabel", "nearest_neighbors", "clustering_epoch"]

PRIORS = ("uniform", "cluster_prior")


@torch.no_grad()
def nearest_neighbors(features: Tensor, k: int, chunk_size: int = 4096) -> Tensor:
    """Indices ``(N, k)`` of each row's ``k`` nearest other rows by cosine similarity.

    Examples:
        >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> nearest_neighbors(x, 1).flatten().tolist()
        [1, 0, 3, 2]
    """
    n = features.shape[0]
    if not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"num_neighbors must be an integer in [1, {n - 1}] (the training images minus one), "
                         f"got {k!r}")
    f = F.normalize(features.float(), dim=1)
    out = []
    for start in range(0, n, chunk_size):
        sim = f[start: start + chunk_size] @ f.t()  # (chunk, N)
        rows = torch.arange(start, min(start + chunk_size, n), device=f.device)
        sim[rows - start, rows] = -math.inf  # not its own neighbour
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def clustering_epoch(module: nn.Module, share: float) -> int:
    """The first epoch whose start lies at or past ``share`` of the clustering phase.

    Raises:
        ValueError: a run without ``trainer.max_epochs``: the schedule is in epochs.
    """
    warmup, max_epochs = module.hparams.warmup_epochs, module.trainer.max_epochs
    if max_epochs in (None, -1):
        raise ValueError("SCAN's stages are scheduled as shares of the clustering epochs: set trainer.max_epochs")
    return warmup + math.ceil(share * max(0, max_epochs - warmup) - 1e-9)


class SCANConsistency(Objective):
    """SCAN's neighbour consistency (Van Gansbeke et al., ECCV 2020; METHOD.md 2.6): an image
    and a random one of its ``num_neighbors`` nearest neighbours (cosine similarity of the
    un-augmented training images' backbone features) should fall in the same cluster, minus
    ``entropy_weight`` times the entropy of the mean assignment; with ``prior="cluster_prior"``
    that entropy becomes ``KL(mean assignment || pi)`` toward the running cluster-size
    estimate (the long-tail form).

    Neighbours are mined at the start of the clustering phase and every ``mine_every`` epochs
    (0: once), identically on every process (rank 0's table is broadcast), kept in a buffer
    (so a resumed run draws the same neighbours) and handed to the datamodule
    (``set_neighbors``), which serves each image with an augmented neighbour as the
    ``"neighbor"`` view. The anchor is the first augmented view.

    Args:
        weight: Weight in the sum.
        entropy_weight: ``w_ent >= 0`` (5 in SCAN's CIFAR configs).
        prior: ``"uniform"`` (SCAN's entropy) or ``"cluster_prior"`` (KL to the estimated prior).
        num_neighbors: ``k`` nearest neighbours per image (20 in SCAN).
        mine_every: Re-mine every this many epochs of the clustering phase; 0 mines once.
        stop: Stop at this share of the clustering phase (``(0, 1]``; SCAN's self-labelling
            stage then trains alone).

    Examples:
        >>> from dcl_cluster.objectives import StepOutputs
        >>> la, ln = torch.randn(8, 3), torch.randn(8, 3)
        >>> step = StepOutputs(torch.randn(8, 4), torch.randn(8, 4), logits={"a": la, "neighbor": ln})
        >>> bool(torch.isfinite(SCANConsistency()(step)))
        True
    """

    name = "scan"

    def __init__(self, weight: float = 1.0, entropy_weight: float = 5.0, prior: str = "uniform",
                 num_neighbors: int = 20, mine_every: int = 0, stop: float = 1.0) -> None:
        super().__init__(weight)
        self.entropy_weight = entropy_weight
        self.prior = prior
        self.num_neighbors = num_neighbors
        self.mine_every = mine_every
        self.stop = stop
        self.register_buffer("neighbors", torch.empty(0, 0, dtype=torch.long))
        self.register_buffer("mined_epoch", torch.tensor(-1))
        self._stop_epoch = 1 << 62  # set at fit start from the schedule

    def check(self) -> None:
        super().check()
        if isinstance(self.entropy_weight, bool) or not isinstance(self.entropy_weight, (int, float)) \
                or not math.isfinite(self.entropy_weight) or self.entropy_weight < 0:
            raise ValueError(f"entropy_weight must be a finite number >= 0, got {self.entropy_weight!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if isinstance(self.num_neighbors, bool) or not isinstance(self.num_neighbors, int) or self.num_neighbors < 1:
            raise ValueError(f"num_neighbors must be an integer >= 1, got {self.num_neighbors!r}")
        if isinstance(self.mine_every, bool) or not isinstance(self.mine_every, int) or self.mine_every < 0:
            raise ValueError(f"mine_every must be an integer >= 0, got {self.mine_every!r}")
        if not isinstance(self.stop, (int, float)) or not 0 < self.stop <= 1:
            raise ValueError(f"stop must be in (0, 1], got {self.stop!r}")

    def needs(self) -> Needs:
        return Needs(views=("neighbor",), head=("cosine", "softmax"), prior=self.prior == "cluster_prior",
                     clustering=True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # the table's size comes with it
        saved = state_dict.get(prefix + "neighbors")
        if saved is not None:
            self.neighbors = torch.empty_like(saved, device=self.neighbors.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def on_setup(self, module: nn.Module) -> None:
        # Lightning makes the first loader (and its workers) before any hook after setup: give the
        # datamodule a table of -1 rows in shared memory now; mining (or a restore) fills it in place
        if module.hparams.warmup_epochs < 1:
            raise ValueError("SCANConsistency mines neighbours on the features at the end of the warm-up: "
                             f"set warmup_epochs >= 1, got {module.hparams.warmup_epochs}")
        self._stop_epoch = clustering_epoch(module, self.stop)
        dm = getattr(module.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "set_neighbors"):
            return
        images = len(getattr(dm, "train_eval_dataset", None) or ())
        if self.num_neighbors >= images > 0:  # said at the start, not after the warm-up
            raise ValueError(f"num_neighbors={self.num_neighbors} needs more training images than the "
                             f"{images} there are: use num_neighbors <= {images - 1}")
        dm.set_neighbors(torch.full((images, self.num_neighbors), -1, dtype=torch.long))

    def on_fit_start(self, module: nn.Module) -> None:
        dm = getattr(module.trainer, "datamodule", None)
        if self.neighbors.numel() and dm is not None and hasattr(dm, "set_neighbors"):
            dm.set_neighbors(self.neighbors.cpu())  # a restored table, into the shared one

    def on_train_epoch_start(self, module: nn.Module) -> None:
        dm = getattr(module.trainer, "datamodule", None)
        head = module.cluster_head
        epoch = module.current_epoch
        if epoch < module.hparams.warmup_epochs or head is None or not head.ready or epoch >= self._stop_epoch:
            return
        mined = int(self.mined_epoch)
        if mined >= 0 and not (self.mine_every > 0 and epoch - mined >= self.mine_every):
            return
        loader = module.training_images_loader("SCAN mines neighbours")
        table = nearest_neighbors(module.embed_loader(loader), self.num_neighbors)
        table = table.to(module.device)
        if module.trainer.world_size > 1:  # rank 0's table everywhere
            table = module.trainer.strategy.broadcast(table, src=0)
        self.neighbors = table.to(self.neighbors.device)
        self.mined_epoch.fill_(epoch)
        if hasattr(dm, "set_neighbors"):
            dm.set_neighbors(self.neighbors)

    def active(self, step: StepOutputs) -> bool:
        return step.epoch < self._stop_epoch

    def reads(self, epoch: int, clustering: bool) -> tuple[str, ...]:
        return ("a", "neighbor") if clustering and epoch < self._stop_epoch else ()  # the anchor and its neighbour

    def forward(self, step: StepOutputs) -> Tensor:
        prior = None
        if self.prior == "cluster_prior":
            pi = step.cluster_prior.float().clamp_min(1e-6)
            prior = pi / pi.sum()
        return scan_loss(step.logits["a"], step.logits["neighbor"], self.entropy_weight, prior)


class ConfidentSelfLabel(Objective):
    """SCAN's self-labelling (METHOD.md 2.6, stage 3): where the un-augmented image's
    prediction is confident (``max_k P > threshold``), cross-entropy of the strong view's
    logits against that argmax, classes weighted by ``1 / share`` among the confident.

    The weak view is the clean (un-augmented) image: the weakest augmentation there is. It
    switches on at ``start``, a share of the clustering phase, and from that epoch on asks
    the datamodule for the strong view (``serve_strong_view``: RandAugment + cutout).

    It logs ``train/self_label_confident_share``, the share of the batch it sees above
    ``threshold`` (the global batch when the module gathers across processes, else rank 0's
    share of it decides), and warns once per fit when a whole epoch had no confident image:
    then the loss is 0 and the stage trains nothing (a head after a short SCAN stage is
    rarely 0.99 sure; a cosine head's logits are bounded by ``cosine_scale``, and 0.99 over
    10 clusters needs a cosine margin of about 0.68 over the other nine at the default scale of
    10 when they are equally close, at least 0.46 over the runner-up).

    Args:
        weight: Weight in the sum.
        threshold: Confidence in ``(0, 1)`` (0.99 in SCAN).
        class_balance: Weight classes by the inverse of their share among confident images.
        start: Share of the clustering phase at which it starts, in ``[0, 1)``.

    Examples:
        >>> from dcl_cluster.objectives import StepOutputs
        >>> weak, strong = 10 * torch.eye(4), torch.randn(4, 4)
        >>> step = StepOutputs(torch.randn(4, 2), torch.randn(4, 2), logits={"clean": weak, "strong": strong})
        >>> bool(ConfidentSelfLabel()(step) > 0)
        True
    """

    name = "self_label"

    def __init__(self, weight: float = 1.0, threshold: float = 0.99, class_balance: bool = True,
                 start: float = 0.5) -> None:
        super().__init__(weight)
        self.threshold = threshold
        self.class_balance = class_balance
        self.start = start
        self._start_epoch = 0  # set at fit start from the schedule
        self._reset()

    def _reset(self) -> None:
        """Forget the logged share, the epoch's counts and the warning (a new fit)."""
        self._last: dict[str, Tensor] = {}
        self._epoch_confident: Tensor | None = None  # summed on the device: no host sync per step
        self._epoch_rows = 0
        self._warned = False

    def check(self) -> None:
        super().check()
        if not isinstance(self.threshold, (int, float)) or not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if not isinstance(self.start, (int, float)) or not 0 <= self.start < 1:
            raise ValueError(f"start must be in [0, 1), got {self.start!r}")

    def needs(self) -> Needs:
        return Needs(views=("clean", "strong"), head=("cosine", "softmax"), clustering=True)

    def on_setup(self, module: nn.Module) -> None:
        # the strong view is switched on by epoch inside the dataset (the sampler's key carries the
        # epoch): set before any loader exists, it serves from the right epoch in every worker
        self._start_epoch = clustering_epoch(module, self.start)
        dm = getattr(module.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "serve_strong_view"):
            dm.serve_strong_view(True, from_epoch=self._start_epoch)

    def active(self, step: StepOutputs) -> bool:
        return step.epoch >= self._start_epoch

    def reads(self, epoch: int, clustering: bool) -> tuple[str, ...]:
        return ("clean", "strong") if clustering and epoch >= self._start_epoch else ()

    def forward(self, step: StepOutputs) -> Tensor:
        weak = step.logits["clean"]
        with torch.no_grad():
            confident = (weak.detach().float().softmax(dim=1).amax(dim=1) > self.threshold).sum()
            self._epoch_confident = confident if self._epoch_confident is None else self._epoch_confident + confident
            self._epoch_rows += len(weak)
            self._last = {"self_label_confident_share": confident.float() / max(len(weak), 1)}
        return confident_self_label_loss(weak, step.logits["strong"], self.threshold, self.class_balance)

    def logs(self) -> dict[str, Tensor | float]:
        return dict(self._last)

    @property
    def start_epoch(self) -> int:
        """The first epoch of self-labelling (set at ``setup`` from ``start`` and the schedule)."""
        return self._start_epoch

    def epoch_counts(self) -> tuple[int, int]:
        """``(confident, rows)`` the term has seen so far in the running epoch (one host sync)."""
        confident = 0 if self._epoch_confident is None else int(self._epoch_confident)
        return confident, self._epoch_rows

    def on_fit_start(self, module: nn.Module) -> None:
        self._reset()

    def on_train_epoch_end(self, module: nn.Module) -> None:
        confident, rows = self.epoch_counts()
        self._epoch_confident, self._epoch_rows = None, 0
        if rows == 0 or self._warned or confident > 0:  # rows == 0: the term did not run this epoch
            return
        self._warned = True
        rank_zero_warn(
            f"ConfidentSelfLabel: no un-augmented prediction was above threshold={self.threshold} in epoch "
            f"{module.current_epoch} ({rows} images): self-labelling trained nothing (its loss is 0). The head "
            "is not that confident yet: give the SCAN stage more epochs, lower `threshold`, or raise the "
            "cosine head's `cosine_scale` (its logits are bounded by it).")
