"""LongTailDataModule: digits default, views, determinism, checkpoint state, errors, real CIFAR-10."""

import inspect
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dcl_cluster.data import LongTailDataModule

# digits per class: 178 182 177 183 181 182 181 179 174 180; a 0.3 held-out share leaves
# 174 - round(52.2) = 122 train images in the smallest class, hence n_max = 122.
DIGITS_IF10 = [122, 94, 73, 56, 43, 33, 26, 20, 15, 12]     # int(122 * 0.1 ** (i / 9))
DIGITS_IF100_TOTAL = 299
CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _digits(**kwargs) -> LongTailDataModule:
    dm = LongTailDataModule(**{"dataset": "digits", "imbalance_factor": 10, "batch_size": 32,
                               **kwargs})
    dm.setup("fit")
    return dm


def _denormalise(x: torch.Tensor, dm) -> np.ndarray:
    """Float views back to uint8 pixels ``(B, H, W, C)``, with the datamodule's statistics."""
    mean = torch.tensor(dm.mean).view(1, -1, 1, 1)
    std = torch.tensor(dm.std).view(1, -1, 1, 1)
    return (x * std + mean).mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def digits_dm():
    return _digits(clean_view=True)


def test_digits_default_held_out_split_and_long_tail_follow_the_rule(digits_dm):
    per_class = np.bincount(load_digits().target)
    held_out = np.array([round(0.3 * n) for n in per_class])
    assert min(per_class - held_out) == 122
    assert digits_dm.train_class_counts == DIGITS_IF10
    assert (digits_dm.num_classes, digits_dm.num_channels, digits_dm.image_size) == (10, 1, 8)
    assert digits_dm.class_names == [str(c) for c in range(10)]
    test_y = torch.cat([y for _, y in digits_dm.test_dataloader()])
    assert np.bincount(test_y.numpy()).tolist() == held_out.tolist()


def test_default_constructor_is_digits_at_imbalance_100():
    dm = LongTailDataModule()
    dm.setup("fit")
    assert dm.hparams.dataset == "digits" and dm.hparams.imbalance_factor == 100.0
    assert sum(dm.train_class_counts) == DIGITS_IF100_TOTAL and dm.train_class_counts[-1] == 1


def test_train_batches_are_two_views_and_clean_view_last(digits_dm):
    views, y, index = next(iter(digits_dm.train_dataloader()))
    assert isinstance(views, list) and len(views) == 3
    assert all(v.shape == (32, 1, 8, 8) and v.dtype == torch.float32 for v in views)
    assert y.dtype == torch.int64 and index.dtype == torch.int64
    differ = (views[0] != views[1]).flatten(1).any(1).float().mean()
    assert differ > 0.9, "the two augmented views of an image differ"


def test_clean_view_is_the_validation_transform_of_the_same_image(digits_dm):
    views, y, index = next(iter(digits_dm.train_dataloader()))
    by_index = {}
    for x, ys, idx in digits_dm.train_eval_dataloader():
        by_index.update({int(i): (xi, int(yi)) for xi, yi, i in zip(x, ys, idx, strict=True)})
    for k in range(len(index)):
        x_eval, y_eval = by_index[int(index[k])]
        assert torch.equal(views[2][k], x_eval) and int(y[k]) == y_eval


def test_clean_view_pixels_are_real_digits_images(digits_dm):
    views, y, _ = next(iter(digits_dm.train_dataloader()))
    d = load_digits()
    raw = np.round(d.images * 255 / 16).astype(np.uint8)
    known = {(img.tobytes(), int(t)) for img, t in zip(raw, d.target, strict=True)}
    pixels = _denormalise(views[2], digits_dm)[..., 0]
    assert all((p.tobytes(), int(t)) in known for p, t in zip(pixels, y, strict=True))


def test_normalised_validation_batches_have_about_zero_mean_unit_std(digits_dm):
    x = torch.cat([x for x, _ in digits_dm.val_dataloader()])
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_val_and_test_batches_are_x_y(digits_dm):
    for loader in (digits_dm.val_dataloader(), digits_dm.test_dataloader(),
                   digits_dm.predict_dataloader()):
        batch = next(iter(loader))
        assert len(batch) == 2 and batch[0].shape[1:] == (1, 8, 8)


def test_train_eval_loader_covers_the_long_tailed_set_once(digits_dm):
    idx = torch.cat([i for _, _, i in digits_dm.train_eval_dataloader()])
    assert sorted(idx.tolist()) == list(range(sum(DIGITS_IF10)))
    shuffled = torch.cat([i for _, _, i in digits_dm.train_eval_dataloader(shuffle=True)])
    assert sorted(shuffled.tolist()) == sorted(idx.tolist()) and not torch.equal(shuffled, idx)


def test_index_and_labels_point_into_the_long_tailed_set(digits_dm):
    ys = torch.cat([y for _, y, _ in digits_dm.train_eval_dataloader()])
    assert np.bincount(ys.numpy()).tolist() == DIGITS_IF10


@pytest.mark.parametrize("drop_last, batches", [(True, 494 // 32), (False, math.ceil(494 / 32))])
def test_drop_last_is_honoured(drop_last, batches):
    dm = _digits(drop_last=drop_last)
    assert sum(DIGITS_IF10) == 494 and len(dm.train_dataloader()) == batches


def test_same_seed_same_subset_and_batch_order_other_seed_other_subset():
    a, b, c = _digits(seed=3), _digits(seed=3), _digits(seed=4)
    assert np.array_equal(a.train_indices, b.train_indices) and a.subset_hash == b.subset_hash
    assert not np.array_equal(a.train_indices, c.train_indices)
    assert a.train_class_counts == c.train_class_counts
    order_a = [i.tolist() for _, _, i in a.train_dataloader()]
    order_b = [i.tolist() for _, _, i in b.train_dataloader()]
    assert order_a == order_b
    torch.manual_seed(0)
    va = next(iter(a.train_dataloader()))[0][0]
    torch.manual_seed(0)
    vb = next(iter(b.train_dataloader()))[0][0]
    assert torch.equal(va, vb), "same global seed, same augmentations"


def test_each_epoch_reshuffles_and_set_epoch_replays_an_epoch():
    dm = _digits()
    loader = dm.train_dataloader()
    first = [i.tolist() for _, _, i in loader]
    second = [i.tolist() for _, _, i in loader]
    assert first != second
    loader.sampler.set_epoch(0)
    assert [i.tolist() for _, _, i in loader] == first


def test_test_set_does_not_move_with_the_seed():
    ya = torch.cat([y for _, y in _digits(seed=0).test_dataloader()])
    xa = torch.cat([x for x, _ in _digits(seed=0).test_dataloader()])
    xb = torch.cat([x for x, _ in _digits(seed=9, imbalance_factor=2).test_dataloader()])
    assert torch.equal(xa, xb) and len(ya) == 539


def test_subset_is_in_the_checkpoint_state_and_restored(tmp_path):
    a = _digits(seed=0)
    path = tmp_path / "state.pt"
    torch.save(a.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert state["subset_hash"] == a.subset_hash
    b = _digits(seed=1)
    with pytest.warns(UserWarning, match="differs"):
        b.load_state_dict(state)
    assert np.array_equal(b.train_indices, a.train_indices) and b.subset_hash == a.subset_hash
    c = LongTailDataModule("digits", imbalance_factor=10, batch_size=32, seed=1)
    c.load_state_dict(state)
    c.setup("fit")
    assert np.array_equal(c.train_indices, a.train_indices)


def test_checkpoint_of_a_path_data_dir_loads_with_weights_only(tmp_path):
    # a pathlib.Path in the hyperparameters made resuming fail: torch.load(weights_only=True) refuses it
    import lightning.pytorch as pl

    from dcl_cluster import DebiasedClusterModule

    dm = LongTailDataModule("digits", data_dir=tmp_path, imbalance_factor=10, batch_size=64)
    assert dm.hparams.data_dir == str(tmp_path)
    module = DebiasedClusterModule.from_preset("simclr", backbone_width=4, projection_dim=8)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert ckpt["datamodule_hyper_parameters"]["data_dir"] == str(tmp_path)


def test_every_init_argument_is_typed_with_a_default_and_saved_as_hyperparameter():
    params = list(inspect.signature(LongTailDataModule.__init__).parameters.values())[1:]
    assert all(p.annotation is not inspect.Parameter.empty for p in params)
    assert all(p.default is not inspect.Parameter.empty for p in params)
    dm = LongTailDataModule("digits", imbalance_factor=5, seed=2)
    assert {p.name for p in params} <= set(dm.hparams)
    assert dm.hparams.imbalance_factor == 5 and dm.hparams.seed == 2


def test_setup_for_every_stage_exposes_the_attributes():
    for stage in ("fit", "validate", "test", "predict"):
        dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=8)
        dm.setup(stage)
        assert dm.train_class_counts == DIGITS_IF10 and dm.num_classes == 10
        assert len(dm.subset_hash) == 16 and dm.train_indices.dtype == np.int64


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("kwargs, match", [
    ({"imbalance_factor": float("nan")}, r"imbalance_factor must be a finite number >= 1.*nan"),
    ({"imbalance_factor": 0.5}, "imbalance_factor"),
    ({"dataset": "cifar"}, r"unknown dataset 'cifar'; valid names are \["),
    ({"profile": "linear"}, r"profile must be one of \['exp', 'step', 'none'\]"),
    ({"augment": "heavy"}, "augment must be one of"),
    ({"val_split": "train"}, "val_split must be one of"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"num_workers": -1}, "num_workers"),
    ({"seed": -1}, "seed"),
    ({"test_fraction": 1.5}, r"test_fraction must be in \(0, 1\)"),
    ({"crop_min_scale": 0.0}, "crop_min_scale"),
    ({"download": True}, r"download=True is supported for \['cifar10', 'cifar100', 'stl10'\]"),
    ({"include_unlabeled": True}, "include_unlabeled=True needs dataset='stl10'"),
])
def test_bad_arguments_fail_at_construction_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LongTailDataModule(**kwargs)


def test_batch_size_larger_than_the_long_tailed_set_names_both_numbers():
    dm = LongTailDataModule("digits", imbalance_factor=100, batch_size=512)
    with pytest.raises(ValueError, match=rf"batch_size=512 .*\({DIGITS_IF100_TOTAL} images"):
        dm.setup("fit")


def test_imbalance_leaving_a_class_empty_is_an_error():
    with pytest.raises(ValueError, match=r"leaves classes \[9\].*imbalance_factor <= 122"):
        _digits(imbalance_factor=200)


def test_missing_data_dir_names_the_layout_and_download_option():
    dm = LongTailDataModule("cifar10", data_dir=None)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*download=True"):
        dm.setup("fit")
    dm = LongTailDataModule("npz", data_dir="/nonexistent/arrays")
    with pytest.raises(FileNotFoundError, match="x_train") as err:
        dm.setup("fit")
    assert "download" not in str(err.value) and "/nonexistent/arrays" in str(err.value)


def test_val_split_val_without_a_val_split_and_bad_mean_are_errors():
    with pytest.raises(ValueError, match="has no val split"):
        _digits(val_split="val")
    with pytest.raises(ValueError, match=r"mean needs 1 value\(s\)"):
        _digits(mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])


def test_loaders_before_setup_say_so():
    with pytest.raises(RuntimeError, match="setup"):
        LongTailDataModule().val_dataloader()


def test_two_workers_give_the_same_subset_and_order():
    a, b = _digits(num_workers=0), _digits(num_workers=2, persistent_workers=False)
    assert [i.tolist() for _, _, i in a.train_dataloader()] == \
        [i.tolist() for _, _, i in b.train_dataloader()]


# ------------------------------------------------------------------ real CIFAR-10 (shared copy)


def test_real_cifar10_lt_from_the_npz_export(cifar10_npz_dir):
    dm = LongTailDataModule("npz", data_dir=str(cifar10_npz_dir), imbalance_factor=100,
                            batch_size=64, clean_view=True, eval_batch_size=2500)
    dm.setup("fit")
    assert dm.train_class_counts == CIFAR10_LT_100 and len(dm.train_indices) == 12_406
    assert dm.class_names[:3] == ["airplane", "automobile", "bird"]
    assert (dm.num_channels, dm.image_size, dm.view_preset.name) == (3, 32, "simclr32")
    test_y = torch.cat([y for _, y in dm.test_dataloader()])
    assert np.bincount(test_y.numpy()).tolist() == [1000] * 10

    views, y, index = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(64, 3, 32, 32)] * 3
    assert (views[0] != views[1]).flatten(1).any(1).all()
    with np.load(cifar10_npz_dir / "cifar10_uint8.npz") as f:
        x_train, y_train = f["x_train"], f["y_train"]
    original = dm.train_indices[index.numpy()]
    assert np.array_equal(_denormalise(views[2], dm), x_train[original])
    assert np.array_equal(y.numpy(), y_train[original])


def test_views_depend_only_on_seed_epoch_and_index_not_on_rng_state_or_workers():
    """What makes a resumed run draw the views of the uninterrupted one."""
    batches = []
    for workers, rng_seed in ((0, 1), (0, 2), (2, 3)):
        dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=32, clean_view=True,
                                num_workers=workers, persistent_workers=False)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(5)
        torch.manual_seed(rng_seed)  # a different global random state each time
        batches.append(next(iter(loader)))
    first = batches[0]
    for other in batches[1:]:
        assert torch.equal(first[2], other[2])
        for a, b in zip(first[0], other[0], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first[0][0], first[0][1]), "the two views of an image must differ"
    dm.train_dataloader().sampler.set_epoch(6)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(6)
    assert not torch.equal(next(iter(loader))[2], first[2]), "another epoch, another order"
