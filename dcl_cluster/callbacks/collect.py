"""How the callbacks read embeddings from any LightningModule and gather them across ranks.

The protocol (DESIGN.md): validation batches are ``(x, y, ...)``; a ``validation_step``
that returns ``{"embeddings": ..., "cluster_probs": ...}`` is used as is, otherwise
``pl_module(x)`` under ``torch.no_grad()`` gives the embeddings. Only public Trainer API
is used (``trainer.strategy``, ``trainer.world_size``, ``trainer.state``).
:class:`EmbeddingCollector` holds the hooks every evaluation callback shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from dcl_cluster import distributed


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a ``(x, y, ...)`` batch (a dict with ``"x"``/``"y"`` also works)."""
    if isinstance(batch, Mapping) and "x" in batch and "y" in batch:
        return batch["x"], batch["y"]
    if isinstance(batch, Sequence) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError("validation batches must be (x, y, ...) tuples for the clustering "
                     f"callbacks, got {type(batch).__name__}")


def module_embeddings(pl_module: LightningModule, x) -> torch.Tensor:
    """``pl_module(x)`` without gradients, as ``(B, d)`` embeddings."""
    with torch.no_grad():
        out = pl_module(x)
    if isinstance(out, Mapping) and "embeddings" in out:
        out = out["embeddings"]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"pl_module(x) must return a Tensor of embeddings, got "
                        f"{type(out).__name__}; or return {{'embeddings': ...}} from "
                        "validation_step")
    return out.detach().flatten(1)


def batch_embeddings(pl_module: LightningModule, batch, outputs):
    """Embeddings ``(B, d)``, cluster probabilities ``(B, K)`` or None, labels ``(B,)``."""
    x, y = split_batch(batch)
    probs = None
    if isinstance(outputs, Mapping) and "embeddings" in outputs:
        emb = outputs["embeddings"].detach().flatten(1)
        if outputs.get("cluster_probs") is not None:
            probs = outputs["cluster_probs"].detach().flatten(1)
    else:
        emb = module_embeddings(pl_module, x)
    return emb, probs, torch.as_tensor(y).detach().reshape(-1).to(emb.device)


def evaluation_due(trainer: Trainer, every_n_epochs: int) -> bool:
    """Whether this validation run is one to evaluate on.

    Always under ``trainer.validate()``; during ``fit`` every ``every_n_epochs``-th epoch
    (counting from 1), never during the sanity check.
    """
    if trainer.sanity_checking:
        return False
    if trainer.state.fn == "validate":
        return True
    return (trainer.current_epoch + 1) % every_n_epochs == 0


def gather_rows(trainer: Trainer, t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (rows may differ in number) from all ranks, in rank order.

    :func:`dcl_cluster.distributed.gather_rows` over the Trainer's strategy, so it works
    with whatever process group the strategy uses.
    """
    if trainer.world_size <= 1:
        return t
    return distributed.gather_rows(t, all_gather=trainer.strategy.all_gather)


class EmbeddingBuffer:
    """The embeddings, cluster probabilities and labels of one validation run.

    Args:
        max_samples: Keep at most this many rows in all (each of ``world_size``
            processes keeps its first ``ceil(max_samples / world_size)``); None keeps all.
    """

    def __init__(self, max_samples: int | None = None) -> None:
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be None or >= 1, got {max_samples}")
        self.max_samples = max_samples
        self.reset()

    def reset(self) -> None:
        self.embeddings: list[torch.Tensor] = []
        self.probs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.count = 0

    def add(self, trainer: Trainer, emb: torch.Tensor, probs: torch.Tensor | None,
            labels: torch.Tensor) -> None:
        """Keep a batch (truncated to this process's share of ``max_samples``)."""
        if self.max_samples is not None:
            share = -(-self.max_samples // max(trainer.world_size, 1))
            room = share - self.count
            if room <= 0:
                return
            emb, labels = emb[:room], labels[:room]
            probs = None if probs is None else probs[:room]
        self.embeddings.append(emb)
        self.labels.append(labels.long())
        if probs is not None:
            self.probs.append(probs)
        self.count += emb.shape[0]

    def gather(self, trainer: Trainer, device: torch.device) -> dict[str, torch.Tensor | None]:
        """Everything kept on every rank, concatenated in rank order (call on all ranks)."""
        def cat(parts, dtype):
            return torch.cat(parts).to(device, dtype) if parts else torch.zeros(
                0, 0, device=device, dtype=dtype)

        emb = gather_rows(trainer, cat(self.embeddings, torch.float32))
        labels = gather_rows(trainer, cat(self.labels, torch.long).reshape(-1))
        has_probs = torch.tensor(float(bool(self.probs)), device=device)
        if trainer.world_size > 1:
            has_probs = trainer.strategy.all_gather(has_probs).min()
        probs = gather_rows(trainer, cat(self.probs, torch.float32)) if has_probs else None
        return {"embeddings": emb, "cluster_probs": probs, "labels": labels}


class EmbeddingCollector(Callback):
    """Base of the callbacks that evaluate the embeddings of one validation (or test) run.

    It owns the hooks they share: on the validation epochs that are due (see
    :func:`evaluation_due`) it keeps :meth:`collect_batch` of every batch of the first
    dataloader (each process its own, up to its share of ``max_samples``); at the end of
    the epoch it gathers every process's rows in rank order and calls
    :meth:`on_collected` on every process with them. With a ``test_prefix``,
    ``trainer.test()`` runs are collected too (always), under that prefix. A subclass
    implements :meth:`on_collected` and may override :meth:`collect_batch`; it needs
    nothing of the module beyond the protocol of this module's docstring.

    Args:
        every_n_epochs: Collect on epochs ``n - 1, 2n - 1, ...`` (0-based) of a fit;
            always under ``trainer.validate()``.
        max_samples: Keep at most this many rows in all; None keeps every row.
        prefix: Prefix of what is logged for a validation run.
        test_prefix: Prefix for a ``trainer.test()`` run; None: test runs are ignored.
    """

    def __init__(self, every_n_epochs: int = 1, max_samples: int | None = None,
                 prefix: str = "val/", test_prefix: str | None = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self.test_prefix = test_prefix
        self.buffer = EmbeddingBuffer(max_samples)
        self._active = False

    # ----------------------------------------------------------------- to override
    def collect_batch(self, pl_module: LightningModule, batch: Any, outputs: Any
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(embeddings (B, d), cluster_probs (B, K) or None, labels (B,))`` of a batch."""
        return batch_embeddings(pl_module, batch, outputs)

    def on_collected(self, trainer: Trainer, pl_module: LightningModule,
                     data: dict[str, torch.Tensor | None], prefix: str) -> None:
        """Use the gathered ``{"embeddings", "cluster_probs", "labels"}`` (every process)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- shared hooks
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = evaluation_due(trainer, self.every_n_epochs)
        self.buffer.reset()

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._active and dataloader_idx == 0:
            self.buffer.add(trainer, *self.collect_batch(pl_module, batch, outputs))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, self.prefix)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = self.test_prefix is not None
        self.buffer.reset()

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx,
                                     dataloader_idx)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.test_prefix is not None:
            self._finish(trainer, pl_module, self.test_prefix)

    def _finish(self, trainer: Trainer, pl_module: LightningModule, prefix: str) -> None:
        if not self._active:
            return
        self._active = False
        data = self.buffer.gather(trainer, pl_module.device)  # a collective: every rank
        self.buffer.reset()
        if data["labels"].numel() == 0:
            return
        self.on_collected(trainer, pl_module, data, prefix)

    @staticmethod
    def log_from_rank_zero(trainer: Trainer, pl_module: LightningModule,
                           compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        """``compute()`` on rank 0, broadcast, logged by every rank (the same numbers)."""
        metrics = compute() if trainer.is_global_zero else None
        if trainer.world_size > 1:
            metrics = trainer.strategy.broadcast(metrics, src=0)
        for key, value in metrics.items():
            pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=False)
        return metrics
