"""The features ``predict`` computed, saved beside its results (``features.pt``) so that
``dcl-cluster recluster`` can cluster them again at another K without another fit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    file), the files (or, without files, the images themselves when they take at most 256 MiB)
    and labels, the trained head's clusters and ``K`` when there is one, and what the report
    shows. Returns its path."""
    saved_images = None
    if paths is None and images is not None:
        array = images if isinstance(images, (np.ndarray, torch.Tensor)) else None
        if array is not None and array.nbytes <= _MAX_SAVED_IMAGE_BYTES:
            saved_images = torch.as_tensor(np.asarray(array))
    record = {
        "embeddings": embeddings.detach().to("cpu", torch.float16).contiguous(),
        "paths": list(paths) if paths is not None else None, "images": saved_images,
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
    return path


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
