"""Where the images come from: one reader per supported dataset layout, no Lightning.

Every reader returns a :class:`SourceData`: the full train split (before the long tail), the
held-out splits, class names and normalisation. Array sources (``digits``, ``npz``,
``cifar10``, ``cifar100``, ``stl10``) hold uint8 ``(N, H, W, C)`` arrays; folder sources
(``image_folder``, ``imagenet_lt``, in :mod:`dcl_cluster.data.folders`) hold file paths.
Nothing is downloaded unless ``download=True``; a missing layout raises one
``FileNotFoundError`` that names the expected files.
"""

from __future__ import annotations

import pickle
import socket
import sys
import tarfile
from pathlib import Path

import numpy as np

from dcl_cluster.data import folders
from dcl_cluster.data.long_tail import stratified_split
from dcl_cluster.data.source_data import (  # re-exported: importable from here as before
    DATASETS,  # noqa: F401 (re-exported)
    DOWNLOADABLE,
    HELD_OUT_SPLIT_SEED,
    LAYOUTS,
    SourceData,
    check_dataset_name,
    missing_layout,
)
from dcl_cluster.data.transforms import NORMALIZATION

DOWNLOAD_TIMEOUT_S = 60.0
"""Seconds a download may wait for the server's next bytes before it fails."""


class DownloadError(OSError):
    """A download that failed or stalled; the message names the URL, the folder and how to
    place the files by hand."""


def _torchvision_dataset(name: str):
    from torchvision import datasets

    return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "stl10": datasets.STL10}[name]


def download_with_torchvision(name: str, data_dir: Path, **kwargs) -> None:
    """Let torchvision download and unpack ``name`` into ``data_dir``, saying so first, with
    :data:`DOWNLOAD_TIMEOUT_S` of silence allowed; any failure is one :class:`DownloadError`."""
    dataset = _torchvision_dataset(name)
    print(f"downloading {name} from {dataset.url} into {data_dir} ...", file=sys.stderr, flush=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torchvision's urlopen calls take no timeout
    try:
        dataset(str(data_dir), download=True, **kwargs)
    except (OSError, RuntimeError, EOFError, tarfile.TarError) as err:  # URLError, timeouts, bad md5
        reason = (f"no answer for {DOWNLOAD_TIMEOUT_S:g} s" if isinstance(err, TimeoutError)
                  or "timed out" in str(err) else f"{type(err).__name__}: {getattr(err, 'reason', err)}")
        raise DownloadError(
            f"could not download {name} from {dataset.url} into {str(data_dir)!r} ({reason}). To place "
            f"the files by hand: fetch {dataset.url} (on any machine with network), unpack it into "
            f"{str(data_dir)!r} so that it holds {LAYOUTS[name]}, and run again without "
            f"download=True") from None
    finally:
        socket.setdefaulttimeout(previous)


def channel_stats(images: np.ndarray, max_images: int = 10_000) -> tuple[tuple, tuple]:
    """Per-channel mean and std in [0, 1] units of uint8 ``(N, H, W, C)`` images.

    Uses at most ``max_images`` evenly spaced images, in chunks, so it is cheap on 50k.
    """
    step = max(1, len(images) // max_images)
    total = np.zeros(images.shape[-1])
    total_sq = np.zeros(images.shape[-1])
    count = 0
    for start in range(0, len(images), 1000 * step):
        chunk = images[start:start + 1000 * step:step].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 1, 2))
        total_sq += (chunk**2).sum(axis=(0, 1, 2))
        count += chunk.shape[0] * chunk.shape[1] * chunk.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _as_labels(y, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(f"{what} must be a 1-D array of integer labels >= 0, "
                         f"got shape {y.shape} dtype {y.dtype}")
    return y.astype(np.int64)


def _as_images(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (0..255), got dtype {x.dtype}; convert with "
                         f"np.clip(x * 255, 0, 255).round().astype(np.uint8) for floats in [0, 1]")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"{what} must be N x H x W x C with C in (1, 3) (or N x H x W), "
                         f"got shape {x.shape}")
    return x


def load_digits_source(test_fraction: float = 0.3) -> SourceData:
    """scikit-learn's digits: 1797 grey 8x8 images, scaled 0..16 -> 0..255, one channel.

    The held-out split is stratified with the fixed seed ``HELD_OUT_SPLIT_SEED``.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]        # (N, 8, 8, 1)
    y = d.target.astype(np.int64)
    train, test = stratified_split(y, test_fraction, seed=HELD_OUT_SPLIT_SEED)
    mean, std = channel_stats(x[train])
    return SourceData("digits", x[train], y[train], x[test], y[test],
                      [str(c) for c in range(10)], 1, 8, mean, std)


def _find_npz(data_dir: Path) -> Path:
    if data_dir.is_file() and data_dir.suffix == ".npz":
        return data_dir
    files = sorted(data_dir.glob("*.npz")) if data_dir.is_dir() else []
    if len(files) != 1:
        detail = "no .npz file" if not files else f"several .npz files: {[f.name for f in files]}"
        err = missing_layout("npz", data_dir, detail + "; pass the file itself as data_dir")
        raise err
    return files[0]


def load_npz_source(data_dir: Path, test_fraction: float = 0.3) -> SourceData:
    """A ``.npz`` with ``x_train, y_train, x_test, y_test`` (or ``x, y``, split stratified)."""
    path = _find_npz(data_dir)
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            x_tr, y_tr = _as_images(f["x_train"], "x_train"), _as_labels(f["y_train"], "y_train")
            x_te, y_te = _as_images(f["x_test"], "x_test"), _as_labels(f["y_test"], "y_test")
        elif {"x", "y"} <= keys:
            x, y = _as_images(f["x"], "x"), _as_labels(f["y"], "y")
            if len(x) != len(y):
                raise ValueError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
            train, test = stratified_split(y, test_fraction, seed=HELD_OUT_SPLIT_SEED)
            x_tr, y_tr, x_te, y_te = x[train], y[train], x[test], y[test]
        else:
            raise ValueError(f"{path} has keys {sorted(keys)}; expected x_train, y_train, "
                             f"x_test, y_test (or x, y)")
        names = [str(c) for c in f["class_names"]] if "class_names" in keys else None
    for xs, ys, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if len(xs) != len(ys):
            raise ValueError(f"{path}: x_{split} has {len(xs)} images, y_{split} {len(ys)} labels")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"{path}: train images {x_tr.shape[1:]} and test images "
                         f"{x_te.shape[1:]} differ in shape")
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    names = names or [str(c) for c in range(num_classes)]
    if len(names) < num_classes:
        raise ValueError(f"{path}: {len(names)} class_names for labels up to {num_classes - 1}")
    mean, std = channel_stats(x_tr)
    return SourceData("npz", x_tr, y_tr, x_te, y_te, names, x_tr.shape[-1],
                      min(x_tr.shape[1:3]), mean, std)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar_dir(name: str, data_dir: Path, download: bool) -> Path:
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
             if name == "cifar10" else ["train", "test", "meta"])
    for root in (data_dir / folder, data_dir):
        if all((root / f).is_file() for f in files):
            return root
    if download:
        download_with_torchvision(name, data_dir, train=True)
        return data_dir / folder
    missing = [f for f in files if not (data_dir / folder / f).is_file()]
    raise missing_layout(name, data_dir, f"missing {folder}/{missing[0]}")


def load_cifar_source(name: str, data_dir: Path, download: bool = False) -> SourceData:
    """CIFAR-10 / CIFAR-100 from torchvision's pickled batches (fine labels for CIFAR-100)."""
    root = _cifar_dir(name, data_dir, download)
    if name == "cifar10":
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, meta, label_key, names_key = ["test_batch"], "batches.meta", "labels", \
            "label_names"
    else:
        train_files, test_files, meta = ["train"], ["test"], "meta"
        label_key, names_key = "fine_labels", "fine_label_names"

    def read(files):
        batches = [_unpickle(root / f) for f in files]
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y          # (N, 32, 32, 3)

    x_tr, y_tr = read(train_files)
    x_te, y_te = read(test_files)
    names = [str(n) for n in _unpickle(root / meta)[names_key]]
    mean, std = NORMALIZATION[name]
    return SourceData(name, np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te,
                      names, 3, 32, mean, std)


class STL10Unlabeled:
    """Lazily memory-mapped STL-10 ``unlabeled_X.bin``: ``(N, 96, 96, 3)`` uint8 on demand.

    Pickles without its data (DataLoader workers reopen the file), so the 2.7 GB split
    never passes through memory at once.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.count = self.path.stat().st_size // (3 * 96 * 96)
        self._data = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        if self._data is None:
            raw = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, 3, 96, 96))
            self._data = raw.transpose(0, 3, 2, 1)            # stored column-major -> (N, H, W, C)
        return np.ascontiguousarray(self._data[i])

    def __getstate__(self):
        return {"path": self.path, "count": self.count, "_data": None}


def load_stl10_source(data_dir: Path, download: bool = False,
                      include_unlabeled: bool = False) -> SourceData:
    """STL-10 from torchvision's ``stl10_binary`` files (labels 1..10 become 0..9)."""
    needed = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
    root = next((r for r in (data_dir / "stl10_binary", data_dir)
                 if all((r / f).is_file() for f in needed)), None)
    if root is None and download:
        download_with_torchvision("stl10", data_dir,
                                  split="train+unlabeled" if include_unlabeled else "train")
        root = data_dir / "stl10_binary"
    if root is None:
        missing = next(f for f in needed if not (data_dir / "stl10_binary" / f).is_file())
        raise missing_layout("stl10", data_dir, f"missing stl10_binary/{missing}")

    def read(split):
        x = np.fromfile(root / f"{split}_X.bin", dtype=np.uint8).reshape(-1, 3, 96, 96)
        y = np.fromfile(root / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
        if len(x) != len(y):
            raise ValueError(f"{root}/{split}_X.bin has {len(x)} images, {split}_y.bin "
                             f"{len(y)} labels")
        return np.ascontiguousarray(x.transpose(0, 3, 2, 1)), y           # (N, 96, 96, 3)

    x_tr, y_tr = read("train")
    x_te, y_te = read("test")
    names_file = root / "class_names.txt"
    names = ([n.strip() for n in names_file.read_text().splitlines() if n.strip()]
             if names_file.is_file()
             else [str(c) for c in range(int(y_tr.max()) + 1)])
    unlabeled = None
    if include_unlabeled:
        if not (root / "unlabeled_X.bin").is_file():
            raise missing_layout("stl10", data_dir, "include_unlabeled=True needs "
                                 "stl10_binary/unlabeled_X.bin")
        unlabeled = STL10Unlabeled(root / "unlabeled_X.bin")
    mean, std = NORMALIZATION["stl10"]
    return SourceData("stl10", x_tr, y_tr, x_te, y_te, names, 3, 96, mean, std,
                      unlabeled_images=unlabeled)


def download_source(name: str, data_dir: str | Path | None,
                    include_unlabeled: bool = False) -> None:
    """Download a downloadable source (CIFAR-10/100, STL-10) with torchvision if absent."""
    if name not in DOWNLOADABLE:
        raise ValueError(f"download=True is supported for {list(DOWNLOADABLE)}, not {name!r}")
    if data_dir is None:
        raise missing_layout(name, None, "data_dir is not set")
    data_dir = Path(data_dir).expanduser()
    if name == "stl10":
        needed = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
        needed += ["unlabeled_X.bin"] if include_unlabeled else []
        if not all((data_dir / "stl10_binary" / f).is_file() for f in needed):
            download_with_torchvision("stl10", data_dir, split="train")
    else:
        _cifar_dir(name, data_dir, download=True)


def load_source(name: str, data_dir: str | Path | None = None, *, download: bool = False,
                include_unlabeled: bool = False, skip_corrupt: bool = False,
                test_fraction: float = 0.3) -> SourceData:
    """Read a dataset by name (one of ``DATASETS``) from its on-disk layout.

    Args:
        name: source name.
        data_dir: root of the layout (ignored by ``"digits"``).
        download: let torchvision download CIFAR / STL-10 when the files are missing.
        include_unlabeled: STL-10: also map the 100k unlabelled images.
        skip_corrupt: folder sources: drop unreadable images with a warning.
        test_fraction: held-out share where the source has no test split.

    Examples:
        >>> data = load_source("digits")
        >>> data.num_channels, data.native_size, len(data.class_names)
        (1, 8, 10)
    """
    check_dataset_name(name)
    if name == "digits":
        return load_digits_source(test_fraction)
    if data_dir is None:
        raise missing_layout(name, None, "data_dir is not set")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.exists() and not download:
        raise missing_layout(name, data_dir, "the directory does not exist")
    if name in ("cifar10", "cifar100"):
        return load_cifar_source(name, data_dir, download)
    if name == "stl10":
        return load_stl10_source(data_dir, download, include_unlabeled)
    if name == "npz":
        return load_npz_source(data_dir, test_fraction)
    if name == "image_folder":
        return folders.load_image_folder(data_dir, skip_corrupt, test_fraction)
    if name == "images":
        return folders.load_unlabelled_images(data_dir, skip_corrupt, test_fraction)
    return folders.load_imagenet_lt(data_dir, skip_corrupt)
