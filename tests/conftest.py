"""Shared fixtures: the offline CIFAR-10 copy under ../shared/data, found or skipped.

Where ``../shared/data`` is absent (a user's fresh checkout) tests that need it skip with
the reason; CI sets ``DCL_CLUSTER_REQUIRE_SHARED_DATA=1`` so they fail there instead.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DCL_CLUSTER_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("DCL_CLUSTER_CACHE", Path.home() / ".cache" / "dcl_cluster"))


def _missing_shared(what: str):
    reason = (f"{what} not found under {SHARED_DATA}: this test reads a local copy of the real dataset; "
              f"set DCL_CLUSTER_SHARED_DATA to the folder that holds it (default ../shared/data)")
    if os.environ.get("DCL_CLUSTER_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(reason + "; DCL_CLUSTER_REQUIRE_SHARED_DATA=1 makes this a failure")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cifar10_npz_dir() -> Path:
    """A directory holding ``cifar10_uint8.npz`` exported from the real CIFAR-10 copy."""
    export = SHARED_DATA / "cifar10" / "export.py"
    if not export.exists():
        _missing_shared("cifar10/export.py")
    out = CACHE / "cifar10_arrays"
    subprocess.run([sys.executable, str(export), "arrays", str(out)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(autouse=True)
def _feature_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Frozen-encoder feature caches of in-process tests go to a temporary folder, never the
    user's ``~/.cache`` (tests that care pass ``feature_cache_dir`` themselves)."""
    folder = tmp_path_factory.getbasetemp() / "feature_cache"
    monkeypatch.setattr("dcl_cluster.data.feature_serving.default_cache_dir", lambda: folder)
