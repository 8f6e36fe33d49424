"""Add clustering scores and long-tail plots to an existing Lightning project: two callbacks.

``DigitClassifier`` below stands for your project: an ordinary supervised LightningModule
and ordinary DataLoaders, with nothing of dcl_cluster in them. The only lines that use
dcl_cluster are the two callbacks handed to the Trainer (marked ``# <- dcl_cluster``).
``ClusteringEvaluator`` clusters the validation embeddings with k-means each epoch and
logs ``val/nmi``, ``val/acc``, ``val/balanced_acc``, ``val/macro_f1``, ``val/ari``,
``val/ami`` and, given the training class counts, ``val/head_acc``, ``val/medium_acc``,
``val/tail_acc``;
``EmbeddingPlots`` saves three PNGs (t-SNE by class and by cluster, cluster sizes against
the training class sizes, the matched confusion matrix) and logs them to TensorBoard / W&B
loggers. Each callback works alone; together they do not share state.

The callbacks need one thing of your module: validation batches ``(x, y, ...)`` and
``module(x)`` returning a ``(B, d)`` tensor (here the logits), or a ``validation_step``
that returns ``{"embeddings": ..., "cluster_probs": ...}``.

    python examples/dropin_callbacks.py               # 20 epochs on long-tailed digits, CPU
    python examples/dropin_callbacks.py --smoke       # two epochs, PCA plots
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dcl_cluster.callbacks import ClusteringEvaluator, EmbeddingPlots


# ----------------------------------------------------------------- your existing project
class DigitClassifier(pl.LightningModule):
    """A small supervised MLP on 8x8 digits; ``forward`` returns the logits."""

    def __init__(self, hidden: int = 64, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/supervised_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def long_tailed_digits(imbalance_factor: float = 10.0, seed: int = 0):
    """Train/validation tensors of scikit-learn's digits; train long-tailed, validation balanced."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)  # (N, 8, 8)
    y = torch.tensor(digits.target)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    val, train = order[:500], order[500:]
    # class c keeps int(n_max * (1/IF) ** (c / 9)) images, n_max = the smallest class
    n_max = int(np.bincount(y[train].numpy()).min())
    keep = []
    for c in range(10):
        members = train[y[train].numpy() == c]
        keep.extend(members[: int(n_max * (1 / imbalance_factor) ** (c / 9))])
    keep = np.sort(np.asarray(keep))
    return (x[keep], y[keep]), (x[val], y[val])


# ----------------------------------------------------------------- what this example adds
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/dropin_callbacks"))
    parser.add_argument("--smoke", action="store_true", help="two epochs and fast PCA plots")
    args = parser.parse_args(argv)
    epochs = 2 if args.smoke else args.epochs

    pl.seed_everything(0)
    (x_train, y_train), (x_val, y_val) = long_tailed_digits()
    class_counts = torch.bincount(y_train, minlength=10).tolist()
    print(f"long-tailed train counts: {class_counts}")
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=250)

    evaluator = ClusteringEvaluator(num_clusters=10, class_counts=class_counts)  # <- dcl_cluster
    plots = EmbeddingPlots(every_n_epochs=epochs, method="pca" if args.smoke else "tsne",  # <- dcl_cluster
                           class_counts=class_counts)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=[evaluator, plots],
        logger=pl.loggers.CSVLogger(str(args.out), name="dropin"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=5,
    )
    trainer.fit(DigitClassifier(), train_loader, val_loader)

    metrics = evaluator.last_metrics
    print("clustering of the validation logits: " + ", ".join(
        f"{key.removeprefix('val/')} {value:.3f}" for key, value in sorted(metrics.items())))
    print("plots:", *plots.last_files, sep="\n  ")
    return {"metrics": metrics, "plots": plots.last_files}


if __name__ == "__main__":
    main()
