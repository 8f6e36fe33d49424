"""Weighted kNN accuracy and representation diagnostics for any LightningModule.

The standard monitor of self-supervised training: a bank of train-set embeddings
(deterministic transforms) votes for the class of each validation embedding. Also logs
uniformity and RankMe of the validation embeddings, which flag collapse early.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from dcl_cluster.callbacks.collect import (
    EmbeddingBuffer,
    evaluation_due,
    gather_rows,
    module_embeddings,
    split_batch,
)
from dcl_cluster.metrics import knn_predict, rankme, uniformity


class KNNEvaluator(Callback):
    """Log ``val/knn_acc``, ``val/uniformity`` and ``val/rankme`` every ``every_n_epochs``.

    Implements the weighted kNN classifier of Wu et al. (CVPR 2018; ``k=200``,
    ``exp(sim / t)`` votes, see :func:`~dcl_cluster.metrics.knn_predict`), uniformity
    of Wang & Isola (ICML 2020) and RankMe of Garrido et al. (ICML 2023).

    Embeddings are ``pl_module(x)`` for both the bank and the validation queries, so
    the two are comparable whatever ``validation_step`` returns. The bank comes from
    ``trainer.datamodule.train_eval_dataloader()`` (a public method yielding
    ``(x, y, ...)`` batches over the train set with deterministic transforms) when the
    datamodule has one, else from ``train_dataloader`` given here; without either,
    only the diagnostics are logged. Under DDP each rank embeds every
    ``world_size``-th bank batch and the banks and queries are gathered; rank 0's
    scores are broadcast so all ranks log the same values. Only the first validation
    dataloader is used.

    Args:
        k: Neighbours.
        temperature: Vote temperature ``t``.
        every_n_epochs: Evaluate on epochs ``n - 1, 2n - 1, ...`` of a fit (always
            under ``trainer.validate()``).
        train_dataloader: Bank loader when the datamodule has no
            ``train_eval_dataloader()``.
        prefix: Prefix of the logged keys.
        diagnostics_samples: Rows used for uniformity and RankMe (the first ones).

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[KNNEvaluator(k=20)])  # doctest: +SKIP
    """

    def __init__(
        self,
        k: int = 200,
        temperature: float = 0.5,
        every_n_epochs: int = 1,
        train_dataloader: Any = None,
        prefix: str = "val/",
        diagnostics_samples: int = 5000,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = every_n_epochs
        self.train_dataloader = train_dataloader
        self.prefix = prefix
        self.diagnostics_samples = diagnostics_samples
        self.buffer = EmbeddingBuffer()
        self.last_metrics: dict[str, float] = {}
        self._active = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix, k=self.k)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = evaluation_due(trainer, self.every_n_epochs)
        self.buffer.reset()

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if not self._active or dataloader_idx != 0:
            return
        x, y = split_batch(batch)
        emb = module_embeddings(pl_module, x)
        self.buffer.add(trainer, emb, None, torch.as_tensor(y).reshape(-1).to(emb.device))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active:
            return
        self._active = False
        data = self.buffer.gather(trainer, pl_module.device)
        self.buffer.reset()
        if data["labels"].numel() == 0:
            return
        bank = self._bank(trainer, pl_module)
        metrics = None
        if trainer.is_global_zero:
            metrics = self.evaluate(data["embeddings"], data["labels"], bank)
        if trainer.world_size > 1:
            metrics = trainer.strategy.broadcast(metrics, src=0)
        for key, value in metrics.items():
            pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=False)
        self.last_metrics = metrics

    def evaluate(self, emb: torch.Tensor, labels: torch.Tensor,
                 bank: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, float]:
        """kNN accuracy (when a bank is given), uniformity and RankMe, keys prefixed."""
        out = {}
        if bank is not None:
            bank_emb, bank_labels = bank
            num_classes = int(max(bank_labels.max(), labels.max())) + 1
            preds = knn_predict(emb, bank_emb, bank_labels, num_classes, self.k,
                                self.temperature)
            out[f"{self.prefix}knn_acc"] = float((preds == labels.to(preds.device)).float()
                                                 .mean())
        sample = emb[: self.diagnostics_samples]
        if sample.shape[0] >= 2:
            out[f"{self.prefix}uniformity"] = float(uniformity(sample))
        out[f"{self.prefix}rankme"] = float(rankme(sample))
        return out

    def _bank(self, trainer: Trainer, pl_module: LightningModule):
        """Train-set embeddings and labels from every rank, or None without a loader."""
        datamodule = getattr(trainer, "datamodule", None)
        make_loader = getattr(datamodule, "train_eval_dataloader", None)
        loader = make_loader() if callable(make_loader) else self.train_dataloader
        if loader is None:
            return None
        rank, world = trainer.global_rank, max(trainer.world_size, 1)
        embs, labels = [], []
        for i, batch in enumerate(loader):
            if i % world != rank:
                continue
            x, y = split_batch(trainer.strategy.batch_to_device(batch))
            embs.append(module_embeddings(pl_module, x).float())
            labels.append(torch.as_tensor(y).reshape(-1).long().to(pl_module.device))
        emb = torch.cat(embs) if embs else torch.zeros(0, 0, device=pl_module.device)
        lab = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long,
                                                           device=pl_module.device)
        return gather_rows(trainer, emb), gather_rows(trainer, lab)
