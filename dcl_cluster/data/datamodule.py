"""LongTailDataModule: any supported source, made long-tailed, as Lightning data loaders.

The only module of :mod:`dcl_cluster.data` that imports Lightning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from dcl_cluster.data.datasets import (
    ChainedImages,
    EvalDataset,
    LazyArrayImages,
    SeededEpochSampler,
    ViewDataset,
    image_store,
)
from dcl_cluster.data.feature_serving import CachedFeatureServing
from dcl_cluster.data.long_tail import (
    PROFILES,
    check_imbalance_factor,
    long_tail_indices,
    subset_hash,
)
from dcl_cluster.data.sources import (
    DOWNLOADABLE,
    SourceData,
    check_dataset_name,
    download_source,
    load_source,
)
from dcl_cluster.data.transforms import (
    AUGMENTS,
    BatchPhotometric,
    EvalCollate,
    Normalize,
    ViewCollate,
    eval_transform,
    geometric_transform,
    resolve_preset,
    strong_transform,
)

VAL_SPLITS = ("auto", "val", "test")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class LongTailDataModule(CachedFeatureServing, LightningDataModule):
    """A long-tailed training set (class 0 largest) with a balanced test set, as views.

    Sources (``dataset``): ``"digits"`` (embedded default, no files), ``"npz"``,
    ``"cifar10"``, ``"cifar100"``, ``"stl10"``, ``"imagenet_lt"``, ``"image_folder"``,
    ``"images"`` (every image below ``data_dir``, no labels: no long tail is cut, labels are
    ``-1``, ``num_classes`` is 0, and ``predict_dataloader()`` serves the whole folder); their
    layouts are listed in :data:`dcl_cluster.data.sources.LAYOUTS`. The train split keeps
    ``long_tail_counts(n_max, C, imbalance_factor, profile)`` images per class (``n_max`` =
    the smallest class of the full train split: 5000 for CIFAR-10, 500 for CIFAR-100 and
    STL-10), chosen by a per-class shuffle seeded with ``seed``. ``imbalance_factor=1`` or
    ``profile="none"`` keeps the train split as it is (a folder's own class counts);
    ImageNet-LT is long-tailed already and is always used as its split file gives it.

    Batches: ``train_dataloader()`` -> ``(views, y, index)`` with ``views = [x_a, x_b]``
    (plus ``x_clean`` last when ``clean_view``), float ``(B, C, S, S)``, normalised; ``y`` is
    ``-1`` for STL-10's unlabelled images. ``val/test/predict_dataloader()`` -> ``(x, y)``;
    ``train_eval_dataloader()`` -> ``(x, y, index)`` over the labelled long-tailed train set.

    Args:
        dataset: source name.
        data_dir: the source's root folder (or the ``.npz`` file); unused by ``"digits"``.
        imbalance_factor: ``n_max / n_min``, a finite number >= 1; 1 keeps the train
            split's own counts (no cut).
        profile: ``"exp"`` (LDAM), ``"step"`` (half the classes at ``n_max / IF``) or
            ``"none"`` (keep the train split as it is, whatever ``imbalance_factor``).
        batch_size: training batch size (also the evaluation batch size by default).
        num_workers: DataLoader worker processes, at most the CPU cores available.
        seed: seed of the subset selection and of the training order.
        clean_view: append the un-augmented (validation-transform) image to the views.
        image_size: side of every view in pixels; default the source's native size (224 at
            most for folders of large images).
        augment: view preset, one of ``"auto"``, ``"simclr"``, ``"digits"``, ``"none"`` or a
            named preset (see :mod:`dcl_cluster.data.transforms`).
        crop_min_scale: overrides the lower bound of the random crop's scale.
        mean: per-channel normalisation mean in [0, 1] units; default per dataset.
        std: per-channel normalisation std; default per dataset.
        download: let torchvision download CIFAR-10/100 or STL-10 if absent (it says so first;
            a server silent for ``sources.DOWNLOAD_TIMEOUT_S`` seconds, or any failure, is one
            :class:`~dcl_cluster.data.DownloadError` naming the URL, the folder and how to
            place the files by hand).
        include_unlabeled: STL-10: add the 100k unlabelled images to contrastive training.
        skip_corrupt: folder sources: drop unreadable images with a warning instead of failing.
        drop_last: drop the last incomplete training batch.
        pin_memory: DataLoader ``pin_memory``.
        persistent_workers: keep workers alive between epochs (only with ``num_workers > 0``).
        test_fraction: held-out share where the source has no test split (digits, ``x, y``
            npz, image folders with only ``train/``), stratified with a fixed seed.
        val_split: ``"auto"`` (the source's val split if it has one, else test), ``"val"``
            or ``"test"``.
        eval_batch_size: batch size of the evaluation loaders; default ``batch_size``.
        feature_cache: with a frozen encoder (``trainable_blocks=0``), train and evaluate on
            its features computed once and cached on disk (:meth:`serve_cached_features`,
            which ``DebiasedClusterModule`` calls at ``setup``); ``False``: images every epoch.
        feature_cache_dir: the cache's folder; default ``$DCL_CLUSTER_CACHE/features`` or
            ``~/.cache/dcl_cluster/features``.
        cached_views: augmented views cached per training image (at least 2); training draws
            two different ones per image and epoch.

    Attributes:
        train_class_counts: images per class in the long-tailed train set (class order).
        val_class_counts: images per class of the split ``val_dataloader()`` serves.
        class_names, num_classes, num_channels: as read from the source.
        image_size: side of the views in pixels (resolved from ``image_size`` or the source).
        labelled: False for an unlabelled source (``images``): its labels are all ``-1``.
        predict_paths: the image file of each row of ``predict_dataloader()`` (file sources),
            else ``None``.
        train_indices: kept positions in the source's full train split (int64, sorted);
            ``subset_hash`` is their 16-hex-digit fingerprint. Both go into checkpoints via
            :meth:`state_dict`; :meth:`load_state_dict` restores the recorded subset.
        num_train_samples: length of the training set (labelled + unlabelled for STL-10).
        mean, std: the normalisation in use; view_preset: the resolved view preset.

    Examples:
        >>> dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=64)
        >>> dm.setup("fit")
        >>> dm.train_class_counts
        [122, 94, 73, 56, 43, 33, 26, 20, 15, 12]
        >>> views, y, index = next(iter(dm.train_dataloader()))
        >>> [tuple(v.shape) for v in views]
        [(64, 1, 8, 8), (64, 1, 8, 8)]
    """

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str | os.PathLike | None = None,
        imbalance_factor: float = 100.0,
        profile: str = "exp",
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        clean_view: bool = False,
        image_size: int | None = None,
        augment: str = "auto",
        crop_min_scale: float | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        download: bool = False,
        include_unlabeled: bool = False,
        skip_corrupt: bool = False,
        drop_last: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        test_fraction: float = 0.3,
        val_split: str = "auto",
        eval_batch_size: int | None = None,
        feature_cache: bool = True,
        feature_cache_dir: str | os.PathLike | None = None,
        cached_views: int = 8,
    ):
        super().__init__()
        check_dataset_name(dataset)
        check_imbalance_factor(imbalance_factor)
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {list(AUGMENTS)}, got {augment!r}")
        if val_split not in VAL_SPLITS:
            raise ValueError(f"val_split must be one of {list(VAL_SPLITS)}, got {val_split!r}")
        _check_int("batch_size", batch_size, 1)
        _check_int("num_workers", num_workers, 0)
        _check_int("seed", seed, 0)
        if image_size is not None:
            _check_int("image_size", image_size, 1)
        if eval_batch_size is not None:
            _check_int("eval_batch_size", eval_batch_size, 1)
        _check_int("cached_views", cached_views, 2)
        if not (isinstance(test_fraction, float | int) and 0 < test_fraction < 1):
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        if crop_min_scale is not None and not 0 < crop_min_scale <= 1:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {crop_min_scale!r}")
        if download and dataset not in DOWNLOADABLE:
            raise ValueError(f"download=True is supported for {list(DOWNLOADABLE)}, "
                             f"not {dataset!r}")
        if include_unlabeled and dataset != "stl10":
            raise ValueError(f"include_unlabeled=True needs dataset='stl10', got {dataset!r}")
        self.save_hyperparameters()
        for name, value in (("data_dir", data_dir), ("feature_cache_dir", feature_cache_dir)):
            if value is not None:  # a str in checkpoints: torch.load(weights_only=True) refuses a Path
                self.hparams[name] = os.fspath(value)
        self.batch_size = batch_size  # an attribute, so Lightning's batch-size tuner can set it
        self.train_class_counts: list[int] = []
        self.val_class_counts: list[int] = []
        self.class_names: list[str] = []
        self.num_classes = 0
        self.num_channels = 0
        self.image_size: int | None = None
        self.train_indices: np.ndarray | None = None
        self.subset_hash = ""
        self.num_train_samples = 0
        self._source: SourceData | None = None
        self._restored_indices: np.ndarray | None = None
        self._resume_epoch = 0  # the training sampler's next epoch, from a checkpoint
        self._train_sampler: SeededEpochSampler | None = None
        self._feature_key: tuple[str, str] | None = None  # (weights, precision) of the served features
        self._image_datasets: tuple | None = None  # the image datasets the cached features replaced
        self._refresh_features: Callable[[], Any] | None = None
        #: the feature cache file in use (:meth:`serve_cached_features`), else ``None``
        self.feature_cache_path: Path | None = None

    # ---------------------------------------------------------------- setup

    def prepare_data(self) -> None:
        """Download CIFAR / STL-10 when ``download=True`` and the files are absent."""
        if self.hparams.download:
            download_source(self.hparams.dataset, self.hparams.data_dir,
                            include_unlabeled=self.hparams.include_unlabeled)

    def _load(self) -> SourceData:
        hp = self.hparams
        return load_source(hp.dataset, hp.data_dir, download=hp.download,
                           include_unlabeled=hp.include_unlabeled,
                           skip_corrupt=hp.skip_corrupt, test_fraction=hp.test_fraction)

    def setup(self, stage: str | None = None) -> None:
        """Read the source once and build the long-tailed subset, transforms and datasets."""
        if self._source is not None:
            return
        hp = self.hparams
        data = self._load()
        self.class_names = list(data.class_names)
        self.num_classes = len(self.class_names)
        self.num_channels = data.num_channels
        self.image_size = hp.image_size or min(data.native_size or 224, 224)
        self.mean = tuple(hp.mean) if hp.mean is not None else data.mean
        self.std = tuple(hp.std) if hp.std is not None else data.std
        for name, stats in (("mean", self.mean), ("std", self.std)):
            if len(stats) != self.num_channels:
                raise ValueError(f"{name} needs {self.num_channels} value(s) for dataset "
                                 f"{hp.dataset!r}, got {list(stats)}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {list(self.std)}")
        if hp.val_split == "val" and data.val_labels is None:
            raise ValueError(f"val_split='val' but dataset {hp.dataset!r} has no val split; "
                             f"use 'auto' or 'test'")
        self._source = data
        try:
            self._build_subset(self._select_indices(data))
        except Exception:
            self._source = None
            raise

    def _select_indices(self, data: SourceData) -> np.ndarray:
        hp = self.hparams
        if self._restored_indices is not None:
            return self._restored_indices
        if data.long_tailed or hp.profile == "none" or hp.imbalance_factor == 1 or not self.labelled:
            return np.arange(len(data.train_labels), dtype=np.int64)  # the split's own counts
        indices = long_tail_indices(data.train_labels, hp.imbalance_factor, hp.seed, hp.profile)
        counts = np.bincount(data.train_labels[indices], minlength=self.num_classes)
        if (counts == 0).any():
            n_max = int(counts.max())
            raise ValueError(
                f"imbalance_factor={hp.imbalance_factor} leaves classes "
                f"{np.flatnonzero(counts == 0).tolist()} of {hp.dataset!r} with no image "
                f"(n_max={n_max}); use imbalance_factor <= {n_max}")
        return indices

    def _build_subset(self, indices: np.ndarray) -> None:
        hp, data = self.hparams, self._source
        labels = data.train_labels
        if indices.size and (indices.min() < 0 or indices.max() >= len(labels)):
            raise ValueError(f"train indices must lie in [0, {len(labels)}) for "
                             f"{hp.dataset!r}")
        self.train_indices = np.asarray(indices, dtype=np.int64)
        self.subset_hash = subset_hash(self.train_indices)
        lt_labels = labels[self.train_indices]
        self.train_class_counts = (np.bincount(lt_labels, minlength=self.num_classes).tolist()
                                   if self.labelled else [])

        size, images = self.image_size, data.train_images
        square = isinstance(images, np.ndarray) and images.shape[1] == images.shape[2]
        clean = eval_transform(size, data.native_size if square else None)
        preset = resolve_preset(hp.augment, hp.dataset, size, self.num_channels,
                                hp.crop_min_scale)
        self.view_preset = preset
        normalize = Normalize(self.mean, self.std)
        self._view_collate = ViewCollate(BatchPhotometric(preset), normalize)
        self._eval_collate = EvalCollate(normalize)

        lt_images = image_store(data.train_images, self.train_indices)
        view_images, view_labels = lt_images, lt_labels
        if data.unlabeled_images is not None:
            view_images = ChainedImages(lt_images, LazyArrayImages(data.unlabeled_images))
            view_labels = np.concatenate([lt_labels, -np.ones(len(data.unlabeled_images),
                                                              dtype=np.int64)])
        self.train_dataset = ViewDataset(view_images, view_labels,
                                         geometric_transform(preset, size),
                                         clean if hp.clean_view else None)
        self.train_eval_dataset = EvalDataset(lt_images, lt_labels, clean, with_index=True)
        self.test_dataset = EvalDataset(image_store(data.test_images), data.test_labels, clean)
        use_val = data.val_labels is not None and hp.val_split != "test"
        self.val_dataset = (EvalDataset(image_store(data.val_images), data.val_labels, clean)
                            if use_val else self.test_dataset)
        val_labels = data.val_labels if use_val else data.test_labels
        self.val_class_counts = (np.bincount(val_labels, minlength=self.num_classes).tolist()
                                 if self.labelled else [])
        self.predict_dataset, self.predict_paths = self.test_dataset, None
        if isinstance(data.test_images, list):
            self.predict_paths = list(data.test_images)
        if not self.labelled:  # a folder to sort: predict every image of it, in path order
            paths = sorted([*[data.train_images[i] for i in self.train_indices], *data.test_images])
            self.predict_dataset = EvalDataset(image_store(paths), -np.ones(len(paths), dtype=np.int64), clean)
            self.predict_paths = paths
        self.num_train_samples = len(self.train_dataset)
        self.feature_cache_path, self._image_datasets, self._feature_key = None, None, None
        if self._refresh_features is not None:  # a checkpoint's subset replaced the cached one: cache that
            self._refresh_features()
        if self.labelled:
            self._warn_thin_classes(data)
        if self.batch_size > self.num_train_samples:
            raise ValueError(self._too_few_images_message(len(labels)))

    def _warn_thin_classes(self, data: SourceData) -> None:
        """Warn, naming them, about classes with a single training image and classes with no
        image in the evaluation split (their per-class scores are undefined)."""
        hp, names = self.hparams, self.class_names
        where = f"{hp.dataset!r}" + (f" in {hp.data_dir}" if hp.data_dir else "")
        single = [names[c] for c, n in enumerate(self.train_class_counts) if n == 1]
        if single:
            warnings.warn(f"{where}: class(es) {single} have a single training image; a cluster of "
                          f"one image is hardly learnable and its scores rest on one image",
                          UserWarning, stacklevel=3)
        for split, labels in (("val", data.val_labels), ("test", data.test_labels)):
            if labels is None:
                continue
            missing = [names[c] for c in np.flatnonzero(np.bincount(labels, minlength=len(names)) == 0)]
            if missing:
                warnings.warn(f"{where}: the {split} split has no image of class(es) {missing}; their "
                              f"held-out per-class scores are left out", UserWarning, stacklevel=3)

    def _too_few_images_message(self, full_size: int) -> str:
        """What to change when the train set is smaller than one batch: only advice that can
        be followed (a lower factor only when the long tail cut something)."""
        hp, n = self.hparams, self.num_train_samples
        where = f"{hp.dataset!r}" + (f" in {hp.data_dir}" if hp.data_dir else "")
        counts = ", ".join(f"{name}: {c}" for name, c in
                           zip(self.class_names, self.train_class_counts, strict=True))
        counts = f": {counts}" if counts else ""
        message = (f"batch_size={self.batch_size} is larger than the train set of {where} "
                   f"({n} images{counts}); set batch_size <= {n}")
        if n < full_size:
            message += (f", or keep more images: imbalance_factor: 1 (or profile: none) keeps "
                         f"all {full_size} training images, a lower imbalance_factor keeps more")
        return message

    # ---------------------------------------------------------------- loaders

    def _loader(self, dataset, batch_size: int, collate, sampler=None, shuffle=False,
                drop_last=False) -> DataLoader:
        hp = self.hparams
        collate = getattr(dataset, "collate", collate)  # cached features bring their own
        generator = torch.Generator().manual_seed(hp.seed)
        workers = self.num_workers
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle,
                          drop_last=drop_last, num_workers=workers, collate_fn=collate,
                          pin_memory=hp.pin_memory, generator=generator,
                          persistent_workers=hp.persistent_workers and workers > 0)

    @property
    def num_workers(self) -> int:
        """``num_workers``, at most the CPU cores this process may use (a config written for a
        large machine runs quietly on a small one)."""
        return min(self.hparams.num_workers, available_cores())

    def _require_setup(self) -> int:
        """The evaluation batch size; raises when setup() has not run yet."""
        if self._source is None:
            raise RuntimeError("call setup() before asking LongTailDataModule for a dataloader")
        return self.hparams.eval_batch_size or self.batch_size

    def train_dataloader(self) -> DataLoader:
        """``(views, y, index)`` batches in a seeded order (see the class docstring)."""
        self._require_setup()
        sampler = SeededEpochSampler(len(self.train_dataset), self.hparams.seed, augmentation_seeds=True)
        # Lightning makes a resumed run's first iterator (whose workers draw indices at once) before it
        # sets the sampler's epoch: start at the epoch the checkpoint recorded, so the order and the
        # views are the uninterrupted run's
        sampler.set_epoch(self._resume_epoch)
        self._train_sampler = sampler
        return self._loader(self.train_dataset, self.batch_size, self._view_collate,
                            sampler=sampler, drop_last=self.hparams.drop_last)

    def train_eval_dataloader(self, shuffle: bool = False) -> DataLoader:
        """``(x, y, index)`` over the labelled long-tailed train set, validation transform."""
        batch_size = self._require_setup()
        return self._loader(self.train_eval_dataset, batch_size, self._eval_collate,
                            shuffle=shuffle)

    def val_dataloader(self) -> DataLoader:
        """``(x, y)`` over the balanced validation split (the test split when none)."""
        batch_size = self._require_setup()
        return self._loader(self.val_dataset, batch_size, self._eval_collate)

    def test_dataloader(self) -> DataLoader:
        """``(x, y)`` over the balanced test split."""
        batch_size = self._require_setup()
        return self._loader(self.test_dataset, batch_size, self._eval_collate)

    def predict_dataloader(self) -> DataLoader:
        """``(x, y)``: the batches of :meth:`test_dataloader`, or, for an unlabelled folder
        (``images``), every image of it in the order of ``predict_paths``."""
        batch_size = self._require_setup()
        return self._loader(self.predict_dataset, batch_size, self._eval_collate)

    @property
    def labelled(self) -> bool:
        """Whether the source has labels (all but ``images``)."""
        return self.hparams.dataset != "images"

    #: the extra views this datamodule can serve, beyond the two augmented ones
    VIEWS = ("clean", "neighbor", "strong")

    def require_views(self, views) -> None:
        """Serve the extra views an objective needs; ``DebiasedClusterModule`` calls this at
        ``setup`` with what its terms declare, so a method config needs no data flag.
        ``"clean"`` turns ``clean_view`` on; ``"neighbor"`` and ``"strong"`` are served once
        :meth:`set_neighbors` / :meth:`serve_strong_view` switch them on (SCAN, METHOD.md 2.6).

        A neighbour or strong view turns ``persistent_workers`` off: persistent workers keep
        their copy of the dataset and would not see a view switched on later.

        Raises:
            ValueError: a view this datamodule cannot serve.
        """
        unsupported = [v for v in views if v not in self.VIEWS]
        if unsupported:
            raise ValueError(f"the objective needs the view(s) {unsupported}; LongTailDataModule serves "
                             f"{list(self.VIEWS)}")
        hp = self.hparams
        if {"neighbor", "strong"} & set(views) and hp.persistent_workers and hp.num_workers > 0:
            # views switched on during training reach new workers only: start them each epoch
            hp.persistent_workers = False
            rank_zero_info("persistent_workers turned off: the objective switches views on during training "
                           "(nearest neighbours, the strong view), which each epoch's new workers see")
        if "clean" in views and not hp.clean_view:
            hp.clean_view = True
            if self.feature_cache_path is not None:
                self.train_dataset.clean = self._clean_features
            elif getattr(self, "train_dataset", None) is not None:
                self.train_dataset.clean = self.train_eval_dataset.transform

    def set_neighbors(self, neighbors) -> None:
        """Serve each training image with an augmented view of one of its nearest neighbours,
        drawn per image and epoch from row ``i`` of ``neighbors`` ``(N, k)``, indices into the
        long-tailed training set (the order of :meth:`train_eval_dataloader`); rows of ``-1``
        are not mined yet. The table lives in shared memory and a later call of the same shape
        fills it in place, so loader workers made before it see it."""
        self._require_setup()
        table = torch.as_tensor(neighbors).detach().to("cpu", torch.int64)
        n = len(self.train_eval_dataset)
        if table.ndim != 2 or table.shape[0] != n or table.shape[1] < 1 or table.min() < -1 or table.max() >= n:
            raise ValueError(f"neighbors must be a ({n}, k) table of indices in [0, {n}) (or -1: not mined), "
                             f"got shape {tuple(table.shape)}")
        current = self.train_dataset.neighbors
        if current is not None and current.shape == table.shape:
            current.copy_(table)
        else:
            self.train_dataset.neighbors = table.clone().share_memory_()

    def serve_strong_view(self, on: bool = True, from_epoch: int = 0) -> None:
        """Serve (or stop serving) the strong view, RandAugment + cutout as SCAN's
        self-labelling, from epoch ``from_epoch`` on."""
        self._require_setup()
        if on and self.feature_cache_path is not None:
            raise ValueError("the strong view (SCAN's self-labelling) augments images, but this run trains on a "
                             "frozen encoder's cached features: set feature_cache: false to train on images")
        self.train_dataset.strong = strong_transform(self.view_preset, self.image_size) if on else None
        self.train_dataset.strong_from_epoch = int(from_epoch)

    @staticmethod
    def _info(message: str) -> None:
        rank_zero_info(message)

    # ---------------------------------------------------------------- checkpoint

    def state_dict(self) -> dict[str, Any]:
        """The training subset, recorded in every checkpoint (indices and their hash)."""
        if self.train_indices is None:
            return {}
        state = {"dataset": self.hparams.dataset, "subset_hash": self.subset_hash,
                 "train_indices": torch.from_numpy(self.train_indices.copy())}
        if self._train_sampler is not None:  # the next epoch it will draw (it counts its iterations)
            state["sampler_epoch"] = self._train_sampler.epoch
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Reuse a checkpoint's subset; warn when it differs from what the rule gives now."""
        if not state_dict or "train_indices" not in state_dict:
            return
        self._resume_epoch = int(state_dict.get("sampler_epoch", 0))
        indices = np.asarray(torch.as_tensor(state_dict["train_indices"]).numpy(),
                             dtype=np.int64)
        restored = subset_hash(indices)
        if self._source is None:
            self._restored_indices = indices
            return
        if restored != self.subset_hash:
            warnings.warn(f"the checkpoint's train subset (hash {restored}) differs from the "
                          f"one built now ({self.subset_hash}); using the checkpoint's",
                          UserWarning, stacklevel=2)
            self._build_subset(indices)
