"""Issue 26, a practitioner's hour on a photo folder: where a run goes (``default_root_dir``),
``predict`` never mixing new results with old ones, ``--ckpt_path last`` never resuming a run
that ended in an error, the closing table whole in a pipe, ``preset`` from the top level.
Runs are a few one-batch epochs of digits, in process (about 25 s on 2 CPU cores)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from dcl_cluster.cli import (
    FAILED_MARKER,
    DCLClusterArgumentParser,
    DCLClusterCLI,
    clear_previous_predictions,
    find_last_checkpoint,
    main,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "examples" / "configs"
TINY = ["--model.backbone_width=8", "--model.warmup_epochs=0", "--data.batch_size=64", "--trainer.accelerator=cpu",
        "--trainer.limit_train_batches=1", "--trainer.check_val_every_n_epoch=25",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.callbacks=[]",
        "--report=false"]


def digits(root: Path, *extra: str, subcommand: str = "fit") -> list[str]:
    """The README's config (its logger names no save_dir), small, with the runs under ``root``."""
    return [subcommand, "--config", str(CONFIGS / "digits_lt.yaml"), *TINY, f"--trainer.default_root_dir={root}",
            *extra]


def parsed_cli(args: list[str]) -> DCLClusterCLI:
    from dcl_cluster import DebiasedClusterModule, LongTailDataModule

    return DCLClusterCLI(DebiasedClusterModule, LongTailDataModule, args=args, run=False,
                         parser_class=DCLClusterArgumentParser, auto_configure_optimizers=False)


# ---------------------------------------------------------------- where a run goes

def test_default_root_dir_decides_where_a_run_of_a_shipped_config_goes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(digits(tmp_path / "mine", "--trainer.max_epochs=1"))
    assert (tmp_path / "mine" / "dcl_cluster" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "runs").exists()                           # the config's own default is not used


def test_a_named_logger_save_dir_still_wins_and_the_configs_name_none(tmp_path):
    cli = parsed_cli(["--config", str(CONFIGS / "digits_lt.yaml"), f"--trainer.default_root_dir={tmp_path / 'a'}",
                      f"--trainer.logger.init_args.save_dir={tmp_path / 'b'}"])
    assert Path(cli.trainer.logger.log_dir).parent == tmp_path / "b" / "dcl_cluster"
    cli = parsed_cli(["--config", str(CONFIGS / "cluster_folder.yaml"), f"--trainer.default_root_dir={tmp_path}"])
    assert Path(cli.trainer.logger.log_dir).parent == tmp_path / "dcl_cluster"


# ---------------------------------------------------------------- predict's output folder

def test_clear_previous_predictions_removes_only_what_predict_writes(tmp_path):
    (tmp_path / "clusters").mkdir()
    for name in ("predictions.csv", "report.html", "clusters/cluster_009.png", "notes.txt", "config.yaml"):
        (tmp_path / name).write_text("old")
    removed = clear_previous_predictions(tmp_path)
    assert sorted(p.name for p in removed) == ["clusters", "predictions.csv", "report.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "notes.txt"]


def test_predict_replaces_an_earlier_predicts_files_and_a_refused_one_keeps_them(tmp_path, capsys):
    main(digits(tmp_path, "--trainer.max_epochs=1"))
    run = tmp_path / "dcl_cluster" / "version_0"
    ckpt = run / "checkpoints" / "last.ckpt"
    (run / "clusters").mkdir()
    (run / "clusters" / "cluster_042.png").write_text("an earlier run's sheet")   # 10 clusters now: 000..009
    (run / "predictions.csv").write_text("path,cluster,confidence\nold.png,42,1.0\n")
    with pytest.raises(SystemExit):                                   # refused at setup: nothing removed
        main(digits(tmp_path, f"--ckpt_path={ckpt}", "--data.imbalance_factor=0.5", subcommand="predict"))
    assert (run / "clusters" / "cluster_042.png").is_file()
    main(digits(tmp_path, f"--ckpt_path={ckpt}", subcommand="predict"))
    assert "removed the previous results" in capsys.readouterr().err
    assert not (run / "clusters" / "cluster_042.png").exists()
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    assert rows and all(0 <= int(r["cluster"]) < 10 for r in rows)
    assert (run / "clusters" / "cluster_sizes.png").is_file()


# ---------------------------------------------------------------- --ckpt_path last

class FailAtEpoch(pl.Callback):
    """Raises a ValueError at the start of epoch ``epoch`` (after the earlier epochs' last.ckpt)."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise ValueError("a failure in the middle of the run")


def test_ckpt_path_last_skips_a_run_that_ended_in_an_error(tmp_path, capsys):
    main(digits(tmp_path, "--trainer.max_epochs=1"))                  # version_0: finished
    with pytest.raises(ValueError, match="in the middle"):  # not ours: its traceback is shown
        main(digits(tmp_path, "--trainer.max_epochs=3", "--trainer.callbacks+=test_first_hour_folder.FailAtEpoch"))
    failed = tmp_path / "dcl_cluster" / "version_1" / "checkpoints"
    assert (failed / "last.ckpt").is_file() and "a failure in the middle" in (failed / FAILED_MARKER).read_text()
    capsys.readouterr()
    main(digits(tmp_path, "--trainer.max_epochs=2", "--ckpt_path=last"))
    err = capsys.readouterr().err
    assert f"resuming from {tmp_path / 'dcl_cluster' / 'version_0' / 'checkpoints' / 'last.ckpt'}" in err
    assert "1 run(s) that ended in an error skipped" in err and "version_1" in err
    assert find_last_checkpoint(tmp_path / "dcl_cluster").parts[-3] == "version_2"


def test_a_later_good_run_in_the_same_folder_clears_the_mark_and_a_run_without_a_save_marks_nothing(tmp_path,
                                                                                                      capsys):
    # logger: false puts every run into <root>/checkpoints: an error's mark must not outlive a
    # later good last.ckpt, and a run that fails before it saved must not mark an earlier one's
    nolog = [*digits(tmp_path, "--trainer.max_epochs=3"), "--trainer.logger=false"]
    with pytest.raises(ValueError, match="in the middle"):
        main([*nolog, "--trainer.callbacks+=test_first_hour_folder.FailAtEpoch"])
    marker = tmp_path / "checkpoints" / FAILED_MARKER
    assert marker.is_file()
    main([*digits(tmp_path, "--trainer.max_epochs=1"), "--trainer.logger=false"])
    assert not marker.exists() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(ValueError, match="in the middle"):
        main([*nolog, "--trainer.callbacks+=test_first_hour_folder.FailAtEpoch", "--trainer.callbacks.epoch=0"])
    assert not marker.exists()  # the failed run saved nothing: the good last.ckpt stays resumable
    capsys.readouterr()
    main([*digits(tmp_path, "--trainer.max_epochs=2", "--ckpt_path=last"), "--trainer.logger=false"])
    assert "resuming from" in capsys.readouterr().err


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="in the middle"):
        main(digits(tmp_path, "--trainer.max_epochs=2", "--trainer.callbacks+=test_first_hour_folder.FailAtEpoch",
                    "--trainer.callbacks.epoch=0"))
    assert not list(tmp_path.rglob("version_*"))


# ---------------------------------------------------------------- the closing table, preset

def test_the_closing_table_prints_whole_into_a_pipe(capsys):
    from rich.table import Table

    from dcl_cluster.report import print_table

    table = Table(title="scores")
    for name in ("set", "clusters", "NMI", "ACC", "bACC", "F1", "ARI", "head", "medium", "tail", "extra1", "extra2"):
        table.add_column(name)
    table.add_row("train (LT)", "k-means", *[f"0.{i}23" for i in range(10)])
    print_table(table)                                                 # stdout is captured: not a terminal
    out = capsys.readouterr().out
    assert "…" not in out and "0.923" in out and "extra2" in out
    assert max(len(line) for line in out.splitlines()) > 80


def test_preset_is_importable_from_the_top_level():
    from dcl_cluster import preset

    terms = preset("dcl_cluster")["objectives"]
    assert [type(t).__name__ for t in terms] == ["DebiasedContrastive", "DECClustering", "AnchorConsistency"]
    with pytest.raises((KeyError, ValueError)):
        preset("no_such_preset")


def test_a_failed_runs_marker_is_only_written_beside_a_checkpoint(tmp_path):
    from dcl_cluster.cli import mark_failed_run

    mark_failed_run(tmp_path, ValueError("x"))
    assert not (tmp_path / FAILED_MARKER).exists()
    torch.save({"state_dict": {}}, tmp_path / "last.ckpt")
    mark_failed_run(tmp_path, ValueError("bad value. more"))
    assert "ValueError: bad value" in (tmp_path / FAILED_MARKER).read_text()
    assert find_last_checkpoint(tmp_path) is None


# ---------------------------------------------------------------- the docs a newcomer reads

def test_the_pages_a_newcomer_reads_name_all_nine_presets_not_five():
    from dcl_cluster.presets import PRESETS

    for page in ("README.md", "docs/index.md", "docs/quickstart.md", "docs/guides/own-image-folder.md"):
        assert "five presets" not in (REPO / page).read_text().lower(), page
    row = next(line for line in (REPO / "docs" / "guides" / "own-image-folder.md").read_text().splitlines()
               if "another of the" in line and "presets" in line)
    assert len(PRESETS) == 9 and all(f"`{name}`" in row or name == "dcl_cluster" for name in PRESETS), row


def test_every_method_md_citation_is_a_section_of_the_method_notes_in_the_repository():
    notes = (REPO / "docs" / "METHOD.md").read_text()
    sections = set(re.findall(r"^## (\d+[a-z]?)\.", notes, re.M)) | set(re.findall(r"^\*\*(\d+\.\d+) ", notes, re.M))
    cited = set()
    for path in [REPO / "README.md", *REPO.glob("docs/**/*.md"), *REPO.glob("dcl_cluster/**/*.py"),
                 *REPO.glob("examples/**/*.yaml"), *REPO.glob("benchmarks/*.py")]:
        cited |= {m.group(2) for m in re.finditer(r"METHOD\.md\]?(\([^)]*\))?,? (?:section )?(\d+(?:\.\d+)?[a-z]?)\b",
                                                  path.read_text())}
    assert len(cited) >= 15 and cited <= sections, sorted(cited - sections)
    nav = (REPO / "mkdocs.yml").read_text()
    assert "METHOD.md" in nav


def test_a_test_that_needs_the_real_dataset_says_how_to_point_at_it(monkeypatch):
    import conftest

    monkeypatch.delenv("DCL_CLUSTER_REQUIRE_SHARED_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        conftest._missing_shared("cifar10/export.py")
    assert "DCL_CLUSTER_SHARED_DATA" in str(info.value) and "beside the checkout" not in str(info.value)


def test_the_cluster_folder_config_logs_within_an_epoch_of_a_590_photo_folder(tmp_path):
    import numpy as np
    import yaml
    from PIL import Image

    from dcl_cluster import LongTailDataModule

    for i in range(590):                                              # the folder size
        Image.fromarray(np.full((8, 8, 3), i % 255, np.uint8)).save(tmp_path / f"{i:03d}.png")
    config = yaml.safe_load((CONFIGS / "cluster_folder.yaml").read_text())
    dm = LongTailDataModule(**{**config["data"], "data_dir": str(tmp_path), "num_workers": 0})
    dm.setup("fit")
    assert config["trainer"]["log_every_n_steps"] <= len(dm.train_dataloader())
