"""Weighted kNN accuracy and representation diagnostics for any LightningModule.

The standard monitor of self-supervised training: a bank of train-set embeddings
(deterministic transforms) votes for the class of each validation embedding. Also logs
uniformity and RankMe of the validation embeddings, which flag collapse early.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from dcl_cluster.callbacks.collect import (
    EmbeddingCollector,
    gather_rows,
    module_embeddings,
    split_batch,
)
from dcl_cluster.metrics import knn_predict, rankme, uniformity


class KNNEvaluator(EmbeddingCollector):
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
        super().__init__(every_n_epochs, prefix=prefix)
        self.k = k
        self.temperature = temperature
        self.train_dataloader = train_dataloader
        self.diagnostics_samples = diagnostics_samples
        self.last_metrics: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix, k=self.k)

    def collect_batch(self, pl_module: LightningModule, batch: Any, outputs: Any):
        """``pl_module(x)``, whatever ``validation_step`` returns: comparable to the bank."""
        x, y = split_batch(batch)
        emb = module_embeddings(pl_module, x)
        return emb, None, torch.as_tensor(y).reshape(-1).to(emb.device)

    def on_collected(self, trainer: Trainer, pl_module: LightningModule,
                     data: dict[str, torch.Tensor | None], prefix: str) -> None:
        """Embed the bank (every rank), score on rank 0, log the same numbers everywhere."""
        bank = self._bank(trainer, pl_module)
        self.last_metrics = self.log_from_rank_zero(
            trainer, pl_module, lambda: self.evaluate(data["embeddings"], data["labels"], bank))

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
