"""What a person sees when something is wrong: one short message without a traceback (unless
DCL_CLUSTER_DEBUG=1), the nearest valid name for a typo, our own --help, no empty run folder,
and a default configuration that causes no warning of its own. In process, nothing trains."""

from pathlib import Path

import pytest
import yaml

from dcl_cluster.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def _fail(args, capsys, code):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == code
    return capsys.readouterr().err


def test_a_bad_value_is_one_message_without_traceback(capsys, monkeypatch):
    monkeypatch.delenv("DCL_CLUSTER_DEBUG", raising=False)
    err = _fail(["fit", "--data.imbalance_factor=0.5"], capsys, 1)
    assert "error: imbalance_factor must be a finite number >= 1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_debug_mode_shows_the_exception(monkeypatch):
    monkeypatch.setenv("DCL_CLUSTER_DEBUG", "1")
    with pytest.raises(ValueError, match="imbalance_factor must be"):
        main(["fit", "--data.imbalance_factor=0.5"])


def test_an_option_typo_suggests_the_nearest_name_without_the_usage_page(capsys):
    err = _fail(["fit", "--data.imbalance_factr=3"], capsys, 2)
    assert "did you mean --data.imbalance_factor?" in err
    assert len(err.strip().splitlines()) <= 4 and "usage:" not in err


def test_a_value_of_the_wrong_type_names_the_option(capsys):
    err = _fail(["fit", "--data.batch_size=abc"], capsys, 2)
    assert "data.batch_size" in err and "abc" in err and "usage:" not in err


def test_fit_help_opens_with_our_description(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    head = " ".join(capsys.readouterr().out.split("options:")[0].split())
    assert "debiased contrastive learning and clustering" in head and "last.ckpt" in head
    assert "Runs the full optimization routine" not in head


def test_a_data_error_in_setup_leaves_no_empty_run_folder(tmp_path, capsys):
    err = _fail(["fit", "--data.dataset=image_folder", f"--data.data_dir={tmp_path / 'absent'}",
                 f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"], capsys, 1)
    assert f"no data found under '{tmp_path / 'absent'}'" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("version_*")) and not (tmp_path / "lightning_logs").exists()


def test_the_default_config_logs_within_an_epoch():
    from dcl_cluster import LongTailDataModule

    config = yaml.safe_load((CONFIGS / "digits_lt.yaml").read_text())
    dm = LongTailDataModule(**config["data"])
    dm.setup("fit")
    assert config["trainer"]["log_every_n_steps"] <= len(dm.train_dataloader())


def test_a_lightning_configuration_conflict_is_one_message(capsys):
    err = _fail(["fit", "--config", str(CONFIGS / "digits_lt.yaml"), "--trainer.enable_progress_bar=false"],
                capsys, 1)
    assert "error: Trainer was configured with `enable_progress_bar=False`" in err and "Traceback" not in err


def test_a_typo_in_a_config_file_suggests_the_nearest_name(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("trainer:\n  max_epoch: 3\n")
    err = _fail(["fit", "--config", str(config)], capsys, 2)
    assert "'trainer.max_epoch'" in err and "did you mean --trainer.max_epochs?" in err


def test_a_nested_class_path_error_keeps_its_reason_and_suggests_the_argument(capsys):
    err = _fail(["fit", "--model.backbone=dcl_cluster.nn.SmallCNN", "--model.backbone.widht=3"], capsys, 2)
    assert "Option 'widht' is not accepted" in err and "did you mean width" in err
    err = _fail(["fit", "--model.backbone=dcl_cluster.nn.NoSuch"], capsys, 2)
    assert "has no attribute 'NoSuch'" in err and len(err.strip().splitlines()) <= 3


def test_the_default_configs_use_enough_workers_for_lightning_not_to_warn():
    # Lightning warns "does not have many workers" below 2 on any machine with more than 2 cores
    for path in (CONFIGS / "digits_lt.yaml", CONFIGS / "data" / "digits_lt.yaml"):
        assert yaml.safe_load(path.read_text())["data"]["num_workers"] >= 2, path


def test_test_without_a_checkpoint_says_it_scores_an_untrained_model(capsys):
    # the note is printed once the arguments parse; a bad data value then stops the run early
    err = _fail(["test", "--config", str(CONFIGS / "digits_lt.yaml"), "--data.imbalance_factor=0.5"], capsys, 1)
    assert "test without --ckpt_path scores the untrained model" in err
