"""SCAN as terms (METHOD.md 2.6): neighbours mined by cosine similarity as a plain loop finds
them, the datamodule serving a neighbour's view and the strong view, the terms being the loss
functions, exact resume with the neighbour table in the checkpoint, and clear errors."""

import math
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from dcl_cluster import DebiasedClusterModule, LongTailDataModule
from dcl_cluster.losses import confident_self_label_loss, scan_loss
from dcl_cluster.objectives import ConfidentSelfLabel, InfoNCE, SCANConsistency, StepOutputs, WarmupOnly
from dcl_cluster.objectives.scan import nearest_neighbors

SMALL = dict(backbone_width=4, projection_hidden_dim=32, projection_dim=16)


@pytest.mark.parametrize("n, d, k", [(9, 3, 1), (30, 5, 4), (50, 8, 7)])
def test_nearest_neighbors_are_the_cosine_nearest_as_a_loop_finds_them(n, d, k):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    got = nearest_neighbors(x, k, chunk_size=7)
    for i in range(n):
        sims = []
        for j in range(n):
            if j != i:
                dot = sum(float(x[i, c] * x[j, c]) for c in range(d))
                norm = (sum(float(v) ** 2 for v in x[i]) * sum(float(v) ** 2 for v in x[j])) ** 0.5
                sims.append((dot / norm, j))
        expected = {j for _, j in sorted(sims, reverse=True)[:k]}
        assert set(got[i].tolist()) == expected


def test_the_terms_are_the_loss_functions():
    g = torch.Generator().manual_seed(0)
    logits = {v: torch.randn(8, 4, generator=g) for v in ("a", "neighbor", "clean", "strong")}
    step = StepOutputs(torch.randn(8, 2), torch.randn(8, 2), logits=logits,
                       cluster_prior=torch.tensor([0.5, 0.3, 0.15, 0.05]))
    torch.testing.assert_close(SCANConsistency(entropy_weight=3.0)(step),
                               scan_loss(logits["a"], logits["neighbor"], 3.0))
    torch.testing.assert_close(SCANConsistency(prior="cluster_prior")(step),
                               scan_loss(logits["a"], logits["neighbor"], 5.0, step.cluster_prior))
    torch.testing.assert_close(ConfidentSelfLabel(threshold=0.5)(step),
                               confident_self_label_loss(logits["clean"], logits["strong"], 0.5))


def test_self_label_logs_its_confident_share_and_warns_once_after_an_epoch_without_one():
    g = torch.Generator().manual_seed(1)
    weak = torch.randn(64, 5, generator=g, dtype=torch.float64) * 4
    step = StepOutputs(torch.randn(64, 2), torch.randn(64, 2),
                       logits={"clean": weak.float(), "strong": torch.randn(64, 5, generator=g)})
    term = ConfidentSelfLabel(threshold=0.9)
    term(step)
    # the share as a plain loop computes it: rows whose largest softmax probability exceeds 0.9
    confident = 0
    for row in weak.tolist():
        exps = [math.exp(v - max(row)) for v in row]
        confident += max(exps) / sum(exps) > 0.9
    assert 0 < confident < 64
    assert float(term.logs()["self_label_confident_share"]) == pytest.approx(confident / 64)

    class Module:
        current_epoch = 7

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        term.on_train_epoch_end(Module())  # some were confident: quiet
        ConfidentSelfLabel().on_train_epoch_end(Module())  # never ran this epoch: quiet
    sure_of_nothing = StepOutputs(torch.randn(8, 2), torch.randn(8, 2),
                                  logits={"clean": torch.zeros(8, 5), "strong": torch.randn(8, 5)})
    term = ConfidentSelfLabel()
    for _ in range(3):
        assert float(term(sure_of_nothing)) == 0.0  # nothing above 0.99: the stage trains nothing
    with pytest.warns(UserWarning, match=r"threshold=0.99 in epoch 7 \(24 images\): self-labelling trained nothing"):
        term.on_train_epoch_end(Module())
    term(sure_of_nothing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        term.on_train_epoch_end(Module())  # once per fit
    term(sure_of_nothing)  # a fit stopped mid-epoch: these 8 rows must not count in the next fit
    term.on_fit_start(Module())  # a new fit: warns again, and its counts start from zero
    assert term.logs() == {} and term.epoch_counts() == (0, 0)
    sure_of_five = StepOutputs(torch.randn(8, 2), torch.randn(8, 2),
                               logits={"clean": 20 * torch.eye(8, 5), "strong": torch.randn(8, 5)})
    assert float(term(sure_of_five)) > 0  # a confident epoch, then one without: the counts are per epoch
    assert float(term.logs()["self_label_confident_share"]) == 5 / 8
    term.on_train_epoch_end(Module())
    term(sure_of_nothing)
    with pytest.warns(UserWarning, match=r"in epoch 7 \(8 images\)"):
        term.on_train_epoch_end(Module())


def test_warmup_only_passes_the_hooks_to_its_term():
    calls = []

    class Recording(InfoNCE):
        def on_setup(self, module):
            calls.append("setup")

        def on_fit_start(self, module):
            calls.append("fit_start")

        def on_train_epoch_start(self, module):
            calls.append("epoch_start")

        def on_train_epoch_end(self, module):
            calls.append("epoch_end")

    wrapped = WarmupOnly(Recording())
    for hook in ("on_setup", "on_fit_start", "on_train_epoch_start", "on_train_epoch_end"):
        getattr(wrapped, hook)(None)
    assert calls == ["setup", "fit_start", "epoch_start", "epoch_end"]


def digits(**kwargs):
    return LongTailDataModule("digits", imbalance_factor=10, batch_size=64, **kwargs)


def test_the_datamodule_serves_a_neighbours_view_and_the_strong_view():
    dm = digits(augment="none")
    dm.setup("fit")
    dm.require_views(["clean", "neighbor"])
    n = len(dm.train_eval_dataset)
    dm.set_neighbors(np.full((n, 2), -1))  # not mined yet: no neighbour view
    assert len(next(iter(dm.train_dataloader()))[0]) == 3  # a list: a, b, clean
    table = np.stack([np.roll(np.arange(n), -1), np.roll(np.arange(n), -2)], axis=1)  # i -> i+1, i+2
    dm.set_neighbors(table)  # filled in place
    views, _, index = next(iter(dm.train_dataloader()))
    assert list(views) == ["a", "b", "clean", "neighbor"]
    clean = torch.stack([dm.train_eval_dataset[j][0] for j in range(n)]).float()
    normalise = dm._view_collate.normalize
    for row, i in enumerate(index.tolist()):  # augment="none": a view is the image itself
        candidates = [normalise(normalise.to_unit(clean[j:j + 1].to(torch.uint8)))[0] for j in table[i]]
        assert any(torch.allclose(views["neighbor"][row], c) for c in candidates)
    dm.serve_strong_view(True, from_epoch=1)
    loader = dm.train_dataloader()
    assert "strong" not in next(iter(loader))[0]  # epoch 0
    assert list(next(iter(loader))[0]) == ["a", "b", "clean", "neighbor", "strong"]  # the sampler's next epoch
    dm.serve_strong_view(False)
    assert "strong" not in next(iter(dm.train_dataloader()))[0]


@pytest.mark.parametrize("name", ["scan", "scan_prior"])
def test_scan_trains_mines_once_and_resumes_exactly(name, tmp_path):
    class InterruptAfter(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch + 1 == 3:
                trainer.should_stop = True

    def run(root, ckpt_path=None, callbacks=(), seed=0):
        pl.seed_everything(seed)
        module = DebiasedClusterModule.from_preset(name, warmup_epochs=1, lr=1e-2, **SMALL,
                                                   **{"scan.num_neighbors": 5, "threshold": 0.3})
        t = pl.Trainer(max_epochs=4, limit_train_batches=3, limit_val_batches=0, logger=False,
                       enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                       callbacks=list(callbacks))
        t.fit(module, datamodule=digits(), ckpt_path=ckpt_path)
        return module, t

    full, trainer = run(tmp_path / "full")
    scan = full.objectives[1]
    assert scan.neighbors.shape == (494, 5) and int(scan.mined_epoch) == 1  # mined at the warm-up's end, once
    assert "train/scan" in trainer.callback_metrics and "train/self_label" in trainer.callback_metrics
    assert 0 <= float(trainer.callback_metrics["train/self_label_confident_share"]) <= 1
    _, first = run(tmp_path / "part", callbacks=[InterruptAfter()])
    resumed, _ = run(tmp_path / "part", ckpt_path=first.checkpoint_callback.best_model_path, seed=9)
    for (key, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=f"{key} differs after resume")
    loaded = DebiasedClusterModule.load_from_checkpoint(first.checkpoint_callback.best_model_path)
    assert [t.config() for t in loaded.objectives] == [t.config() for t in full.objectives]
    assert loaded.objectives[1].neighbors.shape == (494, 5)  # the table comes with the checkpoint


class TestSCANErrors:
    def test_more_neighbours_than_images(self):
        with pytest.raises(ValueError, match=r"num_neighbors must be an integer in \[1, 9\]"):
            nearest_neighbors(torch.randn(10, 3), 10)

    @pytest.mark.parametrize("kwargs, message", [
        ({"threshold": 1.0}, r"threshold must be in \(0, 1\), got 1.0"),
        ({"threshold": 0.0}, r"threshold must be in \(0, 1\), got 0.0"),
        ({"start": 1.0}, r"start must be in \[0, 1\), got 1.0"),
    ])
    def test_self_label_settings(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            ConfidentSelfLabel(**kwargs)

    @pytest.mark.parametrize("kwargs, message", [
        ({"entropy_weight": -1.0}, "entropy_weight must be a finite number >= 0, got -1.0"),
        ({"prior": "zipf"}, r"prior must be one of \('uniform', 'cluster_prior'\), got 'zipf'"),
        ({"num_neighbors": 0}, "num_neighbors must be an integer >= 1, got 0"),
        ({"stop": 0.0}, r"stop must be in \(0, 1\], got 0.0"),
    ])
    def test_scan_settings(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            SCANConsistency(**kwargs)

    def test_scan_needs_a_softmax_kind_of_head(self):
        with pytest.raises(ValueError, match=r"cluster_head='student_t' does not suit the objective terms: "
                                             r"SCANConsistency \(cosine/softmax\)"):
            DebiasedClusterModule(objectives=[InfoNCE(), SCANConsistency()], cluster_head="student_t")

    def test_a_batch_without_the_neighbour_view(self):
        module = DebiasedClusterModule(objectives=[InfoNCE(), SCANConsistency()], in_channels=1, input_size=8,
                                       num_clusters=4, **SMALL)
        module.cluster_head.init_centroids(torch.randn(4, module.backbone.out_dim))
        with pytest.raises(ValueError, match=r"SCANConsistency needs the view\(s\) \['neighbor'\], which this "
                                             r"batch lacks \(it has \['a', 'b'\]\)"):
            module.loss_terms(module.shared_step([torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)]))

    def test_more_neighbours_than_training_images_is_said_at_the_start(self):
        module = DebiasedClusterModule.from_preset("scan", warmup_epochs=1, **SMALL, **{"scan.num_neighbors": 600})
        trainer = pl.Trainer(max_epochs=2, limit_train_batches=1, logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False)
        with pytest.raises(ValueError, match="num_neighbors=600 needs more training images than the 494 there are"):
            trainer.fit(module, datamodule=digits())
        assert trainer.current_epoch == 0  # not after the warm-up

    def test_views_that_change_get_fresh_workers(self):
        dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=64, num_workers=1, persistent_workers=True)
        dm.require_views(["neighbor"])
        assert dm.hparams.persistent_workers is False  # each epoch's workers see the neighbour table


@pytest.mark.parametrize("mid_epoch", [False, True])
def test_scan_resumes_with_loader_workers_and_mid_epoch(mid_epoch, tmp_path):
    # the first loader of a resumed run is made before any epoch hook, in worker processes:
    # the restored neighbour table and the schedule must reach the datamodule before it
    class StopAt(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 2 and (batch_idx == 0 if mid_epoch else batch_idx == 2):
                trainer.should_stop = True

    def run(ckpt_path=None, callbacks=()):
        pl.seed_everything(0)
        module = DebiasedClusterModule.from_preset("scan", warmup_epochs=1, **SMALL, **{"scan.num_neighbors": 5})
        t = pl.Trainer(max_epochs=4, limit_train_batches=3, limit_val_batches=0, logger=False,
                       enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                       callbacks=list(callbacks))
        dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=64, num_workers=1, persistent_workers=False)
        t.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module, t

    _, first = run(callbacks=[StopAt()])
    path = tmp_path / "stop.ckpt"
    first.save_checkpoint(path)
    resumed, t = run(ckpt_path=path)
    assert t.current_epoch == 4 and "train/self_label" in t.callback_metrics
    assert int(resumed.objectives[1].mined_epoch) == 1


def test_scan_needs_a_warmup():
    module = DebiasedClusterModule.from_preset("scan", warmup_epochs=0, **SMALL)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="set warmup_epochs >= 1, got 0"):
        trainer.fit(module, datamodule=digits())


def test_the_scan_stages_forward_only_the_views_their_terms_read():
    """SCAN's stage reads the anchor and its neighbour (not view b, not the clean view the
    self-labelling stage asks for); self-labelling reads the clean and strong views. The module
    forwards those (and view a) only: 2 of the 4 served views, then 3 of 5."""
    seen = []

    class Recording(DebiasedClusterModule):
        def shared_step(self, views, index=None):
            self._rows = None
            step = super().shared_step(views, index)
            seen.append((self.current_epoch, len(views), step.views, self._rows // len(step.z_a)))
            return step

        def forward(self, x):
            self._rows = x.shape[0]  # the backbone's batch rows
            return super().forward(x)

    pl.seed_everything(0)
    module = Recording.from_preset("scan", warmup_epochs=1, lr=1e-2, **SMALL,
                                   **{"scan.num_neighbors": 5, "threshold": 0.3})
    t = pl.Trainer(max_epochs=4, limit_train_batches=2, limit_val_batches=0, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    t.fit(module, datamodule=digits())
    by_epoch = {epoch: (served, names, rows) for epoch, served, names, rows in seen}
    assert by_epoch[0] == (3, ("a", "b"), 2)  # warm-up: InfoNCE on a, b (the clean view waits)
    assert by_epoch[1] == by_epoch[2] == (4, ("a", "neighbor"), 2)  # SCAN's stage: no view b
    assert by_epoch[3] == (5, ("a", "clean", "strong"), 3)  # self-labelling
    assert "train/scan" in t.callback_metrics and "train/self_label" in t.callback_metrics
