"""The examples run as a reader would run them, in their small mode, and the documentation
site builds with ``mkdocs build --strict``.

The scripts run in this process through their ``main(argv)`` (importing Lightning once),
the notebook in a kernel through nbclient with its parameter cell kept small.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOK = EXAMPLES / "notebooks" / "subclass_module.ipynb"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dropin_callbacks_give_a_plain_classifier_clustering_scores_and_plots(tmp_path):
    result = load_example("dropin_callbacks").main(["--smoke", "--out", str(tmp_path)])
    metrics = result["metrics"]
    for key in ("val/nmi", "val/acc", "val/ari", "val/balanced_acc", "val/head_acc", "val/tail_acc"):
        assert 0 <= metrics[key] <= 1, key
    names = sorted(Path(p).name.rsplit("_", 1)[-1] for p in result["plots"])
    assert names == ["confusion.png", "embedding.png", "sizes.png"]
    assert all(Path(p).stat().st_size > 0 for p in result["plots"])


def test_custom_folder_clusters_a_generated_image_folder(tmp_path):
    result = load_example("custom_folder").main(["--smoke", "--out", str(tmp_path)])
    assert (tmp_path / "toy_images" / "train" / "class_0").is_dir()
    assert result["class_counts"] == [12, 7, 4, 3]  # 12 per class cut at imbalance factor 4
    for split in ("train (LT)", "held-out"):
        assert set(result["report"][split]) == {"head", "k-means"}
        assert 0 <= result["report"][split]["k-means"]["nmi"] <= 1
    assert len(result["plots"]) == 3 and all(Path(p).exists() for p in result["plots"])
    state = torch.load(result["backbone"])
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_notebook_subclass_module_runs_and_shows_the_plots(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[dev]')")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "EPOCHS = 2" in params[0].source
    params[0].source = f'EPOCHS = 2\nUNIFORMITY_WEIGHT = 0.1\nPLOT_METHOD = "pca"\nOUT_DIR = {str(tmp_path)!r}\n'
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 3
    assert (tmp_path / "backbone.pt").exists()


def test_documentation_builds_strictly(tmp_path):
    for package in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            found = importlib.util.find_spec(package) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip(f"{package} is not installed (pip install -e '.[dev]' installs the docs tools)")
    assert (REPO / "docs" / "assets" / "digits_cluster_sizes.png").stat().st_size < 200_000
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "losses" / "index.html").exists()
    shutil.rmtree(tmp_path / "site")
