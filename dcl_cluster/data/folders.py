"""Image-file sources (a user's class folders, a folder of unlabelled images at any depth,
ImageNet-LT split files) and safe image reading.

Images are decoded with Pillow into uint8 ``(C, H, W)`` tensors when a batch needs them. An
unreadable file raises :class:`UnreadableImageError` naming it; with ``skip_corrupt=True``
every file is decoded once up front and the unreadable ones are dropped with one warning
that lists them (before the long tail is applied, so the counts stay exact).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dcl_cluster.data.long_tail import stratified_split
from dcl_cluster.data.source_data import HELD_OUT_SPLIT_SEED, SourceData, missing_layout
from dcl_cluster.data.transforms import NORMALIZATION

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class UnreadableImageError(OSError):
    """An image file that Pillow cannot open or decode; the message names the file."""


def read_image_file(path: str) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor ``(3, H, W)``.

    Raises:
        UnreadableImageError: missing, truncated or not an image, with the path.
    """
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise UnreadableImageError(
            f"cannot read image file {str(path)!r} ({type(err).__name__}: {err}); pass "
            f"skip_corrupt=True to skip unreadable files with a warning") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)                      # (3, H, W)


def _readable(path: str) -> bool:
    try:
        read_image_file(path)
    except UnreadableImageError:
        return False
    return True


def drop_unreadable(paths: list[str], labels: np.ndarray, what: str) -> tuple[list[str], np.ndarray]:
    """Decode every file once; return the readable ones, warning with the list of the rest."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        ok = np.fromiter(pool.map(_readable, paths), dtype=bool, count=len(paths))
    bad = [p for p, good in zip(paths, ok, strict=True) if not good]
    if bad:
        shown = ", ".join(bad[:20]) + (f", ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        warnings.warn(f"skip_corrupt=True: skipped {len(bad)} unreadable image file(s) in the "
                      f"{what} split: {shown}", UserWarning, stacklevel=3)
    return [p for p, good in zip(paths, ok, strict=True) if good], labels[ok]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _first_side(paths: list[str]) -> int:
    try:
        with Image.open(paths[0]) as im:
            return min(im.size)
    except Exception as err:
        raise UnreadableImageError(f"cannot read image file {paths[0]!r} ({err}); pass "
                                   f"skip_corrupt=True to skip unreadable files") from err


def _read_class_split(root: Path, class_index: dict[str, int] | None):
    """Paths and labels of ``root/<class>/*``; a new class index when ``class_index`` is None."""
    is_train = class_index is None
    if class_index is None:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        class_index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for d in sorted(d for d in root.iterdir() if d.is_dir()):
        if d.name not in class_index:
            raise ValueError(f"{d} is a class folder not present in the train split; the "
                             f"train classes are {sorted(class_index)}")
        files = _image_files(d)
        if not files and is_train:
            raise ValueError(f"class folder {d} has no images (extensions {IMAGE_EXTENSIONS})")
        paths += [str(f) for f in files]
        labels += [class_index[d.name]] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), class_index


def load_image_folder(data_dir: Path, skip_corrupt: bool = False,
                      test_fraction: float = 0.3) -> SourceData:
    """``data_dir/train/<class>/*`` plus ``val/`` and/or ``test/`` with the same class names.

    Classes are the sorted names of the train sub-folders (torchvision's ImageFolder
    order). Without ``val/`` and ``test/`` a stratified ``test_fraction`` of train is held out.
    """
    train_dir = data_dir / "train"
    if not train_dir.is_dir() or not any(d.is_dir() for d in train_dir.iterdir()):
        raise missing_layout("image_folder", data_dir, "no class folders in train/")
    train_paths, train_labels, class_index = _read_class_split(train_dir, None)
    if len(class_index) < 2:
        raise ValueError(f"{train_dir} has one class folder ({next(iter(class_index))!r}); clustering "
                         f"needs at least two: one sub-folder of train/ per class")
    held = {}
    for split in ("val", "test"):
        if (data_dir / split).is_dir():
            held[split] = _read_class_split(data_dir / split, class_index)[:2]
    if not held:
        tr, te = stratified_split(train_labels, test_fraction, seed=HELD_OUT_SPLIT_SEED)
        held["test"] = [train_paths[i] for i in te], train_labels[te]
        train_paths, train_labels = [train_paths[i] for i in tr], train_labels[tr]
    if skip_corrupt:
        train_paths, train_labels = drop_unreadable(train_paths, train_labels, "train")
        held = {s: drop_unreadable(p, y, s) for s, (p, y) in held.items()}
    test = held.get("test", held.get("val"))
    val = held.get("val")
    mean, std = NORMALIZATION["imagenet"]
    return SourceData("image_folder", train_paths, train_labels, test[0], test[1],
                      list(class_index), 3, _first_side(train_paths), mean, std,
                      val_images=val[0] if val else None, val_labels=val[1] if val else None)


MIN_UNLABELLED_IMAGES = 3
"""Fewest images of an ``images`` folder: two to cluster, one held out."""


def find_image_files(data_dir: Path) -> tuple[list[str], list[str]]:
    """Every file below ``data_dir`` at any depth (hidden folders and links to folders not
    entered, so a link cycle cannot trap the walk), sorted, split into image files (by
    extension, :data:`IMAGE_EXTENSIONS`) and the others."""
    images, others = [], []
    for root, dirs, files in os.walk(data_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(root, name)
            (images if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
    return images, others


def load_unlabelled_images(data_dir: Path, skip_corrupt: bool = False,
                           test_fraction: float = 0.3) -> SourceData:
    """Every image below ``data_dir`` at any depth, without labels (``-1``) or class folders.

    Files that are not images (by extension) are skipped with one warning that counts them;
    unreadable images stop the run, or are dropped with ``skip_corrupt=True``. A random
    ``test_fraction`` (at least one image) is held out with the fixed seed
    ``HELD_OUT_SPLIT_SEED``; paths keep their sorted order within each split.
    """
    if not data_dir.is_dir():
        raise missing_layout("images", data_dir, "not a directory")
    paths, others = find_image_files(data_dir)
    if others:
        shown = ", ".join(os.path.relpath(p, data_dir) for p in others[:5])
        more = f", ... and {len(others) - 5} more" if len(others) > 5 else ""
        warnings.warn(f"dataset 'images': skipped {len(others)} file(s) under {str(data_dir)!r} that are not "
                      f"images by their extension ({shown}{more}); read are {' '.join(IMAGE_EXTENSIONS)}",
                      UserWarning, stacklevel=3)
    labels = -np.ones(len(paths), dtype=np.int64)
    if skip_corrupt and paths:
        paths, labels = drop_unreadable(paths, labels, "images")
    if not paths:
        raise FileNotFoundError(f"dataset 'images': no image files under {str(data_dir)!r} (looked for the "
                                f"extensions {' '.join(IMAGE_EXTENSIONS)}, case-insensitive, at any depth)")
    if len(paths) < MIN_UNLABELLED_IMAGES:
        raise ValueError(f"dataset 'images': {str(data_dir)!r} holds {len(paths)} image(s); clustering needs at "
                         f"least {MIN_UNLABELLED_IMAGES} (two to cluster, one held out)")
    n_test = min(max(1, int(round(len(paths) * test_fraction))), len(paths) - 2)
    order = np.random.default_rng(HELD_OUT_SPLIT_SEED).permutation(len(paths))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    mean, std = NORMALIZATION["imagenet"]
    return SourceData("images", [paths[i] for i in train], labels[train], [paths[i] for i in test],
                      labels[test], [], 3, _first_side(paths), mean, std)


def _find_split_file(data_dir: Path, split: str) -> Path | None:
    for root in (data_dir, data_dir / "ImageNet_LT"):
        if (root / f"ImageNet_LT_{split}.txt").is_file():
            return root / f"ImageNet_LT_{split}.txt"
    return None


def read_split_file(path: Path, data_dir: Path) -> tuple[list[str], np.ndarray]:
    """Parse ``relative/path.JPEG label`` lines (blank lines ignored) into paths and labels."""
    paths, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise ValueError(f"{path}, line {n}: expected 'relative/path.JPEG label' with an "
                             f"integer label >= 0, got {line!r}")
        paths.append(str(data_dir / parts[0]))
        labels.append(int(parts[1]))
    if not paths:
        raise ValueError(f"{path} lists no images")
    return paths, np.asarray(labels, dtype=np.int64)


def _wnid_names(paths: list[str], labels: np.ndarray, num_classes: int) -> list[str]:
    names: dict[int, set[str]] = {}
    for p, y in zip(paths, labels.tolist(), strict=True):
        names.setdefault(y, set()).add(Path(p).parent.name)
    flat = [next(iter(names[c])) if len(names.get(c, ())) == 1 else None
            for c in range(num_classes)]
    if None in flat or len(set(flat)) != num_classes:
        return [str(c) for c in range(num_classes)]
    return flat


def load_imagenet_lt(data_dir: Path, skip_corrupt: bool = False) -> SourceData:
    """ImageNet-LT (Liu et al. 2019): its split files over an ImageNet root, used as given.

    Class names are the folder names (WordNet ids) when each label has exactly one.
    """
    files = {s: _find_split_file(data_dir, s) for s in ("train", "val", "test")}
    if files["train"] is None or (files["val"] is None and files["test"] is None):
        absent = [f"ImageNet_LT_{s}.txt" for s, f in files.items() if f is None]
        raise missing_layout("imagenet_lt", data_dir, f"missing {', '.join(absent)}")
    splits = {s: read_split_file(f, data_dir) for s, f in files.items() if f is not None}
    if skip_corrupt:
        splits = {s: drop_unreadable(p, y, s) for s, (p, y) in splits.items()}
    num_classes = int(max(y.max() for _, y in splits.values())) + 1
    names = _wnid_names(*splits["train"], num_classes)
    test = splits.get("test", splits.get("val"))
    val = splits.get("val")
    mean, std = NORMALIZATION["imagenet"]
    return SourceData("imagenet_lt", *splits["train"], *test, names, 3, None, mean, std,
                      val_images=val[0] if val else None, val_labels=val[1] if val else None,
                      long_tailed=True)
