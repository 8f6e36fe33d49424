"""How LongTailDataModule serves a frozen encoder's cached features instead of images
(:mod:`dcl_cluster.data.feature_cache`), and goes back to images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from dcl_cluster.data.datasets import EvalDataset, SeededEpochSampler
from dcl_cluster.data.feature_cache import (
    CachedViewDataset,
    FeatureRows,
    build_sharded,
    cache_key,
    default_cache_dir,
    encode_shard,
    images_fingerprint,
    load_or_build,
    scatter_rows,
)

__all__ = ["CachedFeatureServing"]


class CachedFeatureServing:
    """Mixed into :class:`~dcl_cluster.data.LongTailDataModule` (its datasets, loaders,
    collates, ``hparams`` with ``feature_cache_dir`` and ``cached_views``, and ``_info``)."""

    def serve_cached_features(self, encode: Callable[[torch.Tensor], torch.Tensor], weights_key: str,
                              precision: str = "32-true", refresh: Callable[[], Any] | None = None,
                              rank: int = 0, world: int = 1,
                              any_rank: Callable[[bool], bool] | None = None) -> Path:
        """Serve a frozen encoder's features instead of images, from the feature cache
        (:mod:`dcl_cluster.data.feature_cache`), computing them once when the cache has no file
        for this data and these weights.

        Afterwards ``train_dataloader()`` yields two different cached views' features per image
        (``(B, F)`` floats, plus ``"clean"`` / ``"neighbor"`` as with images), and
        ``train_eval/val/test_dataloader()`` the un-augmented images' features;
        ``predict_dataloader()`` keeps serving images (the contact sheets show them).
        :meth:`serve_images` goes back to images.

        Args:
            encode: images ``(B, C, S, S)`` -> features ``(B, F)``, the frozen encoder (on its
                device, in its precision, in eval mode).
            weights_key: a fingerprint of the encoder (architecture and weights,
                :func:`~dcl_cluster.data.feature_cache.weights_fingerprint`): part of the key.
            precision: the precision ``encode`` runs in: part of the key.
            refresh: called instead when a checkpoint's training subset replaces the current
                one (``DebiasedClusterModule`` passes its own setup of the cache).
            rank: This process's rank among ``world`` processes that build the cache together:
                each encodes every ``world``-th batch of every split (the batches one process
                encodes, so the file is the same), rank 0 writes the file
                (:func:`~dcl_cluster.data.feature_cache.build_sharded`).
            world: The number of processes that call this together (1: alone).
            any_rank: With ``world > 1``, a collective every process calls at the same points:
                whether any process passed ``True``.

        Returns:
            The cache file.
        """
        self._require_setup()
        if self._feature_key == (weights_key, precision) and self.feature_cache_path is not None:
            self._refresh_features = refresh  # the module asking now re-caches after a restore
            return self.feature_cache_path
        self.serve_images()  # another encoder's features, or none yet: start from the images
        hp = self.hparams
        path = self.feature_cache_file(weights_key, precision)
        views, n = hp.cached_views, len(self.train_dataset)
        use_val = self.val_dataset is not self.test_dataset
        batch = hp.eval_batch_size or self.batch_size

        def indexed(dataset):
            return EvalDataset(dataset.images, dataset.labels, dataset.transform, with_index=True)

        epochs = (views + 1) // 2  # the views image training draws in epochs 0, 1, ... (two per epoch)
        clean = EvalDataset(self.train_dataset.images, self.train_dataset.labels,
                            self.train_eval_dataset.transform, with_index=True)
        splits = {"clean": (clean, n), "test": (indexed(self.test_dataset), len(self.test_dataset))}
        if use_val:
            splits["val"] = (indexed(self.val_dataset), len(self.val_dataset))

        def build_shard() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
            """``(rows, features)`` of this process's batches (every ``world``-th) of every split."""
            share = f" (this process's share: every {world}th batch)" if world > 1 else ""
            self._info(f"Computing the frozen encoder's features once: {n} training images x {views} augmented "
                       f"views + un-augmented, and the evaluation images{share}; cached in {path}")
            out, sampler = {}, SeededEpochSampler(n, hp.seed, augmentation_seeds=True)
            for epoch in range(epochs):
                sampler.set_epoch(epoch)  # in training's batches: the photometric seed is the batch's
                loader = self._shard_loader(self.train_dataset, self.batch_size, self._view_collate, sampler,
                                            rank, world)
                out[f"views{epoch}"] = encode_shard(encode, loader, copies=2)
            for name, (dataset, size) in splits.items():
                loader = self._shard_loader(dataset, batch, self._eval_collate, SequentialSampler(range(size)),
                                            rank, world)
                out[name] = encode_shard(encode, loader)
            return out

        def assemble(shards: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> dict[str, torch.Tensor]:
            drawn = [scatter_rows([s[f"views{e}"] for s in shards], n) for e in range(epochs)]
            out = {"views": torch.cat(drawn, dim=1)[:, :views].contiguous()}
            for name, (_, size) in splits.items():
                out[name] = scatter_rows([s[name] for s in shards], size)[:, 0]
            return out

        if world > 1:
            cached, built = build_sharded(path, build_shard, assemble, rank, world, any_rank)
        else:
            cached, built = load_or_build(path, lambda: assemble([build_shard()]))
        expected = {"views": (n, views), "clean": (n,), "test": (len(self.test_dataset),)}
        if use_val:
            expected["val"] = (len(self.val_dataset),)
        wrong = [k for k, shape in expected.items() if k not in cached or tuple(cached[k].shape[:-1]) != shape]
        if wrong:
            raise ValueError(f"the feature cache {path} does not fit this data ({', '.join(wrong)}): delete it to "
                             "compute the features again")
        self._image_datasets = (self.train_dataset, self.train_eval_dataset, self.val_dataset, self.test_dataset)
        self._clean_features = cached["clean"]
        cached_views = CachedViewDataset(cached["views"], self.train_dataset.labels,
                                         cached["clean"] if hp.clean_view else None)
        cached_views.neighbors = self.train_dataset.neighbors
        self.train_dataset = cached_views
        lt_labels = self.train_eval_dataset.labels
        self.train_eval_dataset = FeatureRows(cached["clean"][: len(lt_labels)], lt_labels, with_index=True)
        self.test_dataset = FeatureRows(cached["test"], self.test_dataset.labels)
        self.val_dataset = (FeatureRows(cached["val"], self.val_dataset.labels) if use_val
                            else self.test_dataset)
        self._feature_key, self._refresh_features, self.feature_cache_path = (weights_key, precision), refresh, path
        return path

    def _shard_loader(self, dataset, batch_size: int, collate, sampler, rank: int, world: int) -> DataLoader:
        """The loader of every ``world``-th batch from ``rank`` of those ``sampler`` makes in batches of
        ``batch_size`` (all of them for one process): the same batches, so the same views."""
        batches = list(BatchSampler(sampler, batch_size, drop_last=False))[rank::world]
        loader = self._loader(dataset, batch_size, collate)  # the datamodule's loader settings
        return DataLoader(dataset, batch_sampler=batches, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, generator=loader.generator)

    def feature_cache_file(self, weights_key: str, precision: str = "32-true") -> Path:
        """The cache file :meth:`serve_cached_features` reads (or writes) for these images, this
        subset, these transforms and this encoder (``weights_key``) in ``precision``."""
        self._require_setup()
        hp, data = self.hparams, self._source
        parts = {
            "dataset": hp.dataset, "train": images_fingerprint(data.train_images),
            "unlabeled": images_fingerprint(data.unlabeled_images), "test": images_fingerprint(data.test_images),
            "val": images_fingerprint(data.val_images), "subset": self.subset_hash, "val_split": hp.val_split,
            "image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
            "views": repr(self.view_preset), "seed": hp.seed, "batch_size": self.batch_size,
            "cached_views": hp.cached_views, "weights": weights_key, "precision": precision,
        }
        folder = Path(hp.feature_cache_dir) if hp.feature_cache_dir else default_cache_dir()
        return folder / f"features-{cache_key(parts)}.pt"

    def serve_images(self) -> None:
        """Serve images again after :meth:`serve_cached_features` (a trainable encoder, or
        another frozen one, on this datamodule); nothing to do otherwise."""
        if self._image_datasets is None:
            return
        neighbors = self.train_dataset.neighbors
        self.train_dataset, self.train_eval_dataset, self.val_dataset, self.test_dataset = self._image_datasets
        self.train_dataset.neighbors = neighbors
        if self.hparams.clean_view and self.train_dataset.clean is None:  # asked for while features were served
            self.train_dataset.clean = self.train_eval_dataset.transform
        self._image_datasets = self._feature_key = self._refresh_features = self.feature_cache_path = None

