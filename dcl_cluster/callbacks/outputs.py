"""Which files of a results folder are ``predict``'s and ``recluster``'s own: each writes the
paths it made into a small manifest, and a new ``predict`` removes exactly those, never a
file of yours that happens to share a name (a ``clusters/`` folder of your own photos)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MANIFEST", "clear_recorded_outputs", "record_outputs", "recorded_outputs"]

MANIFEST = ".dcl_cluster_outputs.json"  # the paths predict and recluster wrote, relative to the folder
_LEGACY_FILES = ("predictions.csv", "report.html")  # what a predict before the manifest wrote
_LEGACY_SHEET = re.compile(r"cluster_(\d{3,}|sizes)\.png")  # ... and into clusters/


def record_outputs(folder: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> None:
    """Add ``paths`` (files, or folders made whole, inside ``folder``) to its manifest."""
    folder = Path(folder)
    entries = set(_read(folder))
    for path in paths:
        relative = os.path.relpath(Path(path).absolute(), folder.absolute())
        if not relative.startswith(".."):
            entries.add(Path(relative).as_posix())
    (folder / MANIFEST).write_text(json.dumps(sorted(entries), indent=1) + "\n")


def clear_recorded_outputs(folder: str | os.PathLike) -> list[Path]:
    """Remove what the manifest of ``folder`` lists (a folder it lists: whole), then the
    ``clusters/`` folder if that left it empty, and the manifest. Without a manifest (results
    of an older version): ``predictions.csv``, ``report.html`` and ``clusters/cluster_<k>.png``
    and ``cluster_sizes.png`` only. Returns the top-level entries removed or emptied of ours."""
    folder = Path(folder)
    entries = _read(folder)
    if not (folder / MANIFEST).is_file():
        entries = [*_LEGACY_FILES, *(f"clusters/{p.name}" for p in sorted((folder / "clusters").glob("*.png"))
                                     if _LEGACY_SHEET.fullmatch(p.name))]
    touched: dict[str, Path] = {}
    for entry in entries:
        path = folder / entry
        if ".." in Path(entry).parts or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        top = Path(entry).parts[0]
        touched[top] = folder / top
    clusters = folder / "clusters"
    if clusters.is_dir() and not any(clusters.iterdir()):
        clusters.rmdir()
    (folder / MANIFEST).unlink(missing_ok=True)
    return sorted(touched.values())


def recorded_outputs(folder: str | os.PathLike) -> set[str]:
    """The paths (relative, POSIX) that the manifest of ``folder`` lists."""
    return set(_read(Path(folder)))


def _read(folder: Path) -> list[str]:
    try:
        entries = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, str)] if isinstance(entries, list) else []
