"""Checkpoints of ``dcl-cluster fit``: ``last.ckpt`` after every epoch whatever the validation
frequency, its path printed, ``--ckpt_path last`` resuming the latest run (or one clear error,
never a silent restart), SIGTERM and Ctrl-C saving and saying where with a non-zero exit, and
damaged checkpoints named. Each run is a few one-batch epochs of digits, in process."""

import os
import pathlib
import signal

import lightning.pytorch as pl
import pytest
import torch

from dcl_cluster.cli import check_checkpoint, find_last_checkpoint, main

TINY = ["--model.backbone_width=8", "--model.warmup_epochs=0", "--data.clean_view=true",
        "--data.batch_size=64", "--trainer.accelerator=cpu", "--trainer.limit_train_batches=1",
        "--trainer.check_val_every_n_epoch=25", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--report=false", "--trainer.log_every_n_steps=1"]


def _fit(root, *extra):
    logger = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={root}",
              "--trainer.logger.name=runs"]
    main(["fit", *TINY, f"--trainer.default_root_dir={root}", *logger, *extra])


class StopWith(pl.Callback):
    """Interrupts training after ``step`` optimizer steps: a real SIGTERM to this process, or
    the KeyboardInterrupt that Ctrl-C raises."""

    def __init__(self, how: str = "sigterm", step: int = 2):
        self.how, self.step = how, step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt


def test_last_ckpt_written_every_epoch_without_validation_and_printed(tmp_path, capsys):
    _fit(tmp_path, "--trainer.max_epochs=2")      # validation every 25 epochs: it never runs
    last = tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert f"last checkpoint: {last}" in capsys.readouterr().err


def test_ckpt_path_last_resumes_the_latest_run_of_the_root(tmp_path, capsys):
    _fit(tmp_path, "--trainer.max_epochs=1")
    _fit(tmp_path, "--trainer.max_epochs=2", "--ckpt_path=last")
    first = tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    second = tmp_path / "runs" / "version_1" / "checkpoints" / "last.ckpt"
    assert f"resuming from {first}" in capsys.readouterr().err
    assert torch.load(second, weights_only=True)["global_step"] == 2      # 1 step resumed + 1 new
    _fit(tmp_path, "--trainer.max_epochs=3", "--ckpt_path=last")            # the newest: version_1
    assert f"resuming from {second}" in capsys.readouterr().err
    assert find_last_checkpoint(tmp_path / "runs").parent.parent.name == "version_2"


def test_ckpt_path_last_without_a_run_is_an_error_not_a_fresh_start(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _fit(tmp_path, "--trainer.max_epochs=1", "--ckpt_path=last")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "--ckpt_path last: no run under" in err and str(tmp_path / "runs") in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_sigterm_at_an_epoch_end_keeps_last_ckpt_says_where_and_exits_143(tmp_path, capsys):
    # one batch an epoch: the stop lands on an epoch end, whose last.ckpt is the state at the stop
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        _fit(tmp_path, "--trainer.max_epochs=50", "--trainer.callbacks+=test_cli_checkpoints.StopWith")
    assert exit_info.value.code == 143 and signal.getsignal(signal.SIGTERM) == before
    folder = tmp_path / "runs" / "version_0" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 2
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]
    err = capsys.readouterr().err
    assert "SIGTERM: training stopped at epoch 2, step 2" in err and f"--ckpt_path last): {folder / 'last.ckpt'}" in err


def test_sigterm_mid_epoch_also_saves_the_state_at_the_stop(tmp_path, capsys):
    # three batches an epoch: step 4 is the first batch of epoch 1
    with pytest.raises(SystemExit) as exit_info:
        _fit(tmp_path, "--trainer.max_epochs=50", "--trainer.limit_train_batches=3",
             "--trainer.callbacks+=test_cli_checkpoints.StopWith", "--trainer.callbacks.step=4")
    assert exit_info.value.code == 143
    folder = tmp_path / "runs" / "version_0" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 3      # end of epoch 0
    stopped = folder / "interrupted-epoch=1-step=4.ckpt"
    assert torch.load(stopped, weights_only=True)["global_step"] == 4
    err = capsys.readouterr().err
    assert "SIGTERM: training stopped at epoch 1, step 4" in err and f"the state at the stop: {stopped}" in err
    assert f"resumes exactly, --ckpt_path last): {folder / 'last.ckpt'}" in err


def test_ctrl_c_mid_epoch_saves_says_where_and_exits_non_zero(tmp_path, capsys):
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_info:
            _fit(tmp_path, "--trainer.max_epochs=50", "--trainer.limit_train_batches=3",
                 "--trainer.callbacks+=test_cli_checkpoints.StopWith", "--trainer.callbacks.how=ctrl-c")
    finally:
        signal.signal(signal.SIGINT, sigint)     # Lightning ignores further Ctrl-C while it shuts down
    assert exit_info.value.code not in (0, None)
    stopped = tmp_path / "runs" / "version_0" / "checkpoints" / "interrupted-epoch=0-step=2.ckpt"
    assert torch.load(stopped, weights_only=True)["global_step"] == 2
    err = capsys.readouterr().err
    assert "Ctrl-C: training stopped at epoch 0, step 2" in err and str(stopped) in err


@pytest.fixture
def good_checkpoint(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}, "epoch": 0}, path)
    return path


def test_a_truncated_checkpoint_is_named_without_weights_only_advice(tmp_path, good_checkpoint):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(good_checkpoint.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"checkpoint '.*cut\.ckpt' cannot be read.*damaged or truncated") as info:
        check_checkpoint(bad)
    assert "weights_only" not in str(info.value)


def test_a_checkpoint_of_other_bytes_or_unsafe_objects_is_named(tmp_path, good_checkpoint):
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(2000))
    with pytest.raises(ValueError, match=r"noise\.ckpt' cannot be read"):
        check_checkpoint(noise)
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "root": pathlib.Path("/data")}, unsafe)
    with pytest.raises(ValueError, match=r"unsafe\.ckpt' holds objects a safe load refuses") as info:
        check_checkpoint(unsafe)
    assert "weights_only=False" not in str(info.value)
    assert check_checkpoint(good_checkpoint) == good_checkpoint


def test_a_damaged_ckpt_path_is_one_line_from_the_command(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SystemExit) as exit_info:
        _fit(tmp_path, "--trainer.max_epochs=1", f"--ckpt_path={bad}")
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and f"checkpoint '{bad}' cannot be read" in err
    assert "Traceback" not in err and "weights_only" not in err
