"""The frozen-encoder feature cache: the cached features are the encoder's (un-augmented and
augmented views, as image training draws them), computed once per data and weights, and a run
on them trains the heads without running the encoder again."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from dcl_cluster import DebiasedClusterModule
from dcl_cluster.data import LongTailDataModule
from dcl_cluster.data.feature_cache import (
    CachedViewDataset,
    encoder_frozen,
    images_fingerprint,
    weights_fingerprint,
)
from dcl_cluster.nn import SmallCNN
from dcl_cluster.objectives import InfoNCE, SCANConsistency, WarmupOnly


def frozen_cnn(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(1, 8).requires_grad_(False)


def digits(tmp_path, **kwargs):
    kwargs = {"imbalance_factor": 10, "batch_size": 64, "feature_cache_dir": str(tmp_path / "cache"),
              "cached_views": 4, **kwargs}
    return LongTailDataModule("digits", **kwargs)


def fit(backbone, dm, preset="dcl_cluster", epochs=2, **kwargs):
    if isinstance(preset, list):
        module = DebiasedClusterModule(objectives=preset, backbone=backbone, warmup_epochs=1, **kwargs)
    else:
        module = DebiasedClusterModule.from_preset(preset, backbone=backbone, warmup_epochs=1, **kwargs)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    return module, trainer


def encoder_calls(backbone):
    calls = []
    backbone.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    return calls


def test_fingerprints_change_with_one_weight_or_one_pixel_and_only_then(tmp_path):
    a, b = frozen_cnn(0), frozen_cnn(0)
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    assert weights_fingerprint(a) != weights_fingerprint(b)

    images = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    changed = images.copy()
    changed[3, 7, 7, 0] = 1
    assert images_fingerprint(images) == images_fingerprint(images.copy()) != images_fingerprint(changed)
    path = tmp_path / "x.png"
    path.write_bytes(b"one")
    before = images_fingerprint([str(path)])
    path.write_bytes(b"other")
    assert images_fingerprint([str(path)]) != before


def test_frozen_means_trainable_blocks_0_or_no_trainable_parameter():
    assert encoder_frozen(frozen_cnn())
    assert not encoder_frozen(SmallCNN(1, 8))
    assert not encoder_frozen(None)


def test_cached_features_are_the_encoders_on_the_clean_images_and_on_the_views_image_training_draws(tmp_path):
    backbone = frozen_cnn()
    module, _ = fit(backbone, dm := digits(tmp_path), epochs=2)
    assert module.features_cached and dm.feature_cache_path.exists()
    reference = digits(tmp_path / "images", feature_cache=False)
    reference.setup("fit")
    backbone.eval()
    with torch.no_grad():
        x, _, index = next(iter(reference.train_eval_dataloader()))
        clean = backbone(x).flatten(1)
        cached = dm.train_eval_dataset.features[index].float()
        torch.testing.assert_close(cached, clean, atol=2e-3, rtol=2e-3)  # stored as float16
        # epoch 0 of image training draws views 0 and 1 of every image
        views, _, index = next(iter(reference.train_dataloader()))
        for copy, view in enumerate(views[:2]):
            torch.testing.assert_close(dm.train_dataset.views[index, copy].float(), backbone(view).flatten(1),
                                       atol=2e-3, rtol=2e-3)
    assert not torch.equal(dm.train_dataset.views[:, 0], dm.train_dataset.views[:, 1])


def test_a_second_run_reads_the_cache_and_never_runs_the_encoder(tmp_path):
    fit(frozen_cnn(), digits(tmp_path))
    backbone = frozen_cnn()
    calls = encoder_calls(backbone)
    module, trainer = fit(backbone, dm := digits(tmp_path), epochs=3)
    assert calls == []  # training, k-means initialisation and validation all ran on the cache
    assert module.cluster_head.ready and trainer.current_epoch == 3
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 1
    # prediction still serves images (contact sheets show them) and runs the encoder on them
    out = trainer.predict(module, dm.predict_dataloader())
    assert calls and len(calls[0]) == 4 and "cluster" in out[0]


def test_other_weights_or_other_data_make_a_new_cache_file(tmp_path):
    fit(frozen_cnn(0), digits(tmp_path))
    fit(frozen_cnn(1), digits(tmp_path))
    fit(frozen_cnn(0), digits(tmp_path, imbalance_factor=5))
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 3


def test_a_trainable_encoder_or_feature_cache_false_trains_on_images(tmp_path):
    for backbone, dm in ((SmallCNN(1, 8), digits(tmp_path)), (frozen_cnn(), digits(tmp_path, feature_cache=False))):
        module, _ = fit(backbone, dm, epochs=2)
        assert not module.features_cached and dm.feature_cache_path is None
    assert not (tmp_path / "cache").exists()


def test_scan_on_cached_features_serves_cached_neighbours(tmp_path):
    # SCAN's consistency stage (its self-labelling needs the strong view: the test below)
    terms = [WarmupOnly(InfoNCE()), SCANConsistency()]
    module, _ = fit(frozen_cnn(), dm := digits(tmp_path), preset=terms, epochs=2)
    assert isinstance(dm.train_dataset, CachedViewDataset)
    table = dm.train_dataset.neighbors
    assert table is not None and int(table.min()) >= 0  # mined on the cached clean features
    views, _, index = next(iter(dm.train_dataloader()))
    assert set(views) == {"a", "b", "neighbor"} and views["neighbor"].shape == views["a"].shape


def test_the_strong_view_cannot_come_from_cached_features_and_is_refused_before_any_encoding(tmp_path):
    with pytest.raises(ValueError, match="ConfidentSelfLabel need.* strong view.* set feature_cache: false"):
        fit(frozen_cnn(), digits(tmp_path), preset="scan", epochs=2)
    assert not list((tmp_path / "cache").glob("features-*.pt"))
    dm = digits(tmp_path)
    fit(frozen_cnn(), dm)
    with pytest.raises(ValueError, match="strong view .* cached features: set feature_cache: false"):
        dm.serve_strong_view()


def test_a_reused_datamodule_serves_each_encoder_its_own_features_or_images(tmp_path):
    dm = digits(tmp_path)
    fit(frozen_cnn(0), dm)
    first = dm.train_eval_dataset.features.clone()
    other = frozen_cnn(1)
    fit(other, dm)
    assert not torch.equal(dm.train_eval_dataset.features, first)
    x, _, index = next(iter(_images(tmp_path).train_eval_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(dm.train_eval_dataset.features[index].float(), other.eval()(x).flatten(1),
                                   atol=2e-3, rtol=2e-3)
    module, _ = fit(SmallCNN(1, 8), dm)  # a trainable encoder on the same datamodule: images again
    assert not module.features_cached and dm.feature_cache_path is None
    assert next(iter(dm.train_eval_dataloader()))[0].ndim == 4


def _images(tmp_path):
    dm = digits(tmp_path / "images", feature_cache=False)
    dm.setup("fit")
    return dm


def test_resuming_with_a_checkpoint_of_another_subset_caches_that_subset(tmp_path):
    ckpt = tmp_path / "ckpt"
    module = DebiasedClusterModule.from_preset("dcl_cluster", backbone=frozen_cnn(), warmup_epochs=1)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=ckpt,
                         callbacks=[pl.callbacks.ModelCheckpoint(dirpath=ckpt, save_last=True)])
    trainer.fit(module, first := digits(tmp_path))
    other = digits(tmp_path, imbalance_factor=5)  # another subset rule; the checkpoint's subset wins
    module = DebiasedClusterModule.from_preset("dcl_cluster", backbone=frozen_cnn(), warmup_epochs=1)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    with pytest.warns(UserWarning, match="differs from the one built now"):
        trainer.fit(module, other, ckpt_path=str(ckpt / "last.ckpt"))
    assert other.subset_hash == first.subset_hash and len(other.train_dataset) == len(first.train_dataset)
    assert isinstance(other.train_dataset, CachedViewDataset) and module.features_cached
    assert other.feature_cache_path == first.feature_cache_path  # the same data and weights: the same file


def test_checkpoint_weights_other_than_the_cached_ones_are_refused(tmp_path):
    module, _ = fit(frozen_cnn(), digits(tmp_path), epochs=2)
    module.check_cached_weights()
    with torch.no_grad():
        next(module.backbone.parameters()).add_(1.0)
    differ = r"encoder weights \(fingerprint \w+\) differ from those the features were cached with \(\w+\)"
    with pytest.raises(ValueError, match=differ):
        module.check_cached_weights()


def test_bad_settings_and_a_damaged_cache_are_named(tmp_path):
    with pytest.raises(ValueError, match="cached_views must be an integer >= 2, got 1"):
        digits(tmp_path, cached_views=1)
    dm = digits(tmp_path)
    fit(frozen_cnn(), dm)
    dm.feature_cache_path.write_bytes(b"not a cache")
    with pytest.raises(ValueError, match=f"the feature cache {dm.feature_cache_path} cannot be read .* delete it"):
        fit(frozen_cnn(), digits(tmp_path))


def test_two_gloo_ranks_train_on_one_cache_file(tmp_path):
    dm = digits(tmp_path, batch_size=32)
    module = DebiasedClusterModule.from_preset("dcl_cluster", backbone=frozen_cnn(), warmup_epochs=1,
                                               in_channels=1, input_size=8, num_clusters=10)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(module, dm)
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))


class RowCountingCNN(SmallCNN):
    """A frozen SmallCNN that appends the rows of every batch it encodes to ``<folder>/rows-<rank>``
    (module level: ddp_spawn pickles it into the ranks)."""

    def __init__(self, folder):
        super().__init__(1, 8)
        self.folder = folder

    def forward(self, x):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        with open(f"{self.folder}/rows-{rank}", "a") as f:
            f.write(f"{x.shape[0]}\n")
        return super().forward(x)


def test_two_gloo_ranks_each_encode_half_and_write_the_file_one_process_writes(tmp_path):
    torch.manual_seed(0)
    weights = SmallCNN(1, 8).state_dict()

    def encoder(folder):
        folder.mkdir()
        cnn = RowCountingCNN(str(folder))
        cnn.load_state_dict(weights)
        return cnn.requires_grad_(False)

    def rows(folder):
        return {path.name: sum(int(v) for v in path.read_text().split()) for path in folder.glob("rows-*")}

    fit(encoder(tmp_path / "rows1"), digits(tmp_path / "one", batch_size=32), epochs=2)
    module = DebiasedClusterModule.from_preset("dcl_cluster", backbone=encoder(tmp_path / "rows2"), warmup_epochs=1,
                                               in_channels=1, input_size=8, num_clusters=10)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(module, digits(tmp_path / "two", batch_size=32))
    (one,), (two,) = (list((tmp_path / run / "cache").glob("features-*")) for run in ("one", "two"))
    assert one.name == two.name  # the same key, and nothing else left there (no shares, no temporary files)
    expected, got = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert set(got) == set(expected) == {"views", "clean", "test"}
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    alone, shared = rows(tmp_path / "rows1"), rows(tmp_path / "rows2")
    assert set(shared) == {"rows-0", "rows-1"} and sum(shared.values()) == alone["rows-0"]
    assert all(abs(count - alone["rows-0"] / 2) <= 2 * 32 for count in shared.values())  # about half each


def _ranks_in_threads(world, run):
    """``run(rank, any_rank)`` on ``world`` threads with an ``any_rank`` collective: each rank's result or error."""
    import threading

    barrier, flags, results = threading.Barrier(world), [False] * world, [None] * world

    def any_rank(rank, flag):
        barrier.wait()
        flags[rank] = flag
        barrier.wait()
        decision = any(flags)
        barrier.wait()
        return decision

    def target(rank):
        try:
            results[rank] = run(rank, lambda flag: any_rank(rank, flag))
        except Exception as err:  # noqa: BLE001 - the test reads it
            results[rank] = err

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_a_sharded_build_assembles_the_shares_and_a_failure_on_one_rank_is_raised_on_every_rank(tmp_path):
    from dcl_cluster.data.feature_cache import build_sharded, scatter_rows

    rows = torch.arange(10)
    features = torch.randn(10, 1, 3).half()

    def assemble(shares):
        return {"x": scatter_rows([share["x"] for share in shares], 10)}

    def shard(rank):
        mine = rows[rank::2]
        return {"x": (mine, features[mine])}

    path = tmp_path / "features-x.pt"
    results = _ranks_in_threads(2, lambda r, any_rank: build_sharded(path, lambda: shard(r), assemble, r, 2, any_rank))
    for tensors, built in results:
        assert built and torch.equal(tensors["x"], features)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features-x.pt"]  # the shares are gone
    again = _ranks_in_threads(2, lambda r, any_rank: build_sharded(path, lambda: 1 / 0, assemble, r, 2, any_rank))
    assert [built for _, built in again] == [False, False]  # found: nobody encodes

    def failing(rank):
        if rank == 1:
            raise OSError("disk full")
        return shard(rank)

    other = tmp_path / "features-y.pt"
    results = _ranks_in_threads(2, lambda r, any_rank: build_sharded(other, lambda: failing(r), assemble, r, 2,
                                                                      any_rank))
    assert isinstance(results[1], OSError) and "disk full" in str(results[1])
    assert isinstance(results[0], RuntimeError) and "another process failed" in str(results[0])
    assert not other.exists() and not list(tmp_path.glob("features-y.pt.part*"))


def test_images_come_back_with_the_clean_view_asked_for_while_features_were_served(tmp_path):
    dm = digits(tmp_path)
    fit(frozen_cnn(), dm, preset="dcl")  # no term needs the un-augmented view
    fit(SmallCNN(1, 8), dm)  # dcl_cluster's anchor term does, from images
    views = next(iter(dm.train_dataloader()))[0]
    assert len(views) == 3 and views[2].ndim == 4


def test_ranks_that_do_not_share_the_cache_folder_are_told_so_before_any_work(tmp_path):
    # a node-local ~/.cache on each of two nodes: each rank's folder is its own
    from dcl_cluster.data.feature_cache import build_sharded

    encoded = []

    def shard(rank):
        encoded.append(rank)
        return {"x": (torch.arange(rank, 10, 2), torch.zeros(5, 1, 3))}

    results = _ranks_in_threads(2, lambda r, any_rank: build_sharded(
        tmp_path / f"node{r}" / "features-x.pt", lambda: shard(r), lambda shares: {}, r, 2, any_rank))
    for err in results:
        assert isinstance(err, ValueError) and "do not share the feature cache folder" in str(err)
    assert encoded == []  # said before the encoder's work
    assert not list(tmp_path.rglob("*.pt*"))  # no mark, share or file left


def test_a_batch_of_cached_views_fetched_at_once_equals_the_rows_fetched_one_by_one():
    from dcl_cluster.data.feature_cache import CachedViewDataset

    views, clean = torch.randn(20, 4, 3).half(), torch.randn(20, 3).half()
    dataset = CachedViewDataset(views, np.arange(20) % 3, clean)
    keys = [(i, 1000 + 7 * i, 0) for i in (5, 0, 19, 5, 11)]
    at_once = CachedViewDataset.collate(dataset.__getitems__(keys))
    one_by_one = CachedViewDataset.collate([dataset[k] for k in keys])
    for got, expected in zip(at_once[0], one_by_one[0], strict=True):
        assert got.dtype == torch.float32 and torch.equal(got, expected)
    assert torch.equal(at_once[1], one_by_one[1]) and torch.equal(at_once[2], one_by_one[2])
    assert not torch.equal(at_once[0][0], at_once[0][1])  # two different views of each row
    torch.manual_seed(3)  # plain indices draw from the global random state, in the same order
    first = CachedViewDataset.collate(dataset.__getitems__([2, 4]))
    torch.manual_seed(3)
    second = CachedViewDataset.collate([dataset[2], dataset[4]])
    assert all(torch.equal(a, b) for a, b in zip(first[0], second[0], strict=True))
    huge = [(3, 2**64 - 1, 0), (4, 2**63 + 5, 0)]  # seeds beyond int64 draw like their value mod 2**63
    assert all(torch.equal(a, b) for a, b in zip(CachedViewDataset.collate(dataset.__getitems__(huge))[0],
                                                  CachedViewDataset.collate([dataset[k] for k in huge])[0],
                                                  strict=True))
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=dataset.collate,
                                         sampler=keys)  # the DataLoader's batched fetch takes __getitems__
    assert all(torch.equal(a, b) for a, b in zip(next(iter(loader))[0], one_by_one[0], strict=True))


def test_the_pairs_seeds_pick_are_two_different_views_every_ordered_pair_equally_often():
    from dcl_cluster.data.feature_cache import CachedViewDataset

    for v in (2, 3, 5):
        dataset = CachedViewDataset(torch.zeros(4, v, 2), np.zeros(4))
        seeds = torch.randint(0, 2**32, (60_000,), generator=torch.Generator().manual_seed(v))
        pick = dataset.pairs(seeds)
        expected = []  # the definition, one seed at a time: first seed % V, then one of the others after it
        for s in seeds[:200].tolist():
            first = s % v
            others = [(first + k) % v for k in range(1, v)]
            expected.append([first, others[(s // v) % (v - 1)]])
        assert pick[:200].tolist() == expected
        assert bool((pick[:, 0] != pick[:, 1]).all()) and int(pick.min()) == 0 and int(pick.max()) == v - 1
        counts = torch.bincount(pick[:, 0] * v + pick[:, 1], minlength=v * v).float()
        counts = counts[counts > 0]
        assert len(counts) == v * (v - 1)  # every ordered pair of different views occurs
        expected_count = len(seeds) / (v * (v - 1))
        assert float(((counts - expected_count).abs() / expected_count).max()) < 0.05
