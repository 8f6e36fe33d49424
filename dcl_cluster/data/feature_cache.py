"""Frozen-encoder feature cache: with a frozen encoder the features of every image are computed
once and stored on disk, keyed by the data and the weights, so the clustering heads train on
them in seconds.

A frozen encoder (``trainable_blocks=0``: linear clustering heads on DINO features, or any
backbone whose parameters all have ``requires_grad=False``) maps an image to the same features
every epoch, except for the random augmentation. The cache holds, per training image, the
features of ``cached_views`` augmented views (drawn once by the datamodule's own view pipeline,
seeded) and of the un-augmented image, and the features of the evaluation splits. Training then
draws two different cached views of an image per epoch (seeded by the same per-image key as
the image views), so the contrastive and clustering terms keep their two-view form.

The cache file is ``<cache_dir>/features-<key>.pt``; the key hashes everything the features
depend on: the images (array bytes, or file paths with sizes and modification times), the
long-tailed subset, the image size, normalisation and view preset, the seed, the number of
cached views, the precision and the encoder's class and weights. A changed image or weight
gives a new file; nothing is ever overwritten in place (files are written whole, then renamed).
Several processes (DDP) build it together: each encodes every ``world``-th batch of every split
(the batches one process encodes, so the same views) and writes its share beside the file; rank
0 assembles the shares into the file one process writes, so any number of processes reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

CACHE_FORMAT = 1
#: the storage dtype of cached features (half the disk and memory of float32; the heads train in float32)
STORE_DTYPE = torch.float16


def default_cache_dir() -> Path:
    """``$DCL_CLUSTER_CACHE/features``, else ``~/.cache/dcl_cluster/features``."""
    root = os.environ.get("DCL_CLUSTER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "dcl_cluster") / "features"


def encoder_frozen(backbone: nn.Module | None) -> bool:
    """Whether ``backbone`` is wholly frozen: ``trainable_blocks == 0``, or parameters that all
    have ``requires_grad=False``."""
    if backbone is None:
        return False
    if getattr(backbone, "trainable_blocks", None) == 0:
        return True
    params = list(backbone.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def weights_fingerprint(module: nn.Module) -> str:
    """A hash of ``module``'s architecture (class and ``repr``: layers, activations) and every
    tensor of its ``state_dict`` (names, dtypes, shapes, values): equal for equal encoders,
    different when one value differs."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(module).__module__}.{type(module).__qualname__}\n{module!r}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def images_fingerprint(images: Any) -> str:
    """A hash of a split's images: an array's bytes; a list of files' paths, sizes and
    modification times; a memory map's file, size and time; ``None`` for no split."""
    digest = hashlib.blake2b(digest_size=16)
    if images is None:
        digest.update(b"none")
    elif isinstance(images, np.memmap) and images.filename:
        stat = os.stat(images.filename)
        digest.update(f"memmap|{images.filename}|{stat.st_size}|{stat.st_mtime_ns}|{images.shape}".encode())
    elif isinstance(images, np.ndarray):
        digest.update(f"array|{images.dtype}|{images.shape}".encode())
        digest.update(np.ascontiguousarray(images).data)
    elif isinstance(images, list):
        for path in images:
            stat = os.stat(path)
            digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    else:
        for i in range(len(images)):
            digest.update(np.ascontiguousarray(np.asarray(images[i])).data)
    return digest.hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    """24 hex digits naming one cache file: a hash of ``parts`` (JSON, keys sorted)."""
    text = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@torch.no_grad()
def encode_shard(encode: Callable[[Tensor], Tensor], loader: DataLoader, copies: int = 1) -> tuple[Tensor, Tensor]:
    """``(rows, features)`` of the batches a loader yields (all of a split, or one rank's share):
    the rows' indices ``(R,)`` and their features ``(R, copies, F)``.

    The loader yields ``(x, y, index)`` (one copy) or ``(views, y, index)`` whose first two
    views are copies ``2e`` and ``2e + 1`` of epoch ``e``; ``copies`` is what one pass fills
    (1 or 2). A batch is stored in float16 (:data:`STORE_DTYPE`) where it fits, else in
    float32: a decision per batch, so the stored values do not depend on which process encoded
    which batches. No batch: ``(0,)`` rows and ``(0, copies, 0)`` features."""
    rows, feats = [], []
    for batch in loader:
        xs, index = batch[0], batch[2]
        if isinstance(xs, Mapping):
            xs = [xs["a"], xs["b"]]
        xs = [xs] if isinstance(xs, Tensor) else list(xs)[:copies]
        f = torch.stack([encode(x).float().flatten(1).cpu() for x in xs], dim=1)  # (B, copies, F)
        fits = float(f.abs().max()) <= torch.finfo(STORE_DTYPE).max  # beyond float16's range: keep it whole
        feats.append(f.to(STORE_DTYPE) if fits else f)
        rows.append(torch.as_tensor(index, dtype=torch.long))
    if not rows:
        return torch.empty(0, dtype=torch.long), torch.empty(0, copies, 0, dtype=STORE_DTYPE)
    dtype = STORE_DTYPE if all(f.dtype == STORE_DTYPE for f in feats) else torch.float32
    return torch.cat(rows), torch.cat([f.to(dtype) for f in feats])


def scatter_rows(parts: list[tuple[Tensor, Tensor]], num_rows: int) -> Tensor:
    """``(num_rows, copies, F)`` from :func:`encode_shard`'s ``(rows, features)`` parts (one per
    process), each row at its index; float16 unless a part is float32. Rows no part holds raise
    (a cache must not hold zeros)."""
    parts = [(rows, f) for rows, f in parts if len(rows)]
    seen = torch.zeros(num_rows, dtype=torch.bool)
    if not parts:
        raise RuntimeError(f"the feature cache's loader left {num_rows} of {num_rows} rows unseen")
    dtype = STORE_DTYPE if all(f.dtype == STORE_DTYPE for _, f in parts) else torch.float32
    out = torch.zeros(num_rows, *parts[0][1].shape[1:], dtype=dtype)
    for rows, f in parts:
        out[rows] = f.to(dtype)
        seen[rows] = True
    if not bool(seen.all()):
        raise RuntimeError(f"the feature cache's loader left {int((~seen).sum())} of {num_rows} rows unseen")
    return out


def encode_rows(encode: Callable[[Tensor], Tensor], loader: DataLoader, num_rows: int,
                copies: int = 1) -> Tensor:
    """``(num_rows, copies, F)`` features of a loader's batches, each row at its batch index
    (:func:`encode_shard` then :func:`scatter_rows`). Rows the loader never yields raise."""
    return scatter_rows([encode_shard(encode, loader, copies)], num_rows)


def read_cache(path: Path) -> dict[str, Tensor]:
    """The tensors of the cache file at ``path`` (memory-mapped), or ``ValueError`` naming a damaged one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - a damaged file is named, never silently replaced
        raise ValueError(f"the feature cache {path} cannot be read ({type(err).__name__}: "
                         f"{(str(err).splitlines() or [''])[0]}); delete it "
                         "to compute the features again") from None


def check_writable(folder: Path) -> None:
    """Make ``folder`` and write a probe file in it, or raise ``ValueError`` naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ValueError(f"the feature cache folder {folder} cannot be written ({err.strerror}): set "
                         "feature_cache_dir to a writable folder, or feature_cache: false") from None


def load_or_build(path: Path, build: Callable[[], dict[str, Tensor]]) -> tuple[dict[str, Tensor], bool]:
    """The cache file at ``path``, or ``build()`` written there (whole, then renamed, so an
    interrupted write leaves no half file). Returns ``(tensors, built)``."""
    if path.exists():
        return read_cache(path), False
    check_writable(path.parent)  # before the encoder's work: a folder that cannot be written is said at once
    tensors = build()
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(tensors, tmp)
    os.replace(tmp, path)
    return tensors, True


def build_sharded(path: Path, build_shard: Callable[[], dict[str, Any]],
                  assemble: Callable[[list[dict[str, Any]]], dict[str, Tensor]], rank: int, world: int,
                  any_rank: Callable[[bool], bool]) -> tuple[dict[str, Tensor], bool]:
    """:func:`load_or_build` across ``world`` processes that each encode a share: every rank
    runs ``build_shard()`` (its batches of every split) and writes it beside ``path``
    (``<name>.part<rank>of<world>``); once all have, rank 0 ``assemble``s the parts into the one
    cache file (the same file one process writes, so any number of processes reads it) and
    removes them. ``any_rank(flag)`` is a collective every rank calls at the same points: whether
    any rank passed ``True`` (a failure on one rank is raised on every rank; none waits for it).
    Returns ``(tensors, built)``."""
    if not any_rank(not path.exists()):  # every rank sees the file: nobody builds
        return read_cache(path), False
    _check_shared_folder(path, rank, any_rank)
    part_path = path.with_name(f"{path.name}.part{rank}of{world}")
    error: Exception | None = None
    try:
        check_writable(path.parent)  # before the encoder's work
        part = build_shard()
        tmp = part_path.with_name(f"{part_path.name}.{uuid.uuid4().hex}.tmp")
        torch.save(part, tmp)
        os.replace(tmp, part_path)
    except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
        error = err
    if any_rank(error is not None):
        part_path.unlink(missing_ok=True)
        raise error or RuntimeError("another process failed to encode its share of the feature cache")
    if rank == 0:
        try:
            names = [path.with_name(f"{path.name}.part{r}of{world}") for r in range(world)]
            parts = [torch.load(name, map_location="cpu", weights_only=True) for name in names]
            load_or_build(path, lambda: assemble(parts))
            for name in names:
                name.unlink()
        except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
            error = err
    if any_rank(error is not None):
        raise error or RuntimeError("rank 0 could not assemble the feature cache from the processes' shares")
    if any_rank(not path.exists()):
        raise ValueError(f"a process does not see the feature cache {path} that rank 0 wrote: the processes "
                         "must share feature_cache_dir (or set feature_cache: false)")
    return read_cache(path), True


def _check_shared_folder(path: Path, rank: int, any_rank: Callable[[bool], bool]) -> None:
    """Before any rank encodes: rank 0 leaves a mark beside ``path`` and every rank looks for
    it, so processes whose cache folders differ (a node-local ``~/.cache`` on several nodes)
    get one clear error at once instead of a missing share after the work."""
    mark = path.with_name(f"{path.name}.rank0-mark")
    error: Exception | None = None
    if rank == 0:
        try:
            check_writable(path.parent)
            mark.touch()
        except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
            error = err
    if any_rank(error is not None):
        raise error or ValueError(f"the feature cache folder {path.parent} cannot be written by rank 0")
    unseen = any_rank(not mark.exists())  # a collective: every rank has looked once it returns
    if rank == 0:
        mark.unlink(missing_ok=True)
    if unseen:
        raise ValueError(f"the processes do not share the feature cache folder {path.parent} (a process does not "
                         "see what rank 0 writes there): set feature_cache_dir to a folder every process sees, "
                         "or feature_cache: false")


class FeatureRows(Dataset):
    """``i -> (features, y)`` or ``(features, y, i)``: the evaluation splits, cached."""

    def __init__(self, features: Tensor, labels: np.ndarray, with_index: bool = False):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.features, self.labels, self.with_index = features, np.asarray(labels, dtype=np.int64), with_index

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x, y = self.features[i], int(self.labels[i])
        return (x, y, i) if self.with_index else (x, y)

    @staticmethod
    def collate(samples):
        fields = list(zip(*samples, strict=True))
        return (torch.stack(fields[0]).float(), *[torch.as_tensor(f, dtype=torch.int64) for f in fields[1:]])


class _Collated:
    """A batch :meth:`CachedViewDataset.__getitems__` already put together."""

    def __init__(self, batch):
        self.batch = batch


class CachedViewDataset(Dataset):
    """``(i, seed, epoch) -> (views, y, i, seed)`` as :class:`~dcl_cluster.data.datasets.ViewDataset`,
    from cached features: two different cached views of image ``i`` drawn with ``seed``
    (``"clean"``: its un-augmented features; ``"neighbor"``: a cached view of a neighbour once
    :attr:`neighbors` has its row). A strong view cannot be cached: asking for one is an error.
    """

    def __init__(self, views: Tensor, labels: np.ndarray, clean: Tensor | None = None):
        if views.ndim != 3 or views.shape[1] < 2:
            raise ValueError(f"cached views must be (N, V >= 2, F), got {tuple(views.shape)}")
        if len(views) != len(labels):
            raise ValueError(f"{len(views)} cached images but {len(labels)} labels")
        self.views, self.labels, self.clean = views, np.asarray(labels, dtype=np.int64), clean
        self.neighbors: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def _key(key) -> tuple[int, Any, int]:
        """Row, seed as given and the seed the draw uses: ``key`` is ``(i, seed, epoch)`` or a
        plain ``i`` (a seed from the global random state)."""
        i, seed, _ = (tuple(key) + (None,))[:3] if isinstance(key, tuple) else (key, None, None)
        draw = int(seed) % 2**63 if seed is not None else int(torch.randint(2**62, ()))  # fits an int64
        return int(i), seed, draw

    def pairs(self, seeds: Tensor) -> Tensor:
        """The two different cached views ``(B, 2)`` that per-row seeds ``(B,)`` (non-negative
        int64) pick: the first ``f = seed % V``, the second ``(f + 1 + (seed // V) % (V - 1)) % V``
        (one of the other ``V - 1``); every ordered pair equally likely for uniform seeds, in a
        few array operations."""
        v = self.views.shape[1]
        first = seeds % v
        return torch.stack([first, (first + 1 + seeds // v % (v - 1)) % v], dim=1)

    def __getitem__(self, key):
        i, seed, draw = self._key(key)
        pick = self.pairs(torch.tensor([draw]))[0].tolist()
        views = [self.views[i, pick[0]], self.views[i, pick[1]]]
        if self.clean is not None:
            views.append(self.clean[i])
        table = self.neighbors
        if table is not None and i < len(table) and int(table[i, 0]) >= 0:
            g = torch.Generator().manual_seed(draw)
            row = table[i]
            j = int(row[int(torch.randint(len(row), (), generator=g))])
            copy = int(torch.randint(self.views.shape[1], (), generator=g))
            named = {"a": views[0], "b": views[1], **({"clean": views[2]} if len(views) > 2 else {})}
            views = {**named, "neighbor": self.views[j, copy]}
        return views, int(self.labels[i]), i, seed

    def __getitems__(self, keys) -> _Collated | list:
        """A whole batch at once (the DataLoader's batched fetch): the same two views per row as
        :meth:`__getitem__` draws, gathered with one index per view instead of a tensor per
        row (per-row indexing and stacking cost more than the head's step)."""
        if self.neighbors is not None:  # the neighbour draw: row by row, as it is
            return [self[key] for key in keys]
        rows = [self._key(key) for key in keys]
        index = torch.tensor([i for i, _, _ in rows])  # (B,)
        pick = self.pairs(torch.tensor([draw for _, _, draw in rows]))  # (B, 2)
        views = [self.views[index, pick[:, 0]].float(), self.views[index, pick[:, 1]].float()]
        if self.clean is not None:
            views.append(self.clean[index].float())
        return _Collated((views, torch.as_tensor(self.labels[index.numpy()], dtype=torch.int64), index))

    @staticmethod
    def collate(samples):
        if isinstance(samples, _Collated):
            return samples.batch
        views, ys, idx, _ = zip(*samples, strict=True)
        if isinstance(views[0], dict):
            batch = {k: torch.stack([v[k] for v in views]).float() for k in views[0]}
        else:
            batch = [torch.stack([v[k] for v in views]).float() for k in range(len(views[0]))]
        return batch, torch.as_tensor(ys, dtype=torch.int64), torch.as_tensor(idx, dtype=torch.int64)
