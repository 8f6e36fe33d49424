"""Objectives as terms (0.2): a user's own term works from Python and from a YAML class_path,
every preset reloads from its checkpoint alone, terms keep their settings in their configs,
and the P²OT term is the pseudo-label loss of METHOD.md 2.5 with its bank in the checkpoint."""

import lightning.pytorch as pl
import pytest
import torch
import yaml
from toy_data import ToyDataModule

from dcl_cluster import DebiasedClusterModule
from dcl_cluster.losses import p2ot_loss, p2ot_rho, partial_ot_targets
from dcl_cluster.objectives import (
    DebiasedContrastive,
    InfoNCE,
    Objective,
    P2OTPseudoLabels,
    StepOutputs,
    WarmupOnly,
    apply_term_settings,
    build_objectives,
)
from dcl_cluster.presets import PRESETS, preset

SMALL = dict(backbone_width=4, projection_hidden_dim=32, projection_dim=16, cluster_hidden_dim=16)


class Uniformity(Objective):
    """A user's term defined outside the package: Wang & Isola's uniformity of the projections."""

    name = "uniformity"

    def __init__(self, weight: float = 1.0, t: float = 2.0):
        super().__init__(weight)
        self.t = t

    def check(self):
        super().check()
        if not self.t > 0:
            raise ValueError(f"t must be > 0, got {self.t}")

    def forward(self, step):
        z = torch.nn.functional.normalize(step.z_a.float(), dim=1)
        return torch.pdist(z).pow(2).mul(-self.t).exp().mean().log()


def trainer(tmp_path, **kwargs):
    defaults = dict(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    return pl.Trainer(**{**defaults, **kwargs})


def test_a_users_term_trains_logs_and_reloads_from_python(tmp_path):
    module = DebiasedClusterModule(objectives=[InfoNCE(), Uniformity(weight=0.5, t=3.0)], **SMALL)
    t = trainer(tmp_path, enable_checkpointing=False)
    t.fit(module, datamodule=ToyDataModule())
    assert {"train/contrastive", "train/uniformity"} <= set(t.callback_metrics)
    step = module.shared_step(next(iter(ToyDataModule().train_dataloader()))[0])
    terms = module.loss_terms(step)
    torch.testing.assert_close(terms["uniformity"][1], Uniformity(t=3.0)(step))
    assert terms["uniformity"][0] == 0.5
    t.save_checkpoint(tmp_path / "m.ckpt")
    loaded = DebiasedClusterModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert [type(term) for term in loaded.objectives] == [InfoNCE, Uniformity]
    assert loaded.objectives[1].t == 3.0 and loaded.objectives[1].weight == 0.5


def test_a_users_term_by_class_path_in_a_yaml(tmp_path):
    from dcl_cluster.cli import main

    config = tmp_path / "method.yaml"
    config.write_text(yaml.safe_dump({"model": {"objectives": [
        {"class_path": "dcl_cluster.objectives.InfoNCE"},
        {"class_path": f"{__name__}.Uniformity", "init_args": {"weight": 0.2, "t": 4.0}}]}}))
    root = tmp_path / "runs"
    main(["fit", "--config", str(config), "--data.dataset", "digits", "--data.batch_size", "64",
          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0",
          "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--model.backbone_width", "4",
          "--evaluator.every_n_epochs", "5", "--report", "false"])
    (ckpt,) = root.rglob("last.ckpt")
    loaded = DebiasedClusterModule.load_from_checkpoint(ckpt)
    assert isinstance(loaded.objectives[1], Uniformity) and loaded.objectives[1].t == 4.0


def test_one_setting_of_one_term_from_the_command_line(tmp_path, capsys):
    from dcl_cluster.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--config", "examples/configs/digits_lt.yaml",
              "--model.term_settings", "{contrastive.tau_plus: 0.05, anchor.weight: 0.5}", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    module = DebiasedClusterModule(objectives=printed["model"]["objectives"],
                                   term_settings=printed["model"]["term_settings"])
    assert module.objectives[0].tau_plus == 0.05 and module.objectives[2].weight == 0.5
    assert module.hparams.objectives[0]["init_args"]["tau_plus"] == 0.05  # what a checkpoint stores


@pytest.mark.parametrize("name", sorted(p for p in PRESETS if not p.startswith("scan")))  # scan: its own file
def test_every_preset_reloads_from_its_checkpoint_alone(name, tmp_path):
    pl.seed_everything(0)
    module = DebiasedClusterModule.from_preset(name, warmup_epochs=1, **SMALL)
    t = trainer(tmp_path, enable_checkpointing=False, limit_val_batches=0)
    t.fit(module, datamodule=ToyDataModule())
    t.save_checkpoint(tmp_path / "m.ckpt")
    loaded = DebiasedClusterModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert [t.config() for t in loaded.objectives] == [t.config() for t in preset(name)["objectives"]]
    for (key, a), b in zip(module.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=key)


def test_terms_edited_after_construction_are_saved_as_edited(tmp_path):
    module = DebiasedClusterModule.from_preset("dcl", **SMALL)
    module.objectives[0].tau_plus = 0.2
    t = trainer(tmp_path, max_epochs=1, enable_checkpointing=False, limit_val_batches=0)
    t.fit(module, datamodule=ToyDataModule())
    t.save_checkpoint(tmp_path / "m.ckpt")
    assert DebiasedClusterModule.load_from_checkpoint(tmp_path / "m.ckpt").objectives[0].tau_plus == 0.2


def test_configs_round_trip_and_replace():
    for name in PRESETS:
        terms = preset(name)["objectives"]
        rebuilt = build_objectives([t.config() for t in terms])
        assert [t.config() for t in rebuilt] == [t.config() for t in terms]
    term = DebiasedContrastive(tau_plus=0.1).replace(temperature=0.2)
    assert (term.temperature, term.tau_plus) == (0.2, 0.1)
    assert apply_term_settings([InfoNCE(), Uniformity()], {"t": 5.0})[1].t == 5.0


class TestTermErrors:
    def test_settings_are_checked_at_construction(self):
        with pytest.raises(ValueError, match="weight must be a finite number >= 0, got -1"):
            InfoNCE(weight=-1)
        with pytest.raises(ValueError, match="t must be > 0, got 0"):
            Uniformity(t=0)

    @pytest.mark.parametrize("setting, value, message", [
        ("rho_0", 0.0, r"rho_0 must be in \(0, 1\], got 0.0"),
        ("rho_0", 1.5, r"rho_0 must be in \(0, 1\], got 1.5"),
        ("epsilon", 0.0, "epsilon must be a finite number > 0, got 0.0"),
        ("lam", -1.0, r"lam must be a number > 0 \(or inf\), got -1.0"),
        ("bank_batches", -1, "bank_batches must be an integer >= 0, got -1"),
    ])
    def test_p2ot_bad_settings(self, setting, value, message):
        with pytest.raises(ValueError, match=message):
            P2OTPseudoLabels(**{setting: value})

    def test_p2ot_bank_must_hold_k_rows(self):
        term = P2OTPseudoLabels(bank_batches=1)
        term.build(20)
        logits = {"a": torch.randn(8, 20), "b": torch.randn(8, 20)}
        step = StepOutputs(torch.randn(8, 4), torch.randn(8, 4), logits=logits)
        with pytest.raises(ValueError, match=r"a bank of 8 rows \(1 batches of 8\) over K=20 clusters"):
            term(step)

    def test_p2ot_needs_a_softmax_kind_of_head(self):
        with pytest.raises(ValueError, match=r"cluster_head='student_t' does not suit the objective terms: "
                                             r"P2OTPseudoLabels \(cosine/softmax\)"):
            DebiasedClusterModule(objectives=[InfoNCE(), P2OTPseudoLabels()], cluster_head="student_t")

    def test_unknown_class_path_and_duplicate_names(self):
        with pytest.raises(ValueError, match="cannot find objective 'dcl_cluster.objectives.Nope'"):
            build_objectives([{"class_path": "dcl_cluster.objectives.Nope"}])
        with pytest.raises(ValueError, match="torch.nn.ReLU is not a subclass of dcl_cluster.objectives.Objective"):
            build_objectives([{"class_path": "torch.nn.ReLU"}])
        with pytest.raises(ValueError, match="two objective terms share the name 'contrastive'"):
            build_objectives([InfoNCE(), DebiasedContrastive()])
        with pytest.raises(ValueError, match="objectives must be a non-empty list"):
            build_objectives([])


def p2ot_step(n=12, k=4, progress=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    la, lb = 3 * torch.randn(n, k, generator=g), 3 * torch.randn(n, k, generator=g)
    return StepOutputs(torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g),
                       logits={"a": la, "b": lb}, progress=progress)


def test_p2ot_term_is_the_cross_view_loss_over_batch_and_bank():
    term = P2OTPseudoLabels(rho_0=0.2, bank_batches=2)
    term.build(4)
    first, second = p2ot_step(seed=0), p2ot_step(seed=1, progress=0.6)
    term(first)
    bank = first.logits["a"].clone()  # the first views of the last batch
    torch.testing.assert_close(term.bank, bank)
    got = term(second)
    rows = torch.cat([second.logits["a"], second.logits["b"], bank])
    targets = partial_ot_targets(rows, p2ot_rho(0.6, 0.2), 0.1, 1.0)
    expected = p2ot_loss(second.logits["a"], second.logits["b"], targets[:12], targets[12:24])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert term.bank.shape == (24, 4)  # two batches kept
    term(p2ot_step(seed=2))
    assert term.bank.shape == (24, 4)  # and no more


def test_p2ot_term_gradients_reach_both_views():
    step = p2ot_step()
    step.logits = {k: v.requires_grad_() for k, v in step.logits.items()}
    term = P2OTPseudoLabels(bank_batches=0)
    term.build(4)
    term(step).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in step.logits.values())


def test_warmup_only_runs_its_term_before_the_clustering_phase():
    module = DebiasedClusterModule.from_preset("p2ot_alone", in_channels=1, input_size=8, num_clusters=4, **SMALL)
    dm = ToyDataModule()
    views = next(iter(dm.train_dataloader()))[0]
    assert set(module.loss_terms(module.shared_step(views))) == {"contrastive"}
    module.init_centroids(dm.train_eval_dataloader())
    assert set(module.loss_terms(module.shared_step(views))) == {"pseudo_labels"}
    assert isinstance(module.objectives[0], WarmupOnly) and module.cluster_head.kind == "cosine"


def test_p2ot_resume_reproduces_the_uninterrupted_run(tmp_path):
    class InterruptAfter(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch + 1 == 2:
                trainer.should_stop = True

    def run(root, ckpt_path=None, callbacks=(), seed=0):
        pl.seed_everything(seed)
        module = DebiasedClusterModule.from_preset("p2ot", warmup_epochs=1, lr=1e-2, bank_batches=2, **SMALL)
        t = trainer(root, max_epochs=3, enable_checkpointing=True, callbacks=list(callbacks), limit_val_batches=0)
        t.fit(module, datamodule=ToyDataModule(shuffle=True), ckpt_path=ckpt_path)
        return module, t

    full, _ = run(tmp_path / "full")
    _, first = run(tmp_path / "part", callbacks=[InterruptAfter()])
    assert first.lightning_module.objectives[1].bank.shape[0] > 0  # the bank is in the checkpoint
    resumed, _ = run(tmp_path / "part", ckpt_path=first.checkpoint_callback.best_model_path, seed=5)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=f"{name} differs after resume")


def test_from_preset_on_a_subclass_with_kwargs_passes_the_module_arguments_on():
    class WithExtra(DebiasedClusterModule):
        def __init__(self, extra: float = 0.1, **kwargs):
            super().__init__(**kwargs)

    module = WithExtra.from_preset("dcl", extra=0.3, warmup_epochs=2, tau_plus=0.05)
    assert module.hparams.extra == 0.3 and module.hparams.warmup_epochs == 2
    assert module.objectives[0].tau_plus == 0.05


def test_a_step_where_no_term_runs_still_trains(tmp_path):
    # WarmupOnly alone: after the warm-up nothing runs; the step's loss is a zero with a graph
    from dcl_cluster.objectives import DECClustering

    module = DebiasedClusterModule(objectives=[WarmupOnly(InfoNCE()), DECClustering(inputs="views", weight=0.0)],
                                   warmup_epochs=1, **SMALL)
    t = trainer(tmp_path, max_epochs=2, enable_checkpointing=False, limit_val_batches=0)
    t.fit(module, datamodule=ToyDataModule(clean_view=False))
    assert t.current_epoch == 2


def test_auto_k_with_a_term_that_needs_k_in_the_warmup_is_refused():
    with pytest.raises(ValueError, match=r"num_clusters='auto' knows K only after the warm-up, but "
                                         r"DebiasedContrastive needs it from the first step"):
        DebiasedClusterModule.from_preset("dcl", tau_plus="uniform", num_clusters="auto", warmup_epochs=1)


def test_dict_batches_take_a_and_b_by_name():
    module = DebiasedClusterModule.from_preset("simclr", in_channels=1, input_size=8, **SMALL)
    a, b, clean = (torch.randn(4, 1, 8, 8) for _ in range(3))
    names, tensors = module._named_views({"clean": clean, "a": a, "b": b})
    assert names == ["a", "b", "clean"] and tensors[0] is a and tensors[2] is clean


def test_a_subclass_keeps_term_configs_in_its_hyperparameters():
    class WithExtra(DebiasedClusterModule):
        def __init__(self, extra: float = 0.1, **kwargs):
            super().__init__(**kwargs)

    module = WithExtra(objectives=[DebiasedContrastive()], term_settings={"tau_plus": 0.2})
    assert module.hparams.objectives[0]["init_args"]["tau_plus"] == 0.2 and module.hparams.term_settings is None


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"scan", "scan_prior"}))
def test_presets_other_than_scan_forward_the_views_of_the_terms_that_run_in_each_phase(name):
    module = DebiasedClusterModule.from_preset(name, in_channels=1, input_size=8, num_clusters=4, **SMALL)
    assert module._step_plan(True)[1] == {"a", "b", *module.extra_views}  # clustering: every view asked for
    warmup = {"a", "b"}.union(*(t.needs().views for t in module.objectives if not t.needs().clustering))
    assert module._step_plan(False)[1] == warmup  # warm-up: a clustering-only term's views are not forwarded


def test_the_warmup_does_not_forward_the_clean_view_only_a_clustering_term_reads():
    module = DebiasedClusterModule.from_preset("dcl_cluster", in_channels=1, input_size=8, num_clusters=4, **SMALL)
    assert module.extra_views == ["clean"]  # served: DEC and the anchor loss read it once clustering starts
    batch = next(iter(ToyDataModule().train_dataloader()))[0]
    assert len(batch) == 3
    step = module.shared_step(batch)
    assert step.views == ("a", "b") and step.z_b is not None and step.h_clean is None
    assert len(step.h_a) == len(batch[0])


def test_needs_are_read_once_per_epoch_and_phase_not_per_step(tmp_path):
    calls = []

    class CountingNeeds(InfoNCE):
        def needs(self):
            calls.append(1)
            return super().needs()

    class AtBatchStart(pl.Callback):
        def __init__(self):
            self.counts = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.counts.append((trainer.current_epoch, len(calls)))

    module = DebiasedClusterModule(objectives=[CountingNeeds()], **SMALL)
    seen = AtBatchStart()
    t = trainer(tmp_path, max_epochs=2, limit_train_batches=4, limit_val_batches=0, enable_checkpointing=False,
                callbacks=[seen])
    t.fit(module, datamodule=ToyDataModule())
    first, second = ([c for e, c in seen.counts if e == epoch] for epoch in (0, 1))
    assert len(first) == len(second) == 4
    assert first[1] == first[2] == first[3] and second[1] == second[2] == second[3]  # no call within an epoch
    # one read per epoch, at its first step (needs() for the phase, and once more in the default reads())
    assert first[1] - first[0] == second[1] - second[0] == 2 and second[0] == first[3]
    assert len(calls) == second[3]
