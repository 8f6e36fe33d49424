"""The callbacks on a plain classifier LightningModule that knows nothing of dcl_cluster."""

import os

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dcl_cluster.callbacks import (
    ClusteringEvaluator,
    EmbeddingPlots,
    KNNEvaluator,
    plot_cluster_sizes,
)

CENTRES = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)) * 6
TRAIN_COUNTS = [240, 120, 60, 30]


def separable(counts, seed):
    """Four well separated Gaussian classes with ``counts`` points each."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = CENTRES[y] + torch.randn(len(y), 8, generator=g)
    return TensorDataset(x, y)


class Classifier(LightningModule):
    """A plain supervised classifier; ``forward`` returns the hidden embedding."""

    def __init__(self, return_probs: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 4)
        self.return_probs = return_probs

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self(x)), y)

    def validation_step(self, batch, batch_idx):
        if self.return_probs:
            emb = self(batch[0])
            return {"embeddings": emb, "cluster_probs": self.head(emb).softmax(1)}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class Data(LightningDataModule):
    """Exposes the public attributes and method the callbacks look for."""

    num_classes = 4
    train_class_counts = TRAIN_COUNTS

    def train_dataloader(self):
        return DataLoader(separable(TRAIN_COUNTS, 0), batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(separable([50] * 4, 1), batch_size=64)

    def train_eval_dataloader(self):
        return DataLoader(separable(TRAIN_COUNTS, 0), batch_size=128)


def make_trainer(callbacks, max_epochs=2, **kwargs):
    kwargs.setdefault("logger", False)
    return Trainer(accelerator="cpu", max_epochs=max_epochs, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   callbacks=callbacks, **kwargs)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One fit with every callback: evaluator (defaults from the datamodule), kNN, plots."""
    torch.manual_seed(0)
    evaluator = ClusteringEvaluator(num_clusters=4)
    knn = KNNEvaluator(k=20)
    plots = EmbeddingPlots(max_points=150, method="tsne",
                           save_dir=str(tmp_path_factory.mktemp("plots")))
    trainer = make_trainer([evaluator, knn, plots])
    model = Classifier()
    trainer.fit(model, datamodule=Data())
    return trainer, model, evaluator, plots


def test_evaluator_reports_sensible_scores_on_a_plain_classifier(fitted):
    trainer, _, evaluator, _ = fitted
    m = trainer.callback_metrics
    assert float(m["val/nmi"]) > 0.8 and float(m["val/acc"]) > 0.8
    assert float(m["val/ari"]) > 0.7 and float(m["val/balanced_acc"]) > 0.8
    # class counts came from the datamodule: head / medium / tail are logged too
    assert {"val/head_acc", "val/medium_acc", "val/tail_acc", "val/macro_f1"} <= set(m)
    assert evaluator.last_metrics["val/nmi"] == pytest.approx(float(m["val/nmi"]))


def test_plots_leave_the_evaluator_alone(fitted):
    _, _, evaluator, _ = fitted
    assert evaluator.keep_outputs is False and evaluator.last_outputs is None


def test_cluster_size_plot_shows_the_training_counts_by_frequency(fitted):
    _, _, _, plots = fitted
    ax = plots.last_figures["cluster_sizes"].axes[0]
    class_bars = [bar.get_height() for bar in ax.containers[0]]
    assert class_bars == pytest.approx([c / sum(TRAIN_COUNTS) for c in TRAIN_COUNTS])
    # the balanced validation set's class sizes are marked over them: flat, a quarter each
    (marks,) = ax.collections
    assert [seg[0][1] for seg in marks.get_segments()] == pytest.approx([0.25] * 4)
    assert "training class sizes" in ax.get_title()


def test_cluster_size_plot_orders_classes_by_training_frequency():
    from dcl_cluster.callbacks import clustering_figures

    y = torch.arange(40) % 4  # evaluated set: flat
    figs = clustering_figures(torch.randn(40, 3), y, y, method="pca",
                              class_counts=[10, 80, 20, 40])
    ax = figs["cluster_sizes"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "3", "2", "0"]
    assert [bar.get_height() for bar in ax.containers[0]] == pytest.approx(
        [80 / 150, 40 / 150, 20 / 150, 10 / 150])


def test_knn_and_diagnostics_are_logged(fitted):
    m = fitted[0].callback_metrics
    assert float(m["val/knn_acc"]) > 0.95
    assert float(m["val/uniformity"]) < 0 and 1 <= float(m["val/rankme"]) <= 16


def test_plot_files_are_written(fitted):
    _, _, _, plots = fitted
    names = sorted(os.path.basename(p) for p in plots.last_files)
    assert names == ["fit_epoch001_cluster_sizes.png", "fit_epoch001_confusion.png",
                     "fit_epoch001_embedding.png"]
    assert all(os.path.getsize(p) > 5000 for p in plots.last_files)


def test_validate_returns_the_scores(fitted):
    trainer, model, _, _ = fitted
    (result,) = trainer.validate(model, datamodule=Data(), verbose=False)
    assert result["val/nmi"] > 0.8 and "val/knn_acc" in result


def test_state_is_saved_and_restored_with_the_checkpoint(fitted, tmp_path):
    trainer, model, evaluator, _ = fitted
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    fresh = ClusteringEvaluator(num_clusters=4)
    resumed = make_trainer([fresh], max_epochs=2)  # already done: restores, trains nothing
    resumed.fit(Classifier(), datamodule=Data(), ckpt_path=path)
    assert fresh.last_metrics == evaluator.last_metrics
    assert fresh.last_epoch == evaluator.last_epoch is not None


@pytest.mark.parametrize("make", [
    lambda tmp: ClusteringEvaluator(),
    lambda tmp: KNNEvaluator(k=20),
    lambda tmp: EmbeddingPlots(method="pca", max_points=100, save_dir=str(tmp)),
], ids=["evaluator", "knn", "plots"])
def test_each_callback_works_alone_on_a_plain_module(make, tmp_path):
    torch.manual_seed(0)
    callback = make(tmp_path)
    trainer = make_trainer([callback], max_epochs=1)
    trainer.fit(Classifier(), datamodule=Data())
    if isinstance(callback, EmbeddingPlots):
        assert len(callback.last_files) == 3 and all(os.path.exists(p) for p in callback.last_files)
    else:
        assert callback.last_metrics and set(callback.last_metrics) <= set(trainer.callback_metrics)


class ClassifierWithTestStep(Classifier):
    def test_step(self, batch, batch_idx):
        return self.validation_step(batch, batch_idx)


def test_test_runs_are_scored_under_the_test_prefix():
    torch.manual_seed(0)
    evaluator = ClusteringEvaluator(num_clusters=4)
    trainer = make_trainer([evaluator], max_epochs=1)
    model = ClassifierWithTestStep()
    trainer.fit(model, datamodule=Data())
    (result,) = trainer.test(model, dataloaders=Data().val_dataloader(), verbose=False)
    assert {"test/acc", "test/nmi", "test/macro_f1"} <= set(result)
    assert not any(k.startswith("val/") for k in result)


def test_cluster_probs_are_scored_and_kmeans_goes_under_kmeans_prefix():
    torch.manual_seed(0)
    evaluator = ClusteringEvaluator(num_classes=4, every_n_epochs=2)
    trainer = make_trainer([evaluator], max_epochs=3)
    data = separable([50] * 4, 1)
    train = DataLoader(separable([120] * 4, 0), batch_size=32, shuffle=True)
    trainer.fit(Classifier(return_probs=True), train, DataLoader(data, batch_size=64))
    m = trainer.callback_metrics
    assert float(m["val/acc"]) > 0.8 and float(m["val/kmeans_nmi"]) > 0.8
    assert "val/head_acc" not in m  # no class counts anywhere
    assert evaluator.last_epoch == 1  # every 2nd epoch of 3: epoch index 1 only


def test_plots_without_evaluator_and_images_reach_an_offline_wandb_logger(
        tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="test")
    plots = EmbeddingPlots(method="pca", max_points=100)
    trainer = make_trainer([plots], max_epochs=1, logger=logger,
                           default_root_dir=str(tmp_path))
    trainer.fit(Classifier(), DataLoader(separable(TRAIN_COUNTS, 0), 64),
                DataLoader(separable([25] * 4, 1), batch_size=50))
    logger.experiment.finish()
    assert len(plots.last_files) == 3 and all(os.path.exists(p) for p in plots.last_files)
    media = [f for _, _, files in os.walk(tmp_path / "wandb") for f in files
             if f.endswith(".png")]
    assert len(media) >= 3  # the three figures were handed to W&B


def test_plot_cluster_sizes_runs_without_a_trainer():
    fig = plot_cluster_sizes([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
                             [1500, 1400, 1300, 1300, 1200, 1100, 1000, 900, 800, 900])
    assert len(fig.axes[0].patches) == 20


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError, match="source must be one of"):
        ClusteringEvaluator(source="labels")
    with pytest.raises(ValueError, match="class_counts must have num_classes=3"):
        ClusteringEvaluator(num_classes=3, class_counts=[1, 2])


class CountGathered(Callback):
    """Logs how many samples rank 0's evaluator scored (the gathered validation set)."""

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def on_validation_epoch_end(self, trainer, pl_module):
        outputs = self.evaluator.last_outputs
        n = -1.0 if outputs is None else float(len(outputs["labels"]))
        pl_module.log("n_scored", n, rank_zero_only=True)


def test_ddp_spawn_gathers_every_rank_and_logs_the_same_scores():
    torch.manual_seed(0)
    evaluator = ClusteringEvaluator(num_clusters=4, keep_outputs=True)
    # 5 bank batches: rank 0 embeds 3 of them, rank 1 two (an uneven gather)
    knn = KNNEvaluator(k=20, train_dataloader=DataLoader(separable([120] * 4, 0), batch_size=100))
    trainer = make_trainer([evaluator, CountGathered(evaluator), knn], max_epochs=2,
                           strategy="ddp_spawn", devices=2)
    train = DataLoader(separable([120] * 4, 0), batch_size=32, shuffle=True)
    trainer.fit(Classifier(), train, DataLoader(separable([50] * 4, 1), batch_size=50))
    m = trainer.callback_metrics
    assert float(m["n_scored"]) == 200  # 100 per rank, gathered
    assert float(m["val/nmi"]) > 0.8 and float(m["val/acc"]) > 0.8
    assert float(m["val/knn_acc"]) > 0.95


def test_shot_thresholds_give_the_imagenet_lt_groups():
    # class counts 150 / 60 / 10: many-shot (> 100), medium (20..100), few-shot (< 20)
    evaluator = ClusteringEvaluator(num_classes=3, class_counts=[150, 60, 10], shot_thresholds=(100, 20))
    labels = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    preds = torch.tensor([0] * 4 + [1, 1, 1, 0] + [0, 0, 2, 2])  # per-class recall 1, 3/4, 1/2
    metrics, _ = evaluator.evaluate({"embeddings": torch.randn(12, 2), "cluster_probs": torch.eye(3)[preds],
                                     "labels": labels})
    assert metrics["val/head_acc"] == pytest.approx(1.0)
    assert metrics["val/medium_acc"] == pytest.approx(0.75)
    assert metrics["val/tail_acc"] == pytest.approx(0.5)
