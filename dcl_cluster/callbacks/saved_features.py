"""The features ``predict`` computed, saved beside its results (``features.pt``) so that
``dcl-cluster recluster`` can cluster them again at another K without another fit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcl_cluster.callbacks.outputs import record_outputs

__all__ = ["FEATURES_FILE", "load_predict_features", "save_predict_features"]

FEATURES_FILE = "features.pt"  # what predict saves beside predictions.csv
_MAX_SAVED_IMAGE_BYTES = 256 * 2**20  # images without files are saved for the pictures up to this size


def save_predict_features(folder: str | os.PathLike, embeddings: torch.Tensor, *, paths: list[str] | None = None,
                          images: Any = None, labels: torch.Tensor | None = None,
                          head_clusters: torch.Tensor | None = None, head_confidence: torch.Tensor | None = None,
                          head_k: int | None = None, metric: str = "euclidean", summary: dict | None = None,
                          class_names: list[str] | None = None, class_counts: list[int] | None = None,
                          k_choice: dict | None = None) -> Path:
    """Write ``features.pt`` into ``folder``: the embeddings ``(N, F)`` (float16, to halve the
    file, unless a value is beyond its range), the files (absolute paths; without files, the
    images themselves when they take at most 256 MiB)
    and labels, the trained head's clusters and ``K`` when there is one, and what the report
    shows. Returns its path."""
    saved_images = _small_images(images) if paths is None and images is not None else None
    embeddings = embeddings.detach().to("cpu")
    fits_half = bool(embeddings.abs().max() < 6e4) if embeddings.numel() else True  # float16's range: 65,504
    record = {
        "embeddings": embeddings.to(torch.float16 if fits_half else torch.float32).contiguous(),
        "paths": [os.path.abspath(p) for p in paths] if paths is not None else None, "images": saved_images,
        "labels": None if labels is None else labels.detach().cpu().long(),
        "head_clusters": None if head_clusters is None else head_clusters.detach().cpu().long(),
        "head_confidence": None if head_confidence is None else head_confidence.detach().cpu().float(),
        "head_k": head_k, "metric": metric, "summary": dict(summary or {}),
        "class_names": list(class_names) if class_names is not None else None,
        "class_counts": [int(c) for c in class_counts] if class_counts is not None else None,
        "k_choice": k_choice,
    }
    path = Path(folder) / FEATURES_FILE
    tmp = path.with_name(path.name + ".partial")
    torch.save(record, tmp)
    tmp.replace(path)  # never a half-written file under the real name
    record_outputs(folder, [path])  # a new predict into this folder replaces it
    return path


def _small_images(images: Any) -> torch.Tensor | None:
    """The images as one uint8 tensor when they take at most 256 MiB: an array or tensor, or the
    datamodule's image stores (indexable, each item an array), read one by one; else None."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return torch.as_tensor(np.asarray(images)) if images.nbytes <= _MAX_SAVED_IMAGE_BYTES else None
    try:
        first = np.asarray(images[0])
        if first.dtype != np.uint8 or first.nbytes * len(images) > _MAX_SAVED_IMAGE_BYTES:
            return None
        return torch.from_numpy(np.stack([np.asarray(images[i]) for i in range(len(images))]))
    except (TypeError, IndexError, ValueError, KeyError, OSError):  # not a store of equal-sized arrays
        return None


def load_predict_features(folder: str | os.PathLike) -> dict:
    """What :func:`save_predict_features` wrote into ``folder``; one clear error when it is not there."""
    path = Path(folder).expanduser() / FEATURES_FILE
    if not path.is_file():
        hint = (f"{folder} is not a folder" if not Path(folder).expanduser().is_dir() else
                f"{folder} holds no {FEATURES_FILE}")
        raise FileNotFoundError(f"recluster reads the features a predict saved: {hint}. Run `dcl-cluster predict "
                                "--config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt` first and pass "
                                "the folder it wrote predictions.csv into (--predictions RUN)")
    return torch.load(path, map_location="cpu", weights_only=True)
