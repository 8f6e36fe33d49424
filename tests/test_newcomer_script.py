"""A newcomer's script: docs/guides/cluster-folder.md followed to the letter on a generated photo
folder, in a fresh working directory that holds only the repository's ``examples/``. The guide's
``dcl-cluster`` commands run as written (``/path/to/photos`` and ``$run`` filled in as the guide
says), with only these additions to make them small: a few epochs, 16 px, small batches, no
loader workers, the CPU. Then each promise is checked: the run folder the guide names, the files
``predict`` writes and their columns, the Python snippet that reads ``predictions.csv``, and
``examples/cluster_folder.py --smoke`` writing where the guide's command does.

About 25 s on 2 CPU cores (two short runs and their ``predict``, in process).
"""

from __future__ import annotations

import csv
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import torch

from dcl_cluster.cli import main

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guides" / "cluster-folder.md"
SMALL = ["--trainer.max_epochs=3", "--model.warmup_epochs=2", "--model.max_clusters=6", "--data.image_size=16",
         "--data.batch_size=16", "--data.num_workers=0", "--trainer.accelerator=cpu",
         "--trainer.enable_progress_bar=false"]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def guide_commands(subcommand: str) -> list[list[str]]:
    """The ``dcl-cluster <subcommand>`` lines of the guide's bash blocks, split as a shell would."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.startswith(f"dcl-cluster {subcommand} "):
                found.append(shlex.split(line.split(" #")[0])[2:])  # after "dcl-cluster <subcommand>"
    return found


def guide_run_folder() -> str:
    """The run folder the guide tells the reader to use: "with `run=<folder>`"."""
    return re.search(r"with `run=([^`]+)`", GUIDE.read_text()).group(1)


@pytest.fixture()
def newcomer(tmp_path, monkeypatch):
    """A fresh working directory with the repository's examples/, and a generated photo folder."""
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DCL_CLUSTER_DEBUG", raising=False)
    photos = load_example("cluster_folder").make_shape_folder(tmp_path / "my_photos", counts=(30, 14, 8))
    return tmp_path, photos


def test_the_cluster_folder_guide_as_written(newcomer, capsys):
    work, photos = newcomer
    fit = guide_commands("fit")[0]          # the first command of step 2: the guide's main route
    assert fit[:2] == ["--config", "examples/configs/cluster_folder.yaml"] and "/path/to/photos" in fit
    cache = f"--data.feature_cache_dir={work / 'feature_cache'}"    # a frozen encoder's features stay here
    main(["fit", *[str(photos) if a == "/path/to/photos" else a for a in fit], *SMALL, cache])
    out, err = capsys.readouterr()

    run = Path(guide_run_folder())          # runs/cluster_folder/dcl_cluster/version_0, relative to here
    assert (work / run / "checkpoints" / "last.ckpt").is_file(), sorted(p.name for p in work.rglob("version_*"))
    assert f"last checkpoint: {run / 'checkpoints' / 'last.ckpt'}" in err
    assert (run / "config.yaml").is_file() and (run / "final_metrics.json").is_file()
    k = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["num_clusters"]
    assert k == 10                                                               # the checkpoint carries K
    for noise in ("log_every_n_steps", "Traceback"):
        assert noise not in err, noise

    predict = guide_commands("predict")[0]
    main(["predict", *[a.replace("$run", str(run)) for a in predict]])
    rows = list(csv.DictReader(open(run / "predictions.csv", newline="")))
    assert list(rows[0]) == ["path", "cluster", "confidence"]                   # no labels: no label column
    assert (run / "report.html").is_file() and (run / "features.pt").is_file()
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos.glob("*.png"))   # every image
    assert all(0 <= int(r["cluster"]) < k and 0 < float(r["confidence"]) <= 1 for r in rows)
    sheets = {p.name for p in (run / "clusters").glob("cluster_*.png")}
    assert "cluster_sizes.png" in sheets
    assert {f"cluster_{c:03d}.png" for c in {int(r["cluster"]) for r in rows}} <= sheets

    # the guide's recluster command, as written: another K from the saved features, beside the others
    from dcl_cluster.console import main as console

    recluster = guide_commands("recluster")[0]
    console(["recluster", *[a.replace("$run", str(run)) for a in recluster]])
    again = list(csv.DictReader(open(run / "recluster_k005" / "predictions.csv", newline="")))
    assert sorted(r["path"] for r in again) == sorted(r["path"] for r in rows)
    assert {int(r["cluster"]) for r in again} <= set(range(5)) and (run / "recluster_k005" / "report.html").is_file()

    # the guide's snippet that reads predictions.csv, as written (the csv module: no pandas)
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S) if "predictions.csv" in b)
    namespace: dict = {}
    exec(snippet, namespace)
    assert sum(namespace["sizes"].values()) == len(rows) == len(namespace["rows"])
    assert len(namespace["unsure"]) == min(20, len(rows))


def test_the_guides_smoke_example_writes_where_the_guides_command_does(newcomer):
    work, _ = newcomer
    result = load_example("cluster_folder").main(["--smoke"])     # as the guide writes it: --out's default
    assert result["run"] == Path("runs/cluster_folder/dcl_cluster/version_0")
    assert result["csv"].is_file() and not (work / "runs" / "cluster_folder" / "runs").exists()
