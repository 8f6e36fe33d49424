"""The ``dcl-cluster`` command: LightningCLI over DebiasedClusterModule and
LongTailDataModule, with the clustering evaluator always attached, a ``last.ckpt`` kept at the
end of every epoch, and a closing table of the final model's clustering scores after ``fit``.

    dcl-cluster fit --config examples/configs/digits_lt.yaml
    dcl-cluster fit --config examples/configs/data/cifar10_lt.yaml \\
                    --config examples/configs/method/dcl_cluster.yaml
    dcl-cluster fit --config ... --ckpt_path last       # resume the latest run of that root

Configuration and data errors print one short message (``DCL_CLUSTER_DEBUG=1`` shows the
traceback); SIGTERM and Ctrl-C save ``last.ckpt``, say where, and exit non-zero.
"""

from __future__ import annotations

import difflib
import os
import pickle
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from dcl_cluster.callbacks import ClusteringEvaluator, ClusterPredictionWriter
from dcl_cluster.data import DownloadError, LongTailDataModule
from dcl_cluster.data.folders import UnreadableImageError
from dcl_cluster.module import DebiasedClusterModule
from dcl_cluster.report import final_report

__all__ = ["DCLClusterCLI", "RunCheckpoint", "check_checkpoint", "clear_previous_predictions",
           "find_last_checkpoint", "main", "predictions_folder", "runs_root"]

DESCRIPTION = (
    "dcl-cluster: joint debiased contrastive learning and clustering on long-tailed images. "
    "Trains DebiasedClusterModule on a LongTailDataModule, scores the clusters of the final "
    "model, keeps checkpoints/last.ckpt every epoch; --ckpt_path last resumes the latest run. "
    "`dcl-cluster recluster --predictions FOLDER --num_clusters K` clusters the features a predict "
    "saved again at another K, in seconds."
)
SUBCOMMAND_DESCRIPTIONS = {
    "fit": ("Train DebiasedClusterModule (joint debiased contrastive learning and clustering) on a "
            "long-tailed LongTailDataModule, then print the clustering scores of the final model. Keeps "
            "checkpoints/last.ckpt every epoch; --ckpt_path last resumes the latest run. "
            "Example: dcl-cluster fit --config examples/configs/digits_lt.yaml"),
    "validate": "Score a checkpoint (--ckpt_path) on the validation split.",
    "test": "Score a checkpoint (--ckpt_path) on the held-out test split.",
    "predict": ("Cluster every image (the held-out split; the whole folder for dataset 'images') with the "
                "trained model of --ckpt_path (required) and write predictions.csv, a contact sheet per cluster "
                "and the cluster sizes into the run's folder, replacing an earlier predict's. Example: "
                "dcl-cluster predict --config <run>/config.yaml --ckpt_path "
                "<run>/checkpoints/last.ckpt"),
}
DEBUG_ENV = "DCL_CLUSTER_DEBUG"
EXIT_SIGTERM = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
PACKAGE_DIR = Path(__file__).resolve().parent


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


class DCLClusterArgumentParser(LightningArgumentParser):
    """Parse errors in one short paragraph: what was wrong, the nearest valid option name for a
    typo, and where to see the rest (``--help``); no page of usage."""

    def validate(self, namespace, *args: Any, **kwargs: Any) -> None:
        """Before jsonargparse checks the configuration: a logger without ``save_dir`` writes under
        ``trainer.default_root_dir`` (:func:`logger_follows_root_dir`)."""
        for key in ("trainer", *(f"{name}.trainer" for name in SUBCOMMAND_DESCRIPTIONS)):
            trainer_config = namespace.get(key) if hasattr(namespace, "get") else None
            if hasattr(trainer_config, "get"):
                logger_follows_root_dir(trainer_config)
        return super().validate(namespace, *args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if os.environ.get(DEBUG_ENV) == "1" or not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        text = _short_parse_error(message, parser)
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"error: {text}\n(see {prog} --help; {DEBUG_ENV}=1 shows the details)\n")
        sys.exit(2)


def _option_names(parser) -> list[str]:
    names = []
    for action in parser._actions:
        names += [s for s in action.option_strings if s.startswith("--")]
    return names


def _short_parse_error(message: str, parser) -> str:
    """jsonargparse's message cut to what matters: its first line, the innermost reason for a
    nested value (a class_path that does not import, an argument it does not accept), and the
    nearest valid names for a misspelt option or argument."""
    lines = [line.strip().lstrip("- ").strip() for line in message.strip().splitlines() if line.strip()]
    text = lines[0] if lines else message
    problem = next((i for i, line in enumerate(lines) if line.startswith("Problem with given class_path")), None)
    if problem is not None:
        text += " " + " ".join(lines[problem:problem + 2])
    elif len(lines) > 1 and lines[-1] not in text:
        text += " " + lines[-1]
    suggestions = []
    options = _option_names(parser)
    for bad in re.findall(r"(?:option|argument|key)s?:? '?(--?[\w.]+|[\w]+(?:\.[\w]+)+)'?", message):
        name = bad if bad.startswith("--") else "--" + bad
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        if close and close[0] != name:
            suggestions.append(f"{name.lstrip('-')} -> did you mean {close[0]}?")
    nested = re.search(r"class_path '([\w.]+)'.*?Option '(\w+)' is not accepted", message, re.S)
    if nested:
        close = difflib.get_close_matches(nested.group(2), _init_arguments(nested.group(1)), n=1, cutoff=0.6)
        if close:
            suggestions.append(f"{nested.group(2)} -> did you mean {close[0]} (an argument of {nested.group(1)})?")
    return text + "".join(f"\n  {s}" for s in suggestions)


def _init_arguments(class_path: str) -> list[str]:
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        return list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    except Exception:  # an unimportable path has its own message already
        return []


class DCLClusterCLI(LightningCLI):
    """LightningCLI with ``--evaluator.*`` options for the always-on ClusteringEvaluator, a
    ``last.ckpt`` every epoch, ``--ckpt_path last`` over runs, and checkpoints checked
    before they are loaded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        failed = True
        try:
            super().__init__(*args, **kwargs)
            failed = False
        finally:  # also after an error: a failed, test or predict run leaves no empty version_N
            remove_empty_run_folder(getattr(self, "trainer", None), failed=failed)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ClusteringEvaluator, "evaluator")
        parser.add_argument(
            "--report", type=bool, default=True,
            help="After fit, evaluate the final model on the long-tailed train set and the held-out set "
            "and print NMI / ACC / ARI and head/medium/tail ACC.",
        )
        parser.add_argument(
            "--predictions_dir", type=str | None, default=None,
            help="predict: folder of predictions.csv and clusters/*.png (an earlier predict's files there are "
            "replaced); default the run folder of --ckpt_path (the folder above its checkpoints/), else "
            "<default_root_dir>/predictions.",
        )

    def _subcommand_config(self):
        return self.config_init[self.subcommand] if self.subcommand else self.config_init

    def instantiate_trainer(self, **kwargs: Any):
        """Add :class:`RunCheckpoint` unless the configuration brings a ModelCheckpoint (or turns
        checkpointing off); ``predict`` logs nothing, so it gets no logger and no saved config."""
        trainer_config = self._subcommand_config().get("trainer", {})
        configured = trainer_config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        wants_checkpoints = trainer_config.get("enable_checkpointing", True) is not False
        if (wants_checkpoints and "callbacks" not in kwargs
                and not any(isinstance(c, ModelCheckpoint) for c in configured)):
            kwargs["callbacks"] = [*configured, RunCheckpoint()]
        if self.subcommand == "predict":  # predictions are written as files, nothing is logged: no run folder
            kwargs["logger"] = False
            self.save_config_callback = None
            folder = self._predictions_dir(trainer_config)
            kwargs["callbacks"] = [*kwargs.get("callbacks", configured), ClearPreviousPredictions(folder),
                                   ClusterPredictionWriter(folder)]
        return super().instantiate_trainer(**kwargs)

    def _predictions_dir(self, trainer_config) -> Path:
        """Where ``predict`` writes (:func:`predictions_folder`)."""
        return predictions_folder(self.config[self.subcommand])

    # ------------------------------------------------------------ checkpoints to load

    def parse_arguments(self, parser, args) -> None:
        """Parse, then resolve ``--ckpt_path last`` and check the checkpoint file, before
        LightningCLI reads the model's hyperparameters from it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            if subcommand == "predict" and self.config[subcommand].get("ckpt_path") is None:
                raise ValueError(
                    "predict needs a trained model: pass --ckpt_path <run>/checkpoints/last.ckpt (the path fit "
                    "printed at its end), or --ckpt_path last for the newest run of this configuration; "
                    "without it the predictions would come from an untrained model")
            self._resolve_ckpt_path(self.config[subcommand])
            check_output_folder(subcommand, self.config[subcommand])
            if subcommand != "fit" and self.config[subcommand].get("ckpt_path") is None:
                _say(f"note: {subcommand} without --ckpt_path scores the untrained model that the "
                     f"configuration builds; pass --ckpt_path last (or a .ckpt file) for a trained one")

    @staticmethod
    def _resolve_ckpt_path(config) -> None:
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None or ckpt_path in ("hpc", "best"):  # Lightning's own names
            return
        if ckpt_path == "last":
            root = runs_root(config.get("trainer") or {})
            found = find_last_checkpoint(root)
            failed = failed_run_checkpoints(root)
            skipped = (f" ({len(failed)} run(s) that ended in an error skipped: "
                       f"{', '.join(str(p.parents[1]) for p in failed[:3])}{', ...' if len(failed) > 3 else ''})"
                       if failed else "")
            if found is None:
                stopped = sorted(Path(root).glob("**/interrupted-*.ckpt"), key=lambda p: p.stat().st_mtime)
                hint = (f"; the newest state saved at a stop is {stopped[-1]}: pass it as --ckpt_path"
                        if stopped else "")
                raise FileNotFoundError(
                    f"--ckpt_path last: no run under {str(root)!r} has a last.ckpt to resume (the "
                    f"logger's save_dir/name, or trainer.default_root_dir){skipped}{hint}; start without "
                    f"--ckpt_path, or pass the path of a .ckpt file")
            _say(f"resuming from {found}{skipped}")
            ckpt_path = found
        config["ckpt_path"] = str(check_checkpoint(ckpt_path))

    def after_fit(self) -> None:
        config = self._subcommand_config()
        if config.get("report", True) and not self.trainer.interrupted:
            final_report(self.trainer, self.model, self.datamodule)
        saved = [c.best_model_path if isinstance(c, RunCheckpoint) else c.last_model_path
                 for c in self.trainer.checkpoint_callbacks]
        saved = [p for p in saved if p and Path(p).is_file()]
        if saved:
            _say("last checkpoint: " + ", ".join(saved))


def _raised_by_us(err: BaseException) -> bool:
    """True when the innermost frame that raised ``err`` is in this package."""
    tb = err.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return bool(frames) and Path(frames[-1]).resolve().is_relative_to(PACKAGE_DIR)


_OUR_ERRORS = (ValueError, OSError, ImportError)  # OSError: FileNotFoundError, DownloadError, UnreadableImageError


def our_error_message(err: BaseException) -> str | None:
    """The message of the error this package raised for a bad value or bad data, found in ``err``
    or in what it wraps (jsonargparse's "Does not validate against any of the Union subtypes"
    around a class's own error, a DataLoader worker's "Caught ... in DataLoader worker"), else
    None (not ours: the traceback is worth seeing)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, _OUR_ERRORS):
            if _raised_by_us(err):
                return str(err)
            from_worker = _worker_error_message(str(err))
            if from_worker is not None:
                return from_worker
        err = err.__cause__ or err.__context__
    return None


def _worker_error_message(text: str) -> str | None:
    """The original message of an error that a DataLoader worker raised in this package (torch
    re-raises it in the main process with the worker's traceback as its text), else None."""
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return None
    files = re.findall(r'File "([^"]+)"', text)
    if not files or not Path(files[-1]).resolve().is_relative_to(PACKAGE_DIR):
        return None
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def main(args: list[str] | None = None) -> None:
    """The LightningCLI subcommands of ``dcl-cluster`` (``args`` default to ``sys.argv``);
    ``recluster`` goes to :mod:`dcl_cluster.recluster` (the console script sends it there
    without loading this module)."""
    if (sys.argv[1:] if args is None else args)[:1] == ["recluster"]:
        from dcl_cluster.recluster import main as recluster

        recluster(list(sys.argv[2:] if args is None else args[1:]))
        return
    debug = os.environ.get(DEBUG_ENV) == "1"
    try:
        DCLClusterCLI(
            DebiasedClusterModule,
            LongTailDataModule,
            args=args,
            parser_class=DCLClusterArgumentParser,
            parser_kwargs={"description": DESCRIPTION,
                           **{name: {"description": text} for name, text in SUBCOMMAND_DESCRIPTIONS.items()}},
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    except SIGTERMException:
        sys.exit(EXIT_SIGTERM)  # Lightning's SIGTERMException is a SystemExit with code 0
    except MisconfigurationException as err:  # Lightning's own word for a configuration error
        if debug:
            raise
        sys.stderr.write(f"error: {err}\n({DEBUG_ENV}=1 shows the traceback)\n")
        sys.exit(1)
    except (ValueError, OSError, ImportError, DownloadError, UnreadableImageError) as err:
        message = None if debug else our_error_message(err)
        if message is None:
            raise
        sys.stderr.write(f"error: {message}\n({DEBUG_ENV}=1 shows the traceback)\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
