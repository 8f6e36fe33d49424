"""Issue 16: a folder of unlabelled images, an unknown K, results a person can look at.

The ``images`` source, label-free diagnostics in the evaluator and the report,
``num_clusters="auto"`` (the estimate, the head joining the optimizer, checkpoints), and the
command line from ``fit`` to ``predict``'s CSV and pictures.
"""

import csv
import importlib.util
import json
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from dcl_cluster import ClusteringEvaluator, DebiasedClusterModule, LongTailDataModule
from dcl_cluster.cli import main
from dcl_cluster.cluster.diagnostics import label_free_diagnostics
from dcl_cluster.data import load_source
from dcl_cluster.data.folders import IMAGE_EXTENSIONS

REPO = Path(__file__).resolve().parents[1]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_images(folder: Path, names: list[str], size: int = 10) -> None:
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), 20 * i % 255, np.uint8)).save(path)


# ---------------------------------------------------------------- the images source

def test_images_source_reads_every_depth_and_counts_skipped_files_in_one_warning(tmp_path):
    write_images(tmp_path, ["a.png", "x/b.JPG", "x/y/z/c.png", "d.webp", "e.bmp", "f.png"])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "x" / "meta.json").write_text("{}")
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\).*not images") as record:
        data = load_source("images", tmp_path, test_fraction=0.3)
    assert len([w for w in record if "not images" in str(w.message)]) == 1
    found = sorted(data.train_images + data.test_images)
    assert len(found) == 6 and any(p.endswith("z/c.png") for p in found)
    assert len(data.test_images) == 2  # round(6 * 0.3)
    assert (data.train_labels == -1).all() and (data.test_labels == -1).all() and data.class_names == []


def test_images_datamodule_has_no_classes_and_predicts_the_whole_folder(tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(10)])
    dm = LongTailDataModule("images", str(tmp_path), batch_size=4)  # imbalance_factor 100 cuts nothing
    dm.setup("fit")
    assert not dm.labelled and dm.num_classes == 0 and dm.train_class_counts == []
    assert len(dm.train_dataset) + len(dm.test_dataset) == 10
    assert dm.predict_paths == sorted(str(tmp_path / f"{i}.png") for i in range(10))
    xs, ys = zip(*dm.predict_dataloader(), strict=True)
    assert sum(len(x) for x in xs) == 10 and all((y == -1).all() for y in ys)


def test_a_folder_without_images_names_the_extensions_looked_for(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"no image files.*\.jpg .*\.webp"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_source("images", tmp_path)
    assert all(ext in IMAGE_EXTENSIONS for ext in (".png", ".jpeg", ".tif"))


def test_a_folder_of_one_image_is_an_error(tmp_path):
    write_images(tmp_path, ["only.png"])
    with pytest.raises(ValueError, match=r"holds 1 image\(s\); clustering needs at least 3"):
        load_source("images", tmp_path)


def test_unreadable_images_follow_skip_corrupt(tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(5)])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file.*broken.png"):
        data = load_source("images", tmp_path, skip_corrupt=True)
    assert len(data.train_images) + len(data.test_images) == 5
    listed = load_source("images", tmp_path)  # without skip_corrupt the file stays and fails when read
    assert len(listed.train_images) + len(listed.test_images) == 6


# ---------------------------------------------------------------- label-free diagnostics

def test_label_free_diagnostics_against_a_hand_computation():
    x = torch.tensor([[0.0], [1.0], [10.0], [12.0], [13.0]])
    preds = torch.tensor([0, 0, 1, 1, 1])
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.0, 1.0]])
    d = label_free_diagnostics(x, preds, probs)
    assert d["cluster_sizes"] == [3, 2] and d["clusters_used"] == 2
    assert d["largest_share"] == pytest.approx(0.6) and d["smallest_share"] == pytest.approx(0.4)
    assert d["mean_confidence"] == pytest.approx((0.9 + 0.7 + 0.8 + 0.6 + 1.0) / 5)
    # silhouette by hand: a = mean distance to own cluster, b = to the other
    pts = x[:, 0].tolist()
    groups = [[0, 1], [2, 3, 4]]
    s = []
    for g, other in ((groups[0], groups[1]), (groups[1], groups[0])):
        for i in g:
            a = sum(abs(pts[i] - pts[j]) for j in g if j != i) / (len(g) - 1)
            b = sum(abs(pts[i] - pts[j]) for j in other) / len(other)
            s.append((b - a) / max(a, b))
    assert d["silhouette"] == pytest.approx(sum(s) / len(s), rel=1e-5)


def test_evaluator_logs_diagnostics_without_labels_and_scores_with_them():
    g = torch.Generator().manual_seed(0)
    emb = torch.cat([torch.randn(30, 4, generator=g), torch.randn(10, 4, generator=g) + 8])
    probs = torch.softmax(torch.randn(40, 3, generator=g), dim=1)
    evaluator = ClusteringEvaluator()
    metrics, outputs = evaluator.evaluate({"embeddings": emb, "cluster_probs": probs,
                                           "labels": -torch.ones(40, dtype=torch.long)})
    assert set(metrics) == {"val/clusters_used", "val/largest_share", "val/smallest_share", "val/silhouette",
                            "val/mean_confidence"}
    assert outputs["preds"].shape == (40,)
    kmeans_only, _ = ClusteringEvaluator(num_clusters=2).evaluate(
        {"embeddings": emb, "cluster_probs": None, "labels": -torch.ones(40, dtype=torch.long)})
    assert kmeans_only["val/clusters_used"] == 2 and kmeans_only["val/silhouette"] > 0.5
    nothing, _ = ClusteringEvaluator().evaluate(
        {"embeddings": emb, "cluster_probs": None, "labels": -torch.ones(40, dtype=torch.long)})
    assert nothing == {}  # no labels, no head, no num_clusters: nothing to say
    labelled, _ = ClusteringEvaluator().evaluate(
        {"embeddings": emb, "cluster_probs": probs, "labels": (torch.arange(40) >= 30).long()})
    assert "val/nmi" in labelled and "val/silhouette" not in labelled


# ---------------------------------------------------------------- num_clusters="auto"

@pytest.fixture
def structured(monkeypatch):
    """The estimate as computed, but taken as structured: a few epochs of a tiny CNN give weak
    features (mean silhouette about 0.2 at every K), on which the module rightly stops; these
    tests are about what happens once K is known."""
    import dataclasses

    import dcl_cluster.head_setup as head_setup

    real = head_setup.score_num_clusters
    monkeypatch.setattr(head_setup, "score_num_clusters",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), structured=True))


def auto_module(**kwargs):
    settings = dict(num_clusters="auto", max_clusters=12, warmup_epochs=1, backbone_width=8,
                    lr_warmup_epochs=0, cosine=False)
    return DebiasedClusterModule.from_preset("dcl_cluster", **{**settings, **kwargs})


def quiet_trainer(tmp_path=None, **kwargs):
    settings = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    if tmp_path is not None:
        settings.update(default_root_dir=str(tmp_path))
    return pl.Trainer(**{**settings, **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_clusters=1), "max_clusters must be an integer >= 2, got 1"),
    (dict(max_clusters=2.5), "max_clusters must be an integer >= 2, got 2.5"),
    (dict(warmup_epochs=0), "set warmup_epochs >= 1, got 0"),
    (dict(num_clusters="many"), "num_clusters must be an integer >= 2 or 'auto', got 'many'"),
])
def test_auto_settings_out_of_range_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        auto_module(**kwargs)


def test_max_clusters_above_the_training_images_is_an_error(tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(10)])
    dm = LongTailDataModule("images", str(tmp_path), batch_size=4)
    module = auto_module(max_clusters=50)
    with pytest.raises(ValueError, match=r"max_clusters=50 is above the number of training images \(7\)"):
        quiet_trainer(max_epochs=2).fit(module, dm)


def test_an_unlabelled_folder_without_num_clusters_says_to_set_it_or_auto(tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(10)])
    dm = LongTailDataModule("images", str(tmp_path), batch_size=4)
    module = DebiasedClusterModule.from_preset("dcl_cluster", backbone_width=8, warmup_epochs=1)
    with pytest.raises(ValueError, match="no labels to count classes.*'auto'"):
        quiet_trainer(max_epochs=2).fit(module, dm)


class HeadSnapshot(pl.Callback):
    """The cluster head's parameters at the first clustering step, and whether they are in the optimizer."""

    def __init__(self):
        self.first = None
        self.in_optimizer = False

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.first is None and module.clustering_active:
            self.first = [p.detach().clone() for p in module.cluster_head.parameters()]
            ids = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
            self.in_optimizer = all(id(p) in ids for p in module.cluster_head.parameters())


def test_auto_estimates_k_at_the_end_of_the_warmup_and_the_head_trains(structured):
    torch.manual_seed(0)
    dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=128)
    module = auto_module(lr_warmup_epochs=1, cosine=True)
    assert module.cluster_head is None
    snapshot = HeadSnapshot()
    trainer = quiet_trainer(max_epochs=3, callbacks=[snapshot])
    trainer.fit(module, dm)
    k = module.hparams.num_clusters
    assert isinstance(k, int) and 2 <= k <= 12
    assert module.cluster_head.num_clusters == k and module.cluster_prior.shape == (k,)
    assert trainer.callback_metrics["train/num_clusters"] == k
    assert snapshot.in_optimizer
    after = list(module.cluster_head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(snapshot.first, after, strict=True))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    optimizer = trainer.optimizers[0]
    assert len(optimizer.param_groups) == 2 and len(scheduler.base_lrs) == 2
    # the head's group follows the same schedule as the rest
    assert optimizer.param_groups[1]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


def test_an_auto_checkpoint_reloads_and_resumes_with_the_estimated_head(tmp_path, structured):
    torch.manual_seed(0)
    dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=128)
    module = auto_module()
    trainer = quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=True)
    trainer.fit(module, dm)
    k = module.hparams.num_clusters
    path = tmp_path / "after_estimate.ckpt"
    trainer.save_checkpoint(path)
    reloaded = DebiasedClusterModule.load_from_checkpoint(path)
    assert reloaded.hparams.num_clusters == k and reloaded.cluster_head.num_clusters == k
    assert reloaded.cluster_head.ready
    x = torch.randn(5, 1, 8, 8)
    module.eval(), reloaded.eval()
    assert torch.allclose(module._embed(x)["cluster_probs"], reloaded._embed(x)["cluster_probs"], atol=1e-6)
    # a fresh "auto" module resumes the run: the head of size K is rebuilt before the state loads
    resumed = auto_module()
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(resumed, LongTailDataModule("digits", imbalance_factor=10, batch_size=128), ckpt_path=str(path))
    assert resumed.hparams.num_clusters == k and resumed.cluster_head.num_clusters == k
    assert len(trainer.optimizers[0].param_groups) == 2


def test_auto_on_features_without_structure_stops_with_the_scores_and_never_trains_a_guess(tmp_path):
    # digits through a width-8 CNN after one epoch: mean silhouette about 0.2 at every K
    # (measured 0.19-0.20 at K=2, 0.11-0.14 beyond), the "weak features" case
    from lightning.pytorch.loggers import CSVLogger

    from dcl_cluster.head_setup import NoClusterStructureError

    torch.manual_seed(0)
    module = auto_module()
    trainer = quiet_trainer(max_epochs=2, logger=CSVLogger(str(tmp_path)))
    with pytest.raises(NoClusterStructureError, match=r"no clear cluster structure.*best 0\.\d+.*"
                                                      r"K=2 0\.\d{3}, K=3 .*--model\.num_clusters"):
        trainer.fit(module, LongTailDataModule("digits", imbalance_factor=10, batch_size=128))
    assert module.cluster_head is None and module.hparams.num_clusters == "auto"  # no head of a guessed K
    assert module.k_choice["structured"] is False and module.k_choice["k"] == list(range(2, 13))
    scores = json.loads(next(tmp_path.rglob("k_scores.json")).read_text())
    assert scores["score"] == pytest.approx(module.k_choice["score"]) and max(scores["score"]) < 0.25
    assert next(tmp_path.rglob("k_scores.png")).stat().st_size > 1000


def test_the_command_line_with_auto_stops_in_one_paragraph_when_the_features_cannot_tell(tmp_path, capsys):
    args = ["fit", "--config", str(REPO / "examples" / "configs" / "digits_lt.yaml"), "--model.num_clusters=auto",
            "--model.max_clusters=8", "--model.warmup_epochs=1", "--model.backbone_width=8", "--report=false",
            "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false", "--trainer.max_epochs=2",
            f"--trainer.default_root_dir={tmp_path}"]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" not in err
    paragraph, hint = err.strip().splitlines()[-2:]  # Lightning's own warnings may come before
    assert paragraph.startswith("error: num_clusters='auto' stops: the features show no clear")
    assert "--model.num_clusters" in paragraph and "K=2 0." in paragraph and "k_scores.png" in paragraph
    assert hint == "(DCL_CLUSTER_DEBUG=1 shows the traceback)"


# ---------------------------------------------------------------- the command line, end to end

def test_a_flat_folder_goes_through_fit_auto_and_predict_to_a_csv_and_pictures(tmp_path, structured):
    example = load_example("cluster_folder")
    photos = example.make_shape_folder(tmp_path / "photos", counts=(40, 16, 8))
    runs = tmp_path / "runs"
    main(["fit", "--config", str(example.SCRATCH_CONFIG), f"--data.data_dir={photos}", "--model.num_clusters=auto",
          "--model.max_clusters=8",
          "--trainer.max_epochs=3", "--model.warmup_epochs=2", "--model.backbone_width=8",
          "--data.image_size=16", "--data.batch_size=16", "--data.num_workers=0", "--data.test_fraction=0.2",
          "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
          f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}"])
    run = next(runs.rglob("config.yaml")).parent
    checkpoint = run / "checkpoints" / "last.ckpt"
    k = torch.load(checkpoint, weights_only=True)["hyper_parameters"]["num_clusters"]
    assert isinstance(k, int) and 2 <= k <= 8
    assert (run / "final_metrics.json").is_file()
    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(checkpoint)])
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    assert len(rows) == 64 and set(rows[0]) == {"path", "cluster", "confidence"}  # no labels: no label column
    assert {r["path"] for r in rows} == {str(p) for p in photos.glob("*.png")}
    assert all(0 <= int(r["cluster"]) < k and 0 < float(r["confidence"]) <= 1 for r in rows)
    used = {int(r["cluster"]) for r in rows}
    sheets = sorted(p.name for p in (run / "clusters").glob("cluster_*.png"))
    assert sheets == sorted([f"cluster_{c:03d}.png" for c in used] + ["cluster_sizes.png"])
    page = (run / "report.html").read_text()  # beside predictions.csv, every used cluster on it
    assert all(f'id="c{c}"' in page for c in used) and page.count('<section class="cluster"') == len(used)
    # the features predict saved give another K in seconds, without another fit
    from dcl_cluster.recluster import recluster_folder

    other = 3 if k == 2 else 2  # not the head's K: k-means on the saved features
    again = recluster_folder(run, other)
    assert again["folder"] == run / f"recluster_k{other:03d}" and f"k-means (K = {other}" in again["how"]
    assert recluster_folder(run, k)["how"].startswith(f"the trained cluster head (K = {k})")
    assert len(list(csv.DictReader(open(again["folder"] / "predictions.csv")))) == 64


def test_predict_on_a_labelled_source_writes_the_label_column(tmp_path):
    from dcl_cluster.callbacks import write_cluster_results

    files = write_cluster_results(tmp_path, torch.tensor([0, 1, 1]), torch.tensor([0.9, 0.6, 0.8]),
                                  labels=torch.tensor([2, 0, 0]), images=torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert rows[0] == {"index": "0", "cluster": "0", "confidence": "0.9000", "label": "2"}
    assert {f.name for f in files} == {"predictions.csv", "report.html", "cluster_sizes.png", "cluster_000.png",
                                       "cluster_001.png"}


def test_the_cluster_folder_example_runs_in_its_small_mode(tmp_path):
    result = load_example("cluster_folder").main(["--smoke", "--out", str(tmp_path)])
    assert result["csv"].is_file() and result["report"].is_file() and len(result["pictures"]) >= 3


def test_an_auto_run_resumes_from_the_command_line_after_the_estimate(tmp_path, structured):
    # the checkpoint's hyperparameters (K) override the config's "auto": the head is built at setup,
    # and the optimizer gets the estimated head as its second group, as saved
    base = ["--config", str(REPO / "examples" / "configs" / "digits_lt.yaml"), "--model.num_clusters=auto",
            "--model.max_clusters=12", "--model.warmup_epochs=1", "--model.backbone_width=8", "--report=false",
            "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    main(["fit", *base, "--trainer.max_epochs=2"])
    first = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    k = first["hyper_parameters"]["num_clusters"]
    assert isinstance(k, int) and len(first["optimizer_states"][0]["param_groups"]) == 2
    main(["fit", *base, "--trainer.max_epochs=3", "--ckpt_path=last"])
    resumed = torch.load(max(tmp_path.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime), weights_only=True)
    assert resumed["epoch"] == 2 and resumed["hyper_parameters"]["num_clusters"] == k
    assert resumed["state_dict"]["cluster_head.centroids"].shape[0] == k
