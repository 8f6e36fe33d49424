"""Every source on tiny generated fixtures in its real on-disk layout, read and made long-tailed.

CIFAR and STL-10 fixtures are also read by torchvision's own dataset classes (integrity
check bypassed), so the readers are compared with an independent implementation.
"""

import pickle
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from dcl_cluster.data import LongTailDataModule, UnreadableImageError, load_source

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def _images(rng, n, side, channels=3):
    return rng.integers(0, 256, size=(n, side, side, channels), dtype=np.uint8)


def _labels(rng, per_class, num_classes):
    return rng.permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int64)


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_rows(x):                      # (N, 32, 32, 3) -> (N, 3072), channel-major rows
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("cifar10")
    d = root / "cifar-10-batches-py"
    d.mkdir()
    y_tr, y_te = _labels(rng, 12, 10), _labels(rng, 3, 10)
    x_tr, x_te = _images(rng, len(y_tr), 32), _images(rng, len(y_te), 32)
    for k, part in enumerate(np.array_split(np.arange(len(y_tr)), 5), start=1):
        _dump(d / f"data_batch_{k}", {"batch_label": f"training batch {k} of 5",
                                      "labels": y_tr[part].tolist(),
                                      "data": _cifar_rows(x_tr[part]),
                                      "filenames": [f"{i}.png" for i in part]})
    _dump(d / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": y_te.tolist(),
                             "data": _cifar_rows(x_te), "filenames": []})
    _dump(d / "batches.meta", {"label_names": CIFAR10_NAMES, "num_vis": 3072})
    return root, (x_tr, y_tr, x_te, y_te)


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory):
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("cifar100")
    d = root / "cifar-100-python"
    d.mkdir()
    y_tr, y_te = _labels(rng, 5, 100), _labels(rng, 1, 100)
    x_tr, x_te = _images(rng, len(y_tr), 32), _images(rng, len(y_te), 32)
    for name, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        _dump(d / name, {"data": _cifar_rows(x), "fine_labels": y.tolist(),
                         "coarse_labels": (y // 5).tolist(), "filenames": []})
    _dump(d / "meta", {"fine_label_names": [f"fine{c:02d}" for c in range(100)],
                       "coarse_label_names": [f"coarse{c}" for c in range(20)]})
    return root, (x_tr, y_tr, x_te, y_te)


STL_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


@pytest.fixture(scope="module")
def stl10_dir(tmp_path_factory):
    rng = np.random.default_rng(2)
    root = tmp_path_factory.mktemp("stl10")
    d = root / "stl10_binary"
    d.mkdir()
    y_tr, y_te = _labels(rng, 4, 10), _labels(rng, 1, 10)
    x_tr, x_te, x_un = (_images(rng, n, 96) for n in (len(y_tr), len(y_te), 5))
    for name, x in (("train_X", x_tr), ("test_X", x_te), ("unlabeled_X", x_un)):
        (d / f"{name}.bin").write_bytes(x.transpose(0, 3, 2, 1).tobytes())  # column-major
    for name, y in (("train_y", y_tr), ("test_y", y_te)):
        (d / f"{name}.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # labels 1..10
    (d / "class_names.txt").write_text("\n".join(STL_NAMES) + "\n")
    return root, (x_tr, y_tr, x_te, y_te, x_un)


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory):
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("npz")
    y_tr, y_te = _labels(rng, 10, 4), _labels(rng, 3, 4)
    x_tr, x_te = _images(rng, len(y_tr), 16), _images(rng, len(y_te), 16)
    np.savez(root / "mine.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
             class_names=np.array(["a", "b", "c", "d"]))
    return root, (x_tr, y_tr, x_te, y_te)


def _save(path, rng, size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
    rng = np.random.default_rng(4)
    root = tmp_path_factory.mktemp("folder")
    for split, n in (("train", 8), ("val", 2), ("test", 3)):
        for c in ("cat", "ant", "bee"):               # sorted order: ant, bee, cat
            for i in range(n):
                _save(root / split / c / f"{i}.png", rng)
    (root / "train" / "notes.txt").write_text("not an image, ignored")
    return root


@pytest.fixture(scope="module")
def imagenet_lt_dir(tmp_path_factory):
    """An ImageNet root with split files; train is long-tailed and holds one corrupt JPEG."""
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("imagenet")
    wnids = ["n01440764", "n01443537", "n01484850"]
    lines = {"train": [], "val": [], "test": []}
    for split, counts in (("train", (6, 3, 2)), ("val", (2, 2, 2)), ("test", (2, 2, 2))):
        for label, (wnid, n) in enumerate(zip(wnids, counts, strict=True)):
            for i in range(n):
                rel = f"{split}/{wnid}/{wnid}_{i}.JPEG"
                _save(root / rel, rng, size=(40, 30))
                lines[split].append(f"{rel} {label}")
    bad = root / "train" / wnids[2] / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    lines["train"].append(f"train/{wnids[2]}/broken.JPEG 2")
    for split, ls in lines.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(ls) + "\n")
    return root, wnids, bad


# ------------------------------------------------------------------ readers vs torchvision


def test_cifar10_reader_equals_torchvision_reader(cifar10_dir, monkeypatch):
    root, (x_tr, y_tr, x_te, y_te) = cifar10_dir
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    data = load_source("cifar10", root)
    for train, x, y in ((True, data.train_images, data.train_labels),
                        (False, data.test_images, data.test_labels)):
        tv = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
        assert np.array_equal(x, tv.data) and y.tolist() == tv.targets
        assert data.class_names == tv.classes
    assert np.array_equal(data.train_images, x_tr) and np.array_equal(data.test_labels, y_te)


def test_cifar100_reader_uses_fine_labels_like_torchvision(cifar100_dir, monkeypatch):
    root, (x_tr, y_tr, _, _) = cifar100_dir
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    data = load_source("cifar100", root)
    tv = torchvision.datasets.CIFAR100(str(root), train=True, download=False)
    assert np.array_equal(data.train_images, tv.data) and data.train_labels.tolist() == tv.targets
    assert data.class_names == tv.classes and len(data.class_names) == 100


def test_stl10_reader_equals_torchvision_reader(stl10_dir, monkeypatch):
    root, (x_tr, y_tr, x_te, y_te, x_un) = stl10_dir
    monkeypatch.setattr(torchvision.datasets.STL10, "_check_integrity", lambda self: True)
    data = load_source("stl10", root, include_unlabeled=True)
    tv = torchvision.datasets.STL10(str(root), split="train", download=False)
    assert np.array_equal(data.train_images.transpose(0, 3, 1, 2), tv.data)
    assert np.array_equal(data.train_labels, tv.labels) and data.class_names == tv.classes
    tv_un = torchvision.datasets.STL10(str(root), split="unlabeled", download=False)
    assert len(data.unlabeled_images) == 5
    assert np.array_equal(data.unlabeled_images[3].transpose(2, 0, 1), tv_un.data[3])
    assert np.array_equal(data.train_images, x_tr) and np.array_equal(data.unlabeled_images[0],
                                                                      x_un[0])


def test_npz_reader_returns_the_arrays_and_names(npz_dir):
    root, (x_tr, y_tr, x_te, y_te) = npz_dir
    data = load_source("npz", root)
    assert np.array_equal(data.train_images, x_tr) and np.array_equal(data.test_labels, y_te)
    assert data.class_names == ["a", "b", "c", "d"] and data.native_size == 16
    assert data.num_channels == 3


def test_npz_with_x_y_and_grey_images_gets_a_stratified_split(tmp_path):
    y = np.repeat(np.arange(3), 10)
    np.savez(tmp_path / "grey.npz", x=np.zeros((30, 6, 6), np.uint8), y=y)
    data = load_source("npz", tmp_path / "grey.npz", test_fraction=0.2)
    assert data.num_channels == 1 and data.train_images.shape == (24, 6, 6, 1)
    assert np.bincount(data.test_labels).tolist() == [2, 2, 2]


@pytest.mark.parametrize("arrays, match", [
    ({"x_train": np.zeros((4, 5, 5, 3)), "y_train": np.zeros(4, int),
      "x_test": np.zeros((2, 5, 5, 3)), "y_test": np.zeros(2, int)}, "uint8"),
    ({"images": np.zeros((4, 5, 5, 3), np.uint8)}, "expected x_train"),
    ({"x": np.zeros((4, 5, 5, 7), np.uint8), "y": np.zeros(4, int)}, "C in"),
])
def test_bad_npz_contents_are_named(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        load_source("npz", tmp_path)


def test_image_folder_reads_sorted_classes_and_val_and_test(folder_dir):
    data = load_source("image_folder", folder_dir)
    assert data.class_names == ["ant", "bee", "cat"]
    assert np.bincount(data.train_labels).tolist() == [8, 8, 8]
    assert np.bincount(data.val_labels).tolist() == [2, 2, 2]
    assert np.bincount(data.test_labels).tolist() == [3, 3, 3]
    assert all("/ant/" in p for p, y in zip(data.train_images, data.train_labels, strict=True)
               if y == 0)
    assert data.native_size == 16


def test_image_folder_with_only_train_holds_out_a_stratified_test_split(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("x", "y"):
        for i in range(10):
            _save(tmp_path / "train" / c / f"{i}.png", rng)
    data = load_source("image_folder", tmp_path, test_fraction=0.3)
    assert np.bincount(data.test_labels).tolist() == [3, 3] and data.val_labels is None
    assert not set(data.test_images) & set(data.train_images)


def test_imagenet_lt_split_files_give_paths_labels_and_wnids(imagenet_lt_dir):
    root, wnids, bad = imagenet_lt_dir
    data = load_source("imagenet_lt", root)
    assert data.class_names == wnids and data.long_tailed
    assert np.bincount(data.train_labels).tolist() == [6, 3, 3]       # the corrupt one listed
    assert str(bad) in data.train_images and len(data.val_labels) == 6
    assert data.train_images[0] == str(root / "train" / wnids[0] / f"{wnids[0]}_0.JPEG")


def test_imagenet_lt_malformed_line_names_file_and_line(tmp_path):
    for split in ("train", "val"):
        (tmp_path / f"ImageNet_LT_{split}.txt").write_text("a/b.JPEG 0\na/c.JPEG zero\n")
    with pytest.raises(ValueError, match=r"ImageNet_LT_train.txt, line 2"):
        load_source("imagenet_lt", tmp_path)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("name, layout, downloadable", [
    ("cifar10", "cifar-10-batches-py", True), ("cifar100", "cifar-100-python", True),
    ("stl10", "stl10_binary", True), ("npz", "x_train", False),
    ("image_folder", "train/<class>", False), ("imagenet_lt", "ImageNet_LT_", False)])
def test_missing_files_name_the_layout_and_download_where_it_exists(tmp_path, name, layout,
                                                                    downloadable):
    for where in (tmp_path / "absent", tmp_path):
        with pytest.raises(FileNotFoundError) as err:
            load_source(name, where)
        assert layout in str(err.value) and str(where) in str(err.value)
        assert ("download=True" in str(err.value)) == downloadable


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'") as err:
        load_source("cifar11")
    for name in ("digits", "npz", "cifar10", "cifar100", "stl10", "imagenet_lt", "image_folder"):
        assert f"'{name}'" in str(err.value)
    with pytest.raises(ValueError, match="image_folder"):
        LongTailDataModule("mnist")


def test_unreadable_image_error_names_the_file(imagenet_lt_dir):
    root, _, bad = imagenet_lt_dir
    dm = LongTailDataModule("imagenet_lt", str(root), batch_size=4, image_size=16)
    dm.setup("fit")
    with pytest.raises(UnreadableImageError, match=r"broken\.JPEG.*skip_corrupt=True"):
        list(dm.train_eval_dataloader())


def test_skip_corrupt_warns_with_the_list_and_drops_the_file(imagenet_lt_dir):
    root, _, bad = imagenet_lt_dir
    dm = LongTailDataModule("imagenet_lt", str(root), batch_size=4, image_size=16,
                            skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\).*broken\.JPEG"):
        dm.setup("fit")
    assert dm.train_class_counts == [6, 3, 2]
    assert sum(len(y) for _, y, _ in dm.train_eval_dataloader()) == 11


# ------------------------------------------------------------------ the datamodule on each layout


def test_cifar10_layout_made_long_tailed_by_the_rule(cifar10_dir):
    root, (_, y_tr, _, y_te) = cifar10_dir
    dm = LongTailDataModule("cifar10", str(root), imbalance_factor=4, batch_size=8)
    dm.setup("fit")
    # int(12 * 0.25 ** (i / 9)) worked by hand
    assert dm.train_class_counts == [12, 10, 8, 7, 6, 5, 4, 4, 3, 3]
    assert np.bincount(y_tr[dm.train_indices]).tolist() == dm.train_class_counts
    assert dm.class_names == CIFAR10_NAMES and (dm.num_channels, dm.image_size) == (3, 32)
    test_y = torch.cat([y for _, y in dm.test_dataloader()])
    assert np.bincount(test_y.numpy()).tolist() == [3] * 10


def test_cifar100_layout_step_profile(cifar100_dir):
    root, _ = cifar100_dir
    dm = LongTailDataModule("cifar100", str(root), imbalance_factor=5, profile="step",
                            batch_size=8)
    dm.setup("fit")
    assert dm.train_class_counts == [5] * 50 + [1] * 50 and dm.num_classes == 100


def test_stl10_unlabelled_images_join_training_with_label_minus_one(stl10_dir):
    root, _ = stl10_dir
    dm = LongTailDataModule("stl10", str(root), imbalance_factor=4, batch_size=4,
                            include_unlabeled=True, drop_last=False)
    dm.setup("fit")
    assert dm.train_class_counts == [4, 3, 2, 2, 2, 1, 1, 1, 1, 1]    # int(4 * 0.25 ** (i/9))
    labelled = sum(dm.train_class_counts)
    assert dm.num_train_samples == labelled + 5
    ys, idx = [], []
    for views, y, index in dm.train_dataloader():
        assert views[0].shape[1:] == (3, 96, 96)
        ys.append(y)
        idx.append(index)
    ys, idx = torch.cat(ys), torch.cat(idx)
    assert sorted(idx.tolist()) == list(range(labelled + 5))
    assert (ys[idx >= labelled] == -1).all() and (ys[idx < labelled] >= 0).all()
    assert sum(len(y) for _, y, _ in dm.train_eval_dataloader()) == labelled


def test_npz_layout_through_the_datamodule(npz_dir):
    root, (x_tr, y_tr, _, _) = npz_dir
    dm = LongTailDataModule("npz", str(root), imbalance_factor=10, batch_size=4, clean_view=True)
    dm.setup("fit")
    assert dm.train_class_counts == [10, 4, 2, 1]        # int(10 * 0.1 ** (i / 3))
    views, y, index = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(4, 3, 16, 16)] * 3
    assert torch.equal(y, torch.as_tensor(y_tr[dm.train_indices[index.numpy()]]))


def test_non_square_npz_images_come_out_square_at_the_shorter_side(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 6)
    np.savez(tmp_path / "wide.npz", x_train=_images(rng, 12, 16)[:, :12], y_train=y,
             x_test=_images(rng, 12, 16)[:, :12], y_test=y)
    dm = LongTailDataModule("npz", str(tmp_path), imbalance_factor=1, batch_size=4,
                            clean_view=True)
    dm.setup("fit")
    views, _, _ = next(iter(dm.train_dataloader()))
    assert dm.image_size == 12 and [v.shape for v in views] == [(4, 3, 12, 12)] * 3
    assert next(iter(dm.val_dataloader()))[0].shape == (4, 3, 12, 12)


def test_image_folder_layout_validates_on_val_and_tests_on_test(folder_dir):
    dm = LongTailDataModule("image_folder", str(folder_dir), imbalance_factor=8, batch_size=4)
    dm.setup("fit")
    assert dm.train_class_counts == [8, 2, 1] and dm.image_size == 16   # int(8 * 8 ** -(i/2))
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 16, 16) and len(dm.val_dataset) == 6
    assert len(dm.test_dataset) == 9
    dm_test = LongTailDataModule("image_folder", str(folder_dir), imbalance_factor=8,
                                 batch_size=4, val_split="test")
    dm_test.setup("validate")
    assert len(dm_test.val_dataset) == 9


def test_imagenet_lt_is_used_as_given_at_224_px_by_default(imagenet_lt_dir):
    root, wnids, _ = imagenet_lt_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = LongTailDataModule("imagenet_lt", str(root), batch_size=2, skip_corrupt=True)
        dm.setup("fit")
    assert dm.image_size == 224 and dm.class_names == wnids
    views, _, _ = next(iter(dm.train_dataloader()))
    assert views[0].shape == (2, 3, 224, 224)
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 224, 224) and len(dm.val_dataset) == 6
