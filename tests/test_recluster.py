"""``dcl-cluster recluster``: another K from the features a predict saved, without another fit
and without Lightning; the trained head when it has that K, else k-means; ``auto`` with its
scores per K, stopping when the features cannot tell; one paragraph for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from dcl_cluster.cli import clear_previous_predictions
from dcl_cluster.console import main as console
from dcl_cluster.recluster import FEATURES_FILE, load_predict_features, recluster_folder, save_predict_features

SIZES = (60, 25, 10)  # a long tail of three well-separated groups


def blobs(sizes=SIZES, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(len(sizes), d) * 12.0
    x = np.concatenate([c + rng.normal(size=(n, d)) for c, n in zip(centres, sizes, strict=True)])
    y = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(len(x))
    return torch.tensor(x[order], dtype=torch.float32), y[order]


@pytest.fixture
def predicted(tmp_path) -> tuple[Path, np.ndarray, list[str]]:
    """A predict folder as predict leaves it: photos, and features.pt with a head of K=4."""
    x, y = blobs()
    photos = tmp_path / "photos"
    photos.mkdir()
    paths = []
    for i, label in enumerate(y):
        path = photos / f"img_{i:03d}.png"
        Image.fromarray(np.full((8, 8, 3), 80 * label, dtype=np.uint8)).save(path)
        paths.append(str(path))
    run = tmp_path / "run"
    run.mkdir()
    head = torch.arange(len(y)) % 4  # a head of K=4 whose clusters are nothing like k-means'
    save_predict_features(run, x, paths=paths, head_clusters=head, head_confidence=torch.full((len(y),), 0.5),
                          head_k=4, summary={"data": "images: photos"})
    return run, y, paths


def rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path)))


def test_another_k_is_k_means_on_the_saved_features_and_says_the_head_is_not_used(predicted, capsys):
    run, y, paths = predicted
    console(["recluster", "--predictions", str(run), "--num_clusters", "3"])
    out = capsys.readouterr().out
    assert "k-means (K = 3" in out and "the trained head has K = 4 and is not used at K = 3" in out
    table = rows(run / "recluster_k003" / "predictions.csv")
    assert [r["path"] for r in table] == paths
    clusters = [int(r["cluster"]) for r in table]
    assert adjusted_rand_score(y, clusters) == 1.0  # the three groups, the tail of 10 included
    assert all(0 < float(r["confidence"]) <= 1 for r in table)
    page = (run / "recluster_k003" / "report.html").read_text()
    assert page.count('<section class="cluster"') == 3 and "is not used at K = 3" in page
    assert len(list((run / "recluster_k003" / "clusters").glob("cluster_0*.png"))) == 3


def test_the_head_k_takes_the_trained_heads_clusters_as_predict_wrote_them(predicted, capsys):
    run, y, _ = predicted
    console(["recluster", "--predictions", str(run), "--num_clusters", "4"])
    assert "the trained cluster head (K = 4)" in capsys.readouterr().out
    table = rows(run / "recluster_k004" / "predictions.csv")
    assert [int(r["cluster"]) for r in table] == [i % 4 for i in range(len(y))]


def test_a_second_recluster_of_one_k_replaces_the_first(predicted):
    run, _, _ = predicted
    recluster_folder(run, 3)
    stale = run / "recluster_k003" / "clusters" / "cluster_099.png"
    stale.write_bytes(b"old")
    recluster_folder(run, 3, seed=1)
    assert not stale.exists()


def test_auto_finds_the_three_groups_and_draws_the_scores(predicted):
    run, _, _ = predicted
    result = recluster_folder(run, "auto", max_clusters=8)
    assert result["num_clusters"] == 3 and result["folder"].name == "recluster_k003"
    scores = json.loads((run / "recluster_k_scores.json").read_text())
    assert scores["chosen"] == 3 and scores["structured"] and scores["k"] == list(range(2, 9))
    assert (run / "recluster_k_scores.png").stat().st_size > 1000
    assert "estimated K=3" in (result["folder"] / "report.html").read_text()


def test_auto_on_features_without_structure_stops_in_one_paragraph(tmp_path, capsys):
    noise = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    save_predict_features(tmp_path, noise)
    with pytest.raises(SystemExit) as stop:
        console(["recluster", "--predictions", str(tmp_path), "--num_clusters", "auto", "--max_clusters", "6"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("error: recluster --num_clusters auto: the features show no clear")
    assert "K=2 0." in err[0] and "--num_clusters N" in err[0]
    assert not list(tmp_path.glob("recluster_k0*"))  # no results of a guessed K


@pytest.mark.parametrize(("k", "message"), [
    ("1", r"--num_clusters must be an integer in \[2, 95\] \(the saved images\) or auto, got 1"),
    ("96", r"--num_clusters must be an integer in \[2, 95\] \(the saved images\) or auto, got 96"),
    ("many", "--num_clusters must be an integer >= 2 or auto, got 'many'"),
])
def test_a_bad_k_is_one_paragraph_and_writes_nothing(predicted, capsys, k, message):
    run, _, _ = predicted
    with pytest.raises(SystemExit) as stop:
        console(["recluster", "--predictions", str(run), "--num_clusters", k])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert pytest.importorskip("re").search(message, err) and "Traceback" not in err
    assert not list(run.glob("recluster_k*"))


def test_a_folder_without_saved_features_says_to_run_predict(tmp_path, capsys):
    with pytest.raises(SystemExit):
        console(["recluster", "--predictions", str(tmp_path), "--num_clusters", "3"])
    err = capsys.readouterr().err
    assert f"{tmp_path} holds no {FEATURES_FILE}" in err and "dcl-cluster predict" in err


def test_features_are_saved_as_float16_and_images_without_files_are_kept_for_the_pictures(tmp_path):
    x, y = blobs()
    images = np.zeros((len(y), 3, 8, 8), dtype=np.uint8)
    save_predict_features(tmp_path, x, images=images, labels=torch.as_tensor(y))
    saved = load_predict_features(tmp_path)
    assert saved["embeddings"].dtype == torch.float16 and torch.allclose(saved["embeddings"].float(), x, atol=0.02)
    assert saved["images"].shape == images.shape and saved["paths"] is None
    assert not list(tmp_path.glob("*.partial"))
    result = recluster_folder(tmp_path, 3)
    table = rows(result["folder"] / "predictions.csv")
    assert set(table[0]) == {"index", "cluster", "confidence", "label"}


def test_a_new_predict_clears_the_saved_features_and_the_reclusterings(predicted):
    run, _, _ = predicted
    recluster_folder(run, 3)
    (run / "notes.txt").write_text("mine")
    removed = {p.name for p in clear_previous_predictions(run)}
    assert {FEATURES_FILE, "recluster_k003"} <= removed
    assert (run / "notes.txt").exists() and not (run / FEATURES_FILE).exists()


def test_recluster_does_not_import_lightning(predicted):
    # the newcomer's own k-means script starts in about 2 s; Lightning alone costs 5-7 s
    run, _, _ = predicted
    code = ("import sys; from dcl_cluster.console import main; "
            f"main(['recluster', '--predictions', {str(run)!r}, '--num_clusters', '2']); "
            "print('lightning imported:', 'lightning' in sys.modules or 'lightning.pytorch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "lightning imported: False" in done.stdout


def test_a_new_predict_never_removes_files_of_yours_that_share_a_name(tmp_path):
    # a folder of the user's: a clusters/ of their own photos, a features.pt and a recluster_k* folder
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "my_hand_sorted_photo.jpg").write_bytes(b"mine")
    (tmp_path / "features.pt").write_bytes(b"mine")
    (tmp_path / "recluster_kmeans_notes").mkdir()
    assert clear_previous_predictions(tmp_path) == []
    assert (tmp_path / "clusters" / "my_hand_sorted_photo.jpg").is_file() and (tmp_path / "features.pt").is_file()
    assert (tmp_path / "recluster_kmeans_notes").is_dir()
    # predict's own files beside them go, theirs stay
    from dcl_cluster.callbacks import write_cluster_results

    write_cluster_results(tmp_path, torch.tensor([0, 1, 1]), torch.tensor([0.9, 0.6, 0.8]))
    removed = {p.name for p in clear_previous_predictions(tmp_path)}
    assert removed == {"predictions.csv", "report.html", "clusters"}
    assert sorted(p.name for p in (tmp_path / "clusters").iterdir()) == ["my_hand_sorted_photo.jpg"]
    assert (tmp_path / "features.pt").read_bytes() == b"mine"


def test_recluster_refuses_to_replace_a_folder_it_did_not_write(predicted):
    run, _, _ = predicted
    (run / "recluster_k003").mkdir()
    (run / "recluster_k003" / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="was not written by recluster"):
        recluster_folder(run, 3)
    assert (run / "recluster_k003" / "mine.txt").is_file()


def test_saved_features_keep_absolute_paths_and_values_beyond_float16(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = torch.tensor([[1e5, 0.0], [0.0, 1.0], [2.0, 2.0]])
    save_predict_features(tmp_path, x, paths=["a.png", "b.png", "c.png"])
    saved = load_predict_features(tmp_path)
    assert saved["paths"] == [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    assert saved["embeddings"].dtype == torch.float32 and saved["embeddings"][0, 0] == 1e5


def test_images_of_the_datamodules_stores_are_saved_for_the_pictures(tmp_path):
    from dcl_cluster.data.datasets import image_store

    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)  # (N, H, W, C)
    store = image_store(pixels)
    save_predict_features(tmp_path, torch.zeros(5, 2), images=store)
    saved = load_predict_features(tmp_path)
    assert saved["images"].shape == (5, 3, 8, 8) and torch.equal(saved["images"][2], store[2])


def test_write_cluster_results_checks_lengths_before_writing(tmp_path):
    from dcl_cluster.callbacks import write_cluster_results

    with pytest.raises(ValueError, match="paths has 2 entries for 3 clusters"):
        write_cluster_results(tmp_path, torch.tensor([0, 1, 1]), torch.ones(3), paths=["a", "b"])
    assert not list(tmp_path.iterdir())
