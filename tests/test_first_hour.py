"""A new user's first hour, followed to the letter (only epochs, batch sizes and output folders
made small): the README's first command, the image-folder guide's command on a long-tailed
folder of one's own, and a resume of it with ``--ckpt_path last``.

The guides' Python snippets (export.md, own-image-folder.md) run as written on what these
runs wrote. Cost on 2 CPU cores: about 20 s for the README command (a real ``dcl-cluster``
process, two epochs and the closing report) and about 20 s for the folder steps (in process).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcl_cluster.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "examples" / "configs"
FOLDER_COUNTS = {"ant": 12, "bee": 8, "cat": 6, "dog": 4}      # already long-tailed


def guide_blocks(name: str) -> list[str]:
    """The ```python blocks of docs/guides/<name>.md, in order, as written."""
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "guides" / f"{name}.md").read_text(), re.S)


def _readme_first_command() -> list[str]:
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if "dcl-cluster fit" in line)
    return line.split("&&")[-1].split()


def test_readme_first_command_runs_quietly_and_says_where_its_checkpoint_is(tmp_path, monkeypatch):
    command = _readme_first_command()
    assert command == ["dcl-cluster", "fit", "--config", "examples/configs/digits_lt.yaml"]
    script = Path(sys.executable).with_name("dcl-cluster")
    runs = tmp_path / "runs" / "digits_lt"                          # where the config writes, below tmp_path
    small = ["--trainer.max_epochs=2", "--model.warmup_epochs=1", f"--trainer.default_root_dir={runs}",
             f"--trainer.logger.init_args.save_dir={runs}"]
    run = subprocess.run([str(script), *command[1:], *small], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "NMI" in run.stdout and "tail" in run.stdout
    last = next(tmp_path.rglob("last.ckpt"))
    assert f"last checkpoint: {last}" in run.stderr
    for noise in ("log_every_n_steps", "num_workers", "worker processes", "does not have many workers"):
        assert noise not in run.stderr, noise

    # docs/guides/export.md, "From a checkpoint" and the SmallCNN reload, run where the README ran;
    # the newest run is version_10, not version_9 (a damaged file that text order would pick)
    shutil.copytree(last.parents[1], runs / "dcl_cluster" / "version_10")
    (runs / "dcl_cluster" / "version_9" / "checkpoints").mkdir(parents=True)
    (runs / "dcl_cluster" / "version_9" / "checkpoints" / "last.ckpt").write_bytes(b"damaged")
    monkeypatch.chdir(tmp_path)
    export = guide_blocks("export")
    namespace = {}
    exec(export[1], namespace)
    assert namespace["latest"].name == "version_10" and Path("backbone.pt").is_file()
    exec(export[4], namespace)
    assert isinstance(namespace["cnn"], torch.nn.Module)


@pytest.fixture(scope="module")
def my_images(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("my_images")
    for split, scale in (("train", 1), ("test", 0)):
        for name, n in FOLDER_COUNTS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n * scale or 2):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _guide_command(data_dir, root, *extra):
    # docs/guides/own-image-folder.md, step 2, with 2-3 epochs instead of 200
    return ["fit", "--config", str(CONFIGS / "data" / "image_folder.yaml"),
            "--config", str(CONFIGS / "method" / "dcl_cluster.yaml"),
            f"--data.data_dir={data_dir}", "--model.warmup_epochs=1",
            "--trainer.check_val_every_n_epoch=10", "--evaluator.every_n_epochs=10",
            "--trainer.accelerator=cpu", f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", *extra]


def test_folder_guide_command_keeps_the_folder_counts_and_resumes(my_images, tmp_path, capsys, monkeypatch):
    # image_folder.yaml's batch of 128 is more than the 30 images: the error says what fits
    with pytest.raises(SystemExit) as exit_info:
        main(_guide_command(my_images, tmp_path, "--trainer.max_epochs=2"))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "batch_size=128" in err and "set batch_size <= 30" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("version_*"))                  # the failed run left no folder

    main(_guide_command(my_images, tmp_path, "--trainer.max_epochs=2", "--data.batch_size=8"))
    out, err = capsys.readouterr()
    assert "train class counts 12..4" in out                      # imbalance_factor: 1 keeps the folder
    first = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"last checkpoint: {first}" in err
    assert torch.load(first, weights_only=True)["epoch"] == 1

    main(_guide_command(my_images, tmp_path, "--trainer.max_epochs=3", "--data.batch_size=8",
                        "--ckpt_path=last", "--report=false"))
    err = capsys.readouterr().err
    assert f"resuming from {first}" in err
    resumed = torch.load(tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["global_step"] == 3 * 3     # 3 epochs of 3 batches of 8

    main(["predict", *_guide_command(my_images, tmp_path, "--data.batch_size=8", "--ckpt_path=last")[1:]])
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0", "version_1"]

    # the guide's Python snippets as written: step 3 (check the counts) on my folder, step 6 (get
    # the clusters) where the run wrote
    check_counts, get_clusters = guide_blocks("own-image-folder")
    namespace = {}
    exec(check_counts.replace("/path/to/images", str(my_images)).replace("imbalance_factor=10", "imbalance_factor=1")
         .replace("batch_size=128", "batch_size=8"), namespace)
    assert namespace["dm"].train_class_counts == list(FOLDER_COUNTS.values())
    monkeypatch.chdir(tmp_path)
    exec(get_clusters, namespace)
    assert len(namespace["clusters"]) == 2 * len(FOLDER_COUNTS)           # one id per held-out image
