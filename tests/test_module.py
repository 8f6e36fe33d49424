"""DebiasedClusterModule: presets train, objective terms are the loss functions' values,
the cluster prior follows METHOD.md 1.3, checkpoints resume and reload, errors are clear."""

import math

import lightning.pytorch as pl
import pytest
import torch
import torchvision
from toy_data import ToyDataModule

from dcl_cluster import DebiasedClusterModule
from dcl_cluster.losses import anchor_loss, debiased_contrastive_loss, dec_clustering_loss, prior_matched_target
from dcl_cluster.nn import ResNet, SmallCNN
from dcl_cluster.objectives import ClusterContrastive, DebiasedContrastive, DECClustering, InfoNCE
from dcl_cluster.presets import PRESETS, preset


def make_trainer(tmp_path=None, **kwargs):
    defaults = dict(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    deterministic=True)
    if tmp_path is not None:
        defaults["default_root_dir"] = tmp_path
    return pl.Trainer(**{**defaults, **kwargs})


SMALL = dict(backbone_width=4, projection_hidden_dim=32, projection_dim=16, cluster_hidden_dim=16)


def small(preset, **overrides):
    return DebiasedClusterModule.from_preset(preset, **SMALL, **overrides)


def small_with(objectives, **kwargs):
    return DebiasedClusterModule(objectives=objectives, **SMALL, **kwargs)


def preset_terms(name):
    return preset(name)["objectives"]


#: presets whose terms need no view the toy data lacks (SCAN's run on digits in test_objectives_scan.py)
TOY_PRESETS = sorted(p for p in PRESETS if not p.startswith("scan"))


@pytest.mark.parametrize("preset", TOY_PRESETS)
def test_every_preset_trains_and_logs_its_terms(preset):
    pl.seed_everything(0)
    module = small(preset, warmup_epochs=1, lr=1e-3)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(module, datamodule=ToyDataModule())
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    assert {f"train/{term.name}" for term in preset_terms(preset)} <= set(metrics)
    if module.cluster_head is not None:
        assert module.cluster_head.ready
        torch.testing.assert_close(module.cluster_prior.sum(), torch.tensor(1.0))


def test_idle_cluster_head_is_not_touched_during_warmup():
    # Adam turns pure weight decay into steps of size lr: an idle softmax head was erased
    module = small("cc", in_channels=1, input_size=8, num_clusters=4, warmup_epochs=2, weight_decay=1e-3, lr=1e-2)
    before = {k: v.clone() for k, v in module.cluster_head.state_dict().items()}
    make_trainer(max_epochs=3, callbacks=[InterruptAfter(2)]).fit(module, datamodule=ToyDataModule())
    for name, value in module.cluster_head.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=f"cluster_head.{name} changed during warm-up")


def test_facts_come_from_the_datamodule_and_are_saved():
    module = small("dcl_cluster")
    assert module.cluster_head is None  # nothing known before setup
    trainer = make_trainer(max_epochs=1)
    trainer.fit(module, datamodule=ToyDataModule())
    assert module.hparams.num_clusters == 4 and module.hparams.in_channels == 1 and module.hparams.input_size == 8
    assert module.cluster_head.centroids.shape == (4, module.backbone.out_dim)


def batch_from(dm):
    return next(iter(dm.train_dataloader()))


def test_loss_terms_are_the_loss_functions():
    dm = ToyDataModule()
    module = small_with([DebiasedContrastive(tau_plus="cluster_prior"),  # the 0.1.0 preset
                         DECClustering(weight=0.7, target="batch", size_exponent=0.5)],
                        in_channels=1, input_size=8, num_clusters=4)
    module.init_centroids(dm.train_eval_dataloader())
    views, _, _ = batch_from(dm)
    out = module.shared_step(views)
    tau = module.objectives[0].tau_per_anchor(out)
    # METHOD.md 1.3 written out: tau_i = clip(sum_k q_ik pi_k, tau_min, tau_max)
    q = torch.cat([out.q_a, out.q_b]).detach()
    expected_tau = torch.clamp((q * module.cluster_prior).sum(1), 1e-3, 0.5)
    torch.testing.assert_close(tau, expected_tau)
    terms = module.loss_terms(out)
    assert terms["contrastive"][0] == 1.0 and terms["clustering"][0] == 0.7
    torch.testing.assert_close(terms["contrastive"][1], debiased_contrastive_loss(out.z_a, out.z_b, 0.5, expected_tau))
    torch.testing.assert_close(terms["clustering"][1], dec_clustering_loss(out.q_clean, size_exponent=0.5))
    assert set(terms) == {"contrastive", "clustering"}


def test_the_shipped_preset_has_prior_matched_dec_and_the_anchor_loss():
    dm = ToyDataModule()
    module = small("dcl_cluster", in_channels=1, input_size=8, num_clusters=4)
    module.init_centroids(dm.train_eval_dataloader())
    module.cluster_prior.copy_(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    out = module.shared_step(batch_from(dm)[0])
    terms = module.loss_terms(out)
    assert {name: weight for name, (weight, _) in terms.items()} == {"contrastive": 1.0, "clustering": 1.0,
                                                                      "anchor": 1.0}
    target = prior_matched_target(out.q_clean.detach(), module.cluster_prior)
    torch.testing.assert_close(terms["clustering"][1], dec_clustering_loss(out.q_clean, target))
    torch.testing.assert_close(terms["anchor"][1], anchor_loss(out.q_clean, out.q_a, out.q_b))


@pytest.mark.parametrize("detach", [False, True])
def test_detach_cluster_input_leaves_the_encoder_to_the_contrastive_loss(detach):
    dm = ToyDataModule()
    module = small("dcl_cluster", in_channels=1, input_size=8, num_clusters=4, tau_plus=0.1,
                   detach_cluster_input=detach)
    module.init_centroids(dm.train_eval_dataloader())
    views, _, _ = batch_from(dm)

    def grads(*names):
        module.zero_grad()
        terms = module.loss_terms(module.shared_step(views))
        sum(terms[n][0] * terms[n][1] for n in names).backward()
        return ({k: p.grad.clone() for k, p in module.backbone.named_parameters()},
                module.cluster_head.centroids.grad)

    contrastive_only, _ = grads("contrastive")
    joint, centroid_grad = grads("contrastive", "clustering", "anchor")
    assert centroid_grad is not None and centroid_grad.abs().sum() > 0  # the head still learns
    same = all(torch.allclose(joint[k], contrastive_only[k], rtol=1e-5, atol=1e-8) for k in joint)
    assert same == detach  # detached: the clustering terms add nothing to the encoder's gradient


def test_centroids_are_kmeans_of_training_features_and_prior_its_sizes():
    dm = ToyDataModule()
    module = small("sic", in_channels=1, input_size=8, num_clusters=4)
    module.init_centroids(dm.train_eval_dataloader())
    module.eval()
    with torch.no_grad():
        feats = torch.cat([module(x) for x, _, _ in dm.train_eval_dataloader()])
    # every centroid is the mean of the features nearest to it (a k-means fixed point)
    nearest = torch.cdist(feats, module.cluster_head.centroids).argmin(1)
    for k in range(4):
        torch.testing.assert_close(module.cluster_head.centroids[k], feats[nearest == k].mean(0),
                                   rtol=1e-4, atol=1e-4)
    sizes = torch.bincount(nearest, minlength=4).float()
    torch.testing.assert_close(module.cluster_prior, sizes / sizes.sum())


def test_uniform_tau_plus_is_one_over_k():
    module = small("dcl", tau_plus="uniform", in_channels=1, input_size=8, num_clusters=5)
    views, _, _ = batch_from(ToyDataModule(clean_view=False))
    assert module.cluster_head is None  # 1/K needs K, not a head
    assert module.objectives[0].tau_per_anchor(module.shared_step(views)) == pytest.approx(0.2)


def test_cluster_prior_ema_update():
    dm = ToyDataModule()
    module = small("dcl_cluster", in_channels=1, input_size=8, num_clusters=4, prior_momentum=0.9)
    trainer = make_trainer(max_epochs=1, limit_train_batches=1)
    trainer.fit(module, datamodule=dm)  # initialises the centroids, then one step updates pi
    before = module.cluster_prior.clone()
    module.trainer.fit_loop.epoch_progress.current.completed = 0
    views, _, _ = batch_from(dm)
    out = module.shared_step(views)
    module._update_cluster_prior(torch.cat([out.q_a, out.q_b]).detach(), gathered=False)
    expected = 0.9 * before + 0.1 * torch.cat([out.q_a, out.q_b]).detach().mean(0)
    torch.testing.assert_close(module.cluster_prior, expected)


@pytest.mark.parametrize("momentum", [1.0, 0.5])
def test_prior_momentum_one_keeps_the_kmeans_prior(momentum):
    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 0:  # just after the k-means initialisation
                self.kmeans_prior = module.cluster_prior.clone()

    module = small("dcl_cluster", in_channels=1, input_size=8, num_clusters=4, prior_momentum=momentum)
    record = Record()
    make_trainer(max_epochs=2, callbacks=[record]).fit(module, datamodule=ToyDataModule())
    assert record.kmeans_prior.max() > record.kmeans_prior.min()  # not the uniform start
    frozen = torch.equal(module.cluster_prior, record.kmeans_prior)
    assert frozen == (momentum == 1.0)


@pytest.mark.parametrize("dec_target", ["dataset", "prior"])
def test_dec_targets_use_the_cluster_prior(dec_target):
    from dcl_cluster.losses import dec_clustering_loss, prior_matched_target, target_distribution

    dm = ToyDataModule()
    module = small("dcl_cluster", in_channels=1, input_size=8, num_clusters=4, target=dec_target,
                   size_exponent=0.5)
    module.init_centroids(dm.train_eval_dataloader())
    module.cluster_prior.copy_(torch.tensor([0.55, 0.25, 0.15, 0.05]))
    out = module.shared_step(batch_from(dm)[0])
    got = module.loss_terms(out)["clustering"][1]
    q, prior = out.q_clean, module.cluster_prior
    p = (target_distribution(q, 0.5, cluster_sizes=prior) if dec_target == "dataset"
         else prior_matched_target(q, prior))
    torch.testing.assert_close(got, dec_clustering_loss(q, p))
    make_trainer(max_epochs=2).fit(module, datamodule=dm)  # and it trains


def test_trainer_test_logs_clustering_scores_under_test_prefix():
    from dcl_cluster import ClusteringEvaluator

    module = small("cc", in_channels=1, input_size=8, num_clusters=4)
    trainer = make_trainer(callbacks=[ClusteringEvaluator()])
    (scores,) = trainer.test(module, datamodule=ToyDataModule(), verbose=False)
    assert {"test/nmi", "test/acc", "test/kmeans_nmi", "test/tail_acc"} <= set(scores)
    assert 0 <= scores["test/nmi"] <= 1


def test_validation_step_returns_the_evaluator_protocol():
    module = small("cc", in_channels=1, input_size=8, num_clusters=4)
    out = module.validation_step((torch.randn(3, 1, 8, 8), torch.zeros(3)), 0)
    assert out["embeddings"].shape == (3, 32) and out["cluster_probs"].shape == (3, 4)
    torch.testing.assert_close(out["cluster_probs"].sum(1), torch.ones(3))
    # a DEC head before its centroids exist gives embeddings only
    assert set(small("sic", in_channels=1, input_size=8, num_clusters=4).validation_step(
        (torch.randn(3, 1, 8, 8), torch.zeros(3)), 0)) == {"embeddings"}


class InterruptAfter(pl.Callback):
    """Stops training at the end of an epoch, as a killed job would have been."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epochs:
            trainer.should_stop = True


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    def run(root, ckpt_path=None, callbacks=(), seed=0):
        pl.seed_everything(seed)
        module = small("dcl_cluster", warmup_epochs=1, lr=1e-2, lr_warmup_epochs=1)
        trainer = make_trainer(root, max_epochs=4, enable_checkpointing=True, callbacks=list(callbacks))
        trainer.fit(module, datamodule=ToyDataModule(shuffle=True), ckpt_path=ckpt_path)
        return module, trainer

    full, _ = run(tmp_path / "full")
    _, first = run(tmp_path / "part", callbacks=[InterruptAfter(2)])
    assert first.current_epoch == 2
    # the resumed process starts from another random state: nothing may depend on it
    resumed, _ = run(tmp_path / "part", ckpt_path=first.checkpoint_callback.best_model_path, seed=123)
    for (name, p_full), p_res in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(p_res, p_full, msg=f"{name} differs after resume")
    assert resumed.cluster_head.ready


@pytest.mark.parametrize("workers", [0, 1])  # workers draw a resumed epoch's first indices before set_epoch
def test_resume_with_the_real_datamodule_and_augmentations(tmp_path, workers):
    from dcl_cluster import LongTailDataModule

    def run(root, ckpt_path=None, callbacks=(), seed=0):
        pl.seed_everything(seed)
        module = small("dcl_cluster", warmup_epochs=1, lr=1e-2)
        trainer = make_trainer(root, max_epochs=3, enable_checkpointing=True, callbacks=list(callbacks))
        dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=128, clean_view=True, num_workers=workers,
                                persistent_workers=False)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module, trainer

    full, _ = run(tmp_path / "full")
    _, first = run(tmp_path / "part", callbacks=[InterruptAfter(2)])
    resumed, _ = run(tmp_path / "part", ckpt_path=first.checkpoint_callback.best_model_path, seed=7)
    for (name, p_full), p_res in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(p_res, p_full, msg=f"{name} differs after resume")


def test_load_from_checkpoint_outside_the_cli(tmp_path):
    module = small("dcl_cluster", warmup_epochs=0)
    trainer = make_trainer(tmp_path, max_epochs=1, enable_checkpointing=True)
    trainer.fit(module, datamodule=ToyDataModule())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = DebiasedClusterModule.load_from_checkpoint(path, map_location="cpu")
    for (name, a), b in zip(module.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=name)
    assert loaded.cluster_head.ready
    torch.testing.assert_close(loaded.cluster_prior, module.cluster_prior)


def test_injected_backbone_must_be_passed_again_to_reload(tmp_path):
    module = small("simclr", backbone=SmallCNN(1, 4), in_channels=1, input_size=8)
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, datamodule=ToyDataModule())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match="injected backbone"):
        DebiasedClusterModule.load_from_checkpoint(tmp_path / "m.ckpt")
    reloaded = DebiasedClusterModule.load_from_checkpoint(tmp_path / "m.ckpt", backbone=SmallCNN(1, 4))
    torch.testing.assert_close(reloaded.backbone.net[0].weight, module.backbone.net[0].weight)


def test_export_backbone_loads_into_plain_modules(tmp_path):
    module = small("simclr", in_channels=1, input_size=8)
    module.export_backbone(tmp_path / "cnn.pt")
    plain = SmallCNN(1, 4)
    plain.load_state_dict(torch.load(tmp_path / "cnn.pt"))
    x = torch.randn(2, 1, 8, 8)
    module.eval(), plain.eval()
    torch.testing.assert_close(plain(x), module(x))

    resnet = DebiasedClusterModule.from_preset("simclr", backbone=ResNet("resnet18", cifar_stem=True),
                                               in_channels=3, input_size=32)
    resnet.export_backbone(tmp_path / "r18.pt")
    tv = torchvision.models.resnet18()
    tv.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tv.maxpool, tv.fc = torch.nn.Identity(), torch.nn.Identity()
    tv.load_state_dict(torch.load(tmp_path / "r18.pt"))


class TestErrors:
    def test_num_clusters_below_two(self):
        with pytest.raises(ValueError, match="num_clusters must be an integer >= 2, got 1"):
            small("dcl_cluster", num_clusters=1)

    @pytest.mark.parametrize("tau", [1.0, -0.1, "sometimes"])
    def test_tau_plus_out_of_range(self, tau):
        with pytest.raises(ValueError, match="tau_plus must be"):
            small("dcl", tau_plus=tau)

    def test_cluster_prior_gets_a_head_and_detaching_needs_one(self):
        module = small("dcl", tau_plus="cluster_prior", in_channels=1, input_size=8, num_clusters=4)
        assert module.cluster_head is not None and module.cluster_head.kind == "student_t"
        with pytest.raises(ValueError, match="detach_cluster_input=True needs a cluster head"):
            small("dcl", detach_cluster_input=True, in_channels=1, input_size=8)

    def test_dec_target_and_prior_momentum_out_of_range(self):
        with pytest.raises(ValueError, match=r"target must be one of \('batch', 'dataset', 'prior'\), got 'all'"):
            small("dcl_cluster", target="all")
        with pytest.raises(ValueError, match=r"prior_momentum must be in \[0, 1\], got 1.5"):
            small("dcl_cluster", prior_momentum=1.5)
        with pytest.raises(TypeError, match="nor a term setting: term setting 'target' matches no term"):
            small("cc", target="prior")

    def test_terms_that_need_different_heads(self):
        class DEC(DECClustering):
            name = "dec"

        with pytest.raises(ValueError, match=r"need cluster heads of different kinds: ClusterContrastive "
                                             r"\(softmax/cosine\), DEC \(student_t\)"):
            small_with([InfoNCE(), ClusterContrastive(), DEC(inputs="views")])
        with pytest.raises(ValueError, match="cluster_head='student_t' does not suit the objective terms"):
            small_with([InfoNCE(), ClusterContrastive()], cluster_head="student_t")

    def test_an_ambiguous_term_setting_names_the_terms(self):
        with pytest.raises(TypeError, match=r"matches 3 terms \(contrastive, clustering, anchor\)"):
            small("sic", weight=0.5)
        assert small("sic", **{"anchor.weight": 0.5}).objectives[2].weight == 0.5

    def test_max_steps_inside_the_warmup(self):
        with pytest.raises(ValueError, match=r"trainer.max_steps=3 ends inside the warm-up \(warmup_epochs=1 x 4 "
                                             r"steps per epoch\)"):
            make_trainer(max_epochs=5, max_steps=3).fit(small("dcl_cluster", warmup_epochs=1),
                                                        datamodule=ToyDataModule())

    def test_fast_dev_run_runs_despite_the_warmup(self):
        module = small("dcl_cluster", warmup_epochs=5)
        make_trainer(fast_dev_run=True).fit(module, datamodule=ToyDataModule())
        assert module.cluster_head is not None

    def test_warmup_longer_than_training(self):
        with pytest.raises(ValueError, match="warmup_epochs=3 leaves no epoch .* trainer.max_epochs=3"):
            make_trainer(max_epochs=3).fit(small("dcl_cluster", warmup_epochs=3), datamodule=ToyDataModule())

    def test_more_clusters_than_samples_at_centroid_init(self):
        module = small("sic", in_channels=1, input_size=8, num_clusters=100)
        with pytest.raises(ValueError, match="num_clusters=100 is more than the 76 training samples"):
            module.init_centroids(ToyDataModule().train_eval_dataloader())

    def test_clean_view_missing(self):
        with pytest.raises(ValueError, match="clean_view=True"):
            make_trainer(max_epochs=1).fit(small("sic"), datamodule=ToyDataModule(clean_view=False))

    def test_non_finite_loss_names_step_and_term(self):
        class NaNData(ToyDataModule):
            def train_dataloader(self):
                loader = super().train_dataloader()
                loader.dataset.a[:] = math.nan
                return loader

        with pytest.raises(FloatingPointError, match=r"global step 0 .*contrastive"):
            make_trainer(max_epochs=1).fit(small("dcl", in_channels=1, input_size=8), datamodule=NaNData())

    def test_missing_facts_without_a_datamodule(self):
        with pytest.raises(ValueError, match="in_channels, input_size, num_clusters unknown"):
            make_trainer(max_epochs=1).fit(small("dcl_cluster"), train_dataloaders=ToyDataModule().train_dataloader())
