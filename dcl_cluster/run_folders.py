"""Where a ``dcl-cluster`` run lives and what it leaves: the run folder under
``default_root_dir``, ``last.ckpt`` every epoch (and the state at a SIGTERM or Ctrl-C), the
mark of a run that ended in an error (skipped by ``--ckpt_path last``), the folders checked
writable before any work, ``predict``'s output folder cleared of the previous results, and no
empty folder left by a run that saved nothing."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

__all__ = ["FAILED_MARKER", "ClearPreviousPredictions", "RunCheckpoint", "check_checkpoint", "check_output_folder",
           "check_writable_folder", "clear_previous_predictions", "failed_run_checkpoints", "find_last_checkpoint",
           "logger_follows_root_dir", "mark_failed_run", "predictions_folder", "remove_empty_run_folder",
           "runs_root"]


class RunCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` at the end of every training epoch, whatever the validation
    frequency. On SIGTERM or Ctrl-C in the middle of an epoch it also saves the state at the
    stop as ``interrupted-epoch=E-step=S.ckpt`` and says where both are: ``last.ckpt`` resumes
    exactly (``--ckpt_path last``), a mid-epoch state does not (Lightning warns so).

    Added when the configuration has no ModelCheckpoint of its own (also to ``test`` and
    ``predict``, where it saves nothing, so that a checkpoint's callback state finds its
    callback). Lightning's SLURM requeue (SIGUSR1, an hpc checkpoint) is left as it is.
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, save_on_train_epoch_end=True,
                         enable_version_counter=False)
        self._saved_step: int | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.best_model_path and Path(self.best_model_path).is_file():
            self._saved_step = trainer.global_step
            if trainer.is_global_zero and self.dirpath:  # a good last.ckpt: an earlier error's mark is stale
                (Path(self.dirpath) / FAILED_MARKER).unlink(missing_ok=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: no monitored score, and a resumed run keeps its own last.ckpt
        (restoring would only warn that the folder changed)."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """On an interruption: save the state at the stop when it is newer than last.ckpt, and
        say where both are. On an error (whose state may be broken): mark the run as failed
        (:data:`FAILED_MARKER` beside its last.ckpt), so that ``--ckpt_path last`` skips it."""
        if trainer.state.fn != "fit":
            return
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            if trainer.is_global_zero and self._saved_step is not None:  # only a last.ckpt this run wrote
                mark_failed_run(self.dirpath, exception)
            return
        what = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
        lines = [f"{what}: training stopped at epoch {trainer.current_epoch}, step {trainer.global_step}"]
        if trainer.global_step > (self._saved_step or 0) and self.dirpath:
            stopped = Path(self.dirpath) / f"interrupted-epoch={trainer.current_epoch}-step={trainer.global_step}.ckpt"
            trainer.save_checkpoint(stopped)
            lines.append(f"the state at the stop: {stopped} (a mid-epoch resume does not repeat the "
                         f"uninterrupted run exactly)")
        if self._saved_step is not None:
            lines.append(f"last.ckpt, end of the last finished epoch (resumes exactly, --ckpt_path "
                         f"last): {self.best_model_path}")
        elif len(lines) == 1:
            lines.append("no checkpoint: not one training step had finished")
        _say("\n".join(lines))


@rank_zero_only
def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


FAILED_MARKER = "failed.txt"  # beside the last.ckpt of a run that ended in an error: the error's first line


def mark_failed_run(checkpoint_dir: str | os.PathLike | None, error: BaseException) -> None:
    """Write :data:`FAILED_MARKER` into ``checkpoint_dir`` when it holds a ``last.ckpt`` (a run
    without one has nothing for ``--ckpt_path last`` to pick)."""
    if checkpoint_dir and (Path(checkpoint_dir) / "last.ckpt").is_file():
        try:
            (Path(checkpoint_dir) / FAILED_MARKER).write_text(
                f"this run ended in an error; --ckpt_path last skips it\n{type(error).__name__}: "
                f"{_first_sentence(error)}\n")
        except OSError:
            pass  # the error being reported matters more than the marker


def failed_run_checkpoints(root: str | os.PathLike) -> list[Path]:
    """The ``last.ckpt`` files under ``root`` of runs that ended in an error (marked by
    :func:`mark_failed_run`)."""
    root = Path(root)
    found = root.glob("**/last.ckpt") if root.is_dir() else []
    return sorted(p for p in found if (p.parent / FAILED_MARKER).is_file())


def find_last_checkpoint(root: str | os.PathLike) -> Path | None:
    """The most recently written ``last.ckpt`` under ``root`` (a logger's root holding
    ``version_*/checkpoints/``, or a run folder) of a run that did not end in an error, or None."""
    root = Path(root)
    found = [p for p in root.glob("**/last.ckpt") if p.is_file() and not (p.parent / FAILED_MARKER).is_file()] \
        if root.is_dir() else []
    return max(found, key=lambda p: (p.stat().st_mtime, _version_number(p)), default=None)


def runs_root(trainer_config) -> Path:
    """Where a trainer configuration's runs go: the logger's ``save_dir/name`` (the folder of
    its ``version_*`` runs), else ``default_root_dir`` (Lightning's own fallbacks)."""
    default_root = Path(trainer_config.get("default_root_dir") or os.getcwd())
    logger = trainer_config.get("logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else False
    if logger is False:
        return default_root
    init_args = (logger.get("init_args") or {}) if hasattr(logger, "get") else {}
    save_dir = Path(init_args.get("save_dir") or init_args.get("root_dir") or default_root)
    name = init_args.get("name", "lightning_logs")
    return save_dir / name if name else save_dir


def _init_arguments(class_path: str) -> list[str]:
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        return list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    except Exception:  # an unimportable path has its own message already
        return []


def logger_follows_root_dir(trainer_config) -> None:
    """A logger whose ``save_dir`` is not given (None) writes under ``trainer.default_root_dir``
    (else the working directory): ``--trainer.default_root_dir X`` decides where a run goes
    unless a logger's ``save_dir`` is named. Fills the parsed configuration in place."""
    loggers = trainer_config.get("logger")
    root = trainer_config.get("default_root_dir") or "."
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        class_path = logger.get("class_path") if hasattr(logger, "get") else None
        if not isinstance(class_path, str) or "save_dir" not in _init_arguments(class_path):
            continue
        if logger.get("init_args") is None:
            logger["init_args"] = type(logger)()
        if logger["init_args"].get("save_dir") is None:
            logger["init_args"]["save_dir"] = str(root)


def predictions_folder(config) -> Path:
    """Where ``predict`` writes, for a parsed subcommand configuration: ``--predictions_dir``, else
    the run folder of ``--ckpt_path`` (the folder above ``checkpoints/``, or the checkpoint's
    folder), else ``<default_root_dir>/predictions``."""
    if config.get("predictions_dir"):
        return Path(config["predictions_dir"]).expanduser()
    ckpt = config.get("ckpt_path")
    if ckpt and Path(ckpt).is_file():
        folder = Path(ckpt).resolve().parent
        return folder.parent if folder.name == "checkpoints" else folder
    trainer_config = config.get("trainer") or {}
    return Path(trainer_config.get("default_root_dir") or os.getcwd()) / "predictions"


def check_writable_folder(folder: str | os.PathLike, what: str, option: str) -> None:
    """Raise one error, before any work, when ``folder`` cannot be written or created: the
    nearest existing folder at or above it is a file or is not writable. Creates nothing."""
    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {str(folder)!r} cannot be created: {str(existing)!r} is a file, not a folder; "
                         f"choose another folder with {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == folder else f"{str(existing)!r}, the folder it would be created in,"
        raise ValueError(f"{what} {str(folder)!r} is not writable: {where} is read-only for this user; "
                         f"choose another folder with {option}")


def check_output_folder(subcommand: str, config) -> None:
    """The folder a subcommand writes into is writable, checked at setup: ``predict``'s
    :func:`predictions_folder`, else the runs' folder (:func:`runs_root`)."""
    if subcommand == "predict":
        check_writable_folder(predictions_folder(config), "predict's output folder", "--predictions_dir")
    else:
        trainer_config = config.get("trainer") or {}
        option = ("--trainer.default_root_dir" if not trainer_config.get("logger")
                  else "--trainer.default_root_dir (or the logger's save_dir)")
        check_writable_folder(runs_root(trainer_config), "the run folder", option)


def clear_previous_predictions(folder: str | os.PathLike) -> list[Path]:
    """Remove what an earlier ``predict`` (and ``recluster`` from its features) wrote into
    ``folder``: exactly the files its manifest lists (:mod:`dcl_cluster.callbacks.outputs`), so
    that new results never sit beside old ones (a 2-cluster run beside an earlier run's
    ``cluster_002..009.png``) and no file of yours is touched. Returns what was removed."""
    from dcl_cluster.callbacks.outputs import clear_recorded_outputs

    return clear_recorded_outputs(folder)


class ClearPreviousPredictions(Callback):
    """At the start of ``trainer.predict`` (after the checks and the setup, so that a refused run
    keeps the old results), :func:`clear_previous_predictions` of ``folder``; global rank zero."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def on_predict_start(self, trainer, pl_module) -> None:
        removed = clear_previous_predictions(self.folder) if trainer.is_global_zero else []
        if removed:
            _say(f"predict: removed the previous results in {self.folder} ({', '.join(p.name for p in removed)})")


_EMPTY_RUN_FILES = {"config.yaml", "hparams.yaml"}


def _holds_nothing(folder: Path) -> bool:
    """Only the configuration, hyperparameters, an event file without events (88 bytes) or a
    metrics file without rows: what a run that trained, tested and predicted nothing leaves."""
    for path in folder.rglob("*"):
        if path.is_dir():
            continue
        name, size = path.name, path.stat().st_size
        if name in _EMPTY_RUN_FILES or (name.startswith("events.out.tfevents") and size <= 100):
            continue
        if name == "metrics.csv" and len(path.read_text().splitlines()) <= 1:
            continue
        return False
    return True


def remove_empty_run_folder(trainer, failed: bool = False) -> None:
    """Remove the logger's ``version_N`` folder of this run when it holds nothing (see
    :func:`_holds_nothing`), or, for a run that ended in an error (``failed``), no checkpoint to
    resume from; global rank zero only, no collective call."""
    logger = getattr(trainer, "logger", None)
    if logger is None or not trainer.is_global_zero:
        return
    folder = getattr(logger, "log_dir", None)
    if folder and Path(folder).is_dir() and re.fullmatch(r"version_\d+", Path(folder).name) \
            and (_holds_nothing(Path(folder)) or (failed and not any(Path(folder).rglob("*.ckpt")))):
        shutil.rmtree(folder, ignore_errors=True)
        parent = Path(folder).parent  # the logger's save_dir/name, when this was its only run
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def _version_number(path: Path) -> int:
    numbers = [int(m.group(1)) for part in path.parts if (m := re.fullmatch(r"version_(\d+)", part))]
    return numbers[-1] if numbers else -1


def check_checkpoint(path: str | os.PathLike) -> Path:
    """Raise one error naming ``path`` when it is missing or not a checkpoint that
    ``torch.load(weights_only=True)`` reads; return it as a Path. Memory-maps the tensors, so
    the check reads little more than the file's index."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f" (it holds a {unsupported.group(1)})" if unsupported else ""
        raise ValueError(f"checkpoint {str(path)!r} holds objects a safe load refuses{what}: it was "
                         f"not written by dcl-cluster, or was changed since; use a checkpoint that "
                         f"a dcl-cluster run wrote") from None
    except Exception as err:  # EOFError, RuntimeError (zip), KeyError, ... : a damaged file
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(err).__name__}: "
                         f"{_first_sentence(err)}); it is damaged or "
                         f"truncated (an interrupted copy, a full disk): use another checkpoint, e.g. "
                         f"an earlier one of the same run") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"checkpoint {str(path)!r} is not a Lightning checkpoint (no 'state_dict')")
    return path


def _first_sentence(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
    return text.split(". ")[0].rstrip(".")
