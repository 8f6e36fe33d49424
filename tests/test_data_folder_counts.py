"""What the long-tail settings do to a user's image folder: ``imbalance_factor: 1`` (and
``profile: none``) keep the folder's own counts, ``exp`` / ``step`` cut from the smallest
class folder, and too few images for a batch is an error whose advice can be followed."""

import numpy as np
import pytest
from PIL import Image

from dcl_cluster.data import LongTailDataModule

FOLDER_COUNTS = [12, 6, 3]             # an already long-tailed folder: ant, bee, cat


@pytest.fixture(scope="module")
def long_tailed_folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("lt_folder")
    for name, n in zip(("ant", "bee", "cat"), FOLDER_COUNTS, strict=True):
        for split, count in (("train", n), ("test", 2)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _counts(root, **kwargs):
    dm = LongTailDataModule("image_folder", str(root), batch_size=2, **kwargs)
    dm.setup("fit")
    return dm.train_class_counts


def test_imbalance_factor_1_keeps_the_folder_counts(long_tailed_folder):
    assert _counts(long_tailed_folder, imbalance_factor=1) == FOLDER_COUNTS


def test_profile_none_keeps_the_folder_counts_at_any_imbalance_factor(long_tailed_folder):
    assert _counts(long_tailed_folder, imbalance_factor=10, profile="none") == FOLDER_COUNTS


def test_exp_and_step_cut_from_the_smallest_class_folder(long_tailed_folder):
    # n_max = 3 (the smallest folder): exp int(3 * 3 ** -(i/2)) = 3, 1, 1; step: 3, 3 // 3 for the last
    assert _counts(long_tailed_folder, imbalance_factor=3) == [3, 1, 1]
    assert _counts(long_tailed_folder, imbalance_factor=3, profile="step") == [3, 3, 1]


def test_too_few_images_for_a_batch_advises_a_smaller_batch_not_a_lower_factor(long_tailed_folder):
    dm = LongTailDataModule("image_folder", str(long_tailed_folder), imbalance_factor=1, batch_size=64)
    with pytest.raises(ValueError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "batch_size=64" in message and "21 images" in message and str(long_tailed_folder) in message
    assert "batch_size <= 21" in message and "lower batch_size or imbalance_factor" not in message


def test_too_few_images_after_a_cut_names_the_uncut_size(long_tailed_folder):
    dm = LongTailDataModule("image_folder", str(long_tailed_folder), imbalance_factor=3, batch_size=8)
    with pytest.raises(ValueError, match=r"5 images.*batch_size <= 5.*imbalance_factor: 1.*21"):
        dm.setup("fit")


def _folder(root, train_counts, test_counts):
    rng = np.random.default_rng(1)
    for split, counts in (("train", train_counts), ("test", test_counts)):
        for name, n in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_a_folder_with_one_class_is_named_in_the_error(tmp_path):
    root = _folder(tmp_path, {"only": 5}, {"only": 2})
    dm = LongTailDataModule("image_folder", str(root), imbalance_factor=1, batch_size=2)
    with pytest.raises(ValueError, match=rf"{root / 'train'} has one class folder \('only'\)"):
        dm.setup("fit")


def test_a_class_with_one_image_and_a_test_split_missing_a_class_warn_by_name(tmp_path):
    root = _folder(tmp_path, {"ant": 6, "bee": 4, "cat": 1}, {"ant": 2, "bee": 2})
    dm = LongTailDataModule("image_folder", str(root), imbalance_factor=1, batch_size=2)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    messages = " ".join(str(w.message) for w in record)
    assert "['cat'] have a single training image" in messages
    assert "the test split has no image of class(es) ['cat']" in messages
    assert dm.val_class_counts == [2, 2, 0]


def test_num_workers_is_clipped_to_the_available_cores():
    from dcl_cluster.data.datamodule import available_cores

    dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=64, num_workers=10_000)
    dm.setup("fit")
    assert dm.train_dataloader().num_workers == available_cores() < 10_000
    assert dm.hparams.num_workers == 10_000          # the configuration is kept as written
