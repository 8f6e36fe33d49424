"""The frozen-feature lab (benchmarks/frozen_lab.py): its size statistics by hand, its merges,
and its one encoding shared by every imbalance factor through the package's feature cache."""

import math

import numpy as np
import pytest
import torch

import benchmarks.frozen_lab as lab


def test_size_stats_by_hand():
    # clusters 0, 1, 2 hold 6, 3, 1 rows; classes hold 5, 4, 1 images
    pred = np.array([0] * 6 + [1] * 3 + [2])
    s = lab.size_stats(pred, 3, [1, 5, 4])
    assert s["cluster_sizes"] == [6, 3, 1] and s["sorted_sizes"] == [6, 3, 1]
    assert s["largest_smallest"] == 6.0 and s["empty_clusters"] == 0
    expected = 0.6 * math.log(0.6 / 0.5) + 0.3 * math.log(0.3 / 0.4) + 0.1 * math.log(0.1 / 0.1)
    assert s["size_kl"] == pytest.approx(expected, abs=1e-12)
    empty = lab.size_stats(np.array([0, 0, 1]), 3, [1, 1, 1])
    assert empty["largest_smallest"] is None and empty["empty_clusters"] == 1 and empty["sorted_sizes"] == [2, 1, 0]
    # an empty cluster adds nothing to the KL: (2/3) log(2) + (1/3) log(1)
    assert empty["size_kl"] == pytest.approx(2 / 3 * math.log(2), abs=1e-12)


def test_merges_join_the_centres_that_belong_together():
    # two tight groups of three centres and one of two, in directions 0, 1 and 2
    base = np.eye(3)
    centers = np.stack([base[0] + 0.01 * i * base[1] for i in range(3)]
                       + [base[1] + 0.01 * i * base[2] for i in range(3)]
                       + [base[2] + 0.01 * i * base[0] for i in range(2)])
    for merge in (lab.ward_merge(centers, np.array([50, 40, 30, 5, 5, 5, 1, 1]), 3), lab.average_merge(centers, 3)):
        assert len(set(merge[:3])) == len(set(merge[3:6])) == len(set(merge[6:])) == 1
        assert len({merge[0], merge[3], merge[6]}) == 3


def _tiny_npz(tmp_path):
    g = np.random.default_rng(0)
    means = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])

    def images(labels):
        return np.clip(means[labels][:, None, None, :] + g.normal(0, 30, (len(labels), 16, 16, 3)), 0, 255
                       ).astype(np.uint8)

    y_train, y_test = np.repeat(np.arange(3), 40), np.repeat(np.arange(3), 6)
    np.savez(tmp_path / "tiny.npz", x_train=images(y_train), y_train=y_train, x_test=images(y_test), y_test=y_test)
    return str(tmp_path)


def test_one_encoding_serves_every_imbalance_factor_and_the_heads_read_it(tmp_path, monkeypatch):
    from dcl_cluster.data.feature_cache import weights_fingerprint
    from dcl_cluster.nn import TimmBackbone

    data_dir, folder = _tiny_npz(tmp_path), tmp_path / "cache"
    monkeypatch.setattr(lab, "BATCH", 8)
    paths = lab.build_features(data_dir, folder, factors=(10, 20))
    assert set(paths) == {10.0, 20.0} and all(p.exists() for p in paths.values())
    key = weights_fingerprint(lab.encoder())
    top, sub = lab.datamodule(10, data_dir, folder=folder), lab.datamodule(20, data_dir, folder=folder)
    top.setup("fit")
    sub.setup("fit")
    assert sub.train_class_counts == [40, 8, 2] and paths[20.0] == sub.feature_cache_file(key, lab.PRECISION)
    big, small = (torch.load(paths[f], weights_only=True) for f in (10.0, 20.0))
    rows = np.searchsorted(top.train_indices, sub.train_indices)
    assert torch.equal(small["clean"], big["clean"][rows]) and torch.equal(small["views"], big["views"][rows])
    assert torch.equal(small["test"], big["test"])
    # the heads train on the derived file: the encoder never sees an image again
    monkeypatch.setattr(TimmBackbone, "forward", lambda self, x: (_ for _ in ()).throw(AssertionError("encoded")))
    monkeypatch.setattr(lab, "MODULE_EPOCHS", 1)
    data = lab.LabData(20.0, key, data_dir, folder)
    assert data.train.shape == (50, 1280) and data.y_train.tolist() == [0] * 40 + [1] * 8 + [2] * 2
    train, test = lab.methods()["dec"](data, 0)
    assert train.shape == (50,) and test.shape == (18,)
    km_train, _ = lab.kmeans_method(data, 0)
    scores = lab.split_scores(data.y_train, km_train, 3, data.train_counts, data.train_counts)
    assert scores["nmi"] > 0.9  # three colours: ImageNet features tell them apart
