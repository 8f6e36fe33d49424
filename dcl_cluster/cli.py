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
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from dcl_cluster.callbacks import ClusteringEvaluator, ClusterPredictionWriter
from dcl_cluster.data import DownloadError, LongTailDataModule
from dcl_cluster.data.folders import UnreadableImageError
from dcl_cluster.module import DebiasedClusterModule
from dcl_cluster.report import final_report

__all__ = ["DCLClusterCLI", "RunCheckpoint", "check_checkpoint", "find_last_checkpoint", "main", "runs_root"]

DESCRIPTION = (
    "dcl-cluster: joint debiased contrastive learning and clustering on long-tailed images. "
    "Trains DebiasedClusterModule on a LongTailDataModule, scores the clusters of the final "
    "model, keeps checkpoints/last.ckpt every epoch; --ckpt_path last resumes the latest run."
)
SUBCOMMAND_DESCRIPTIONS = {
    "fit": ("Train DebiasedClusterModule (joint debiased contrastive learning and clustering) on a "
            "long-tailed LongTailDataModule, then print the clustering scores of the final model. Keeps "
            "checkpoints/last.ckpt every epoch; --ckpt_path last resumes the latest run. "
            "Example: dcl-cluster fit --config examples/configs/digits_lt.yaml"),
    "validate": "Score a checkpoint (--ckpt_path) on the validation split.",
    "test": "Score a checkpoint (--ckpt_path) on the held-out test split.",
    "predict": ("Cluster every image from a checkpoint (the held-out split; the whole folder for dataset "
                "'images') and write predictions.csv, a contact sheet per cluster and the cluster sizes into "
                "the run's folder. Example: dcl-cluster predict --config <run>/config.yaml --ckpt_path "
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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: no monitored score, and a resumed run keeps its own last.ckpt
        (restoring would only warn that the folder changed)."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """On an interruption (not on errors, whose state may be broken): save the state at the
        stop when it is newer than last.ckpt, and say where both are."""
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != "fit":
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


def find_last_checkpoint(root: str | os.PathLike) -> Path | None:
    """The most recently written ``last.ckpt`` under ``root`` (a logger's root holding
    ``version_*/checkpoints/``, or a run folder), or None."""
    root = Path(root)
    found = [p for p in root.glob("**/last.ckpt") if p.is_file()] if root.is_dir() else []
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


def remove_empty_run_folder(trainer) -> None:
    """Remove the logger's ``version_N`` folder of this run when it holds nothing (see
    :func:`_holds_nothing`); global rank zero only, no collective call."""
    logger = getattr(trainer, "logger", None)
    if logger is None or not trainer.is_global_zero:
        return
    folder = getattr(logger, "log_dir", None)
    if folder and Path(folder).is_dir() and re.fullmatch(r"version_\d+", Path(folder).name) \
            and _holds_nothing(Path(folder)):
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
        try:
            super().__init__(*args, **kwargs)
        finally:  # also after an error: a failed, test or predict run leaves no empty version_N
            remove_empty_run_folder(getattr(self, "trainer", None))

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ClusteringEvaluator, "evaluator")
        parser.add_argument(
            "--report", type=bool, default=True,
            help="After fit, evaluate the final model on the long-tailed train set and the held-out set "
            "and print NMI / ACC / ARI and head/medium/tail ACC.",
        )
        parser.add_argument(
            "--predictions_dir", type=str | None, default=None,
            help="predict: folder of predictions.csv and clusters/*.png; default the run folder of "
            "--ckpt_path (the folder above its checkpoints/), else <default_root_dir>/predictions.",
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
            kwargs["callbacks"] = [*kwargs.get("callbacks", configured),
                                   ClusterPredictionWriter(self._predictions_dir(trainer_config))]
        return super().instantiate_trainer(**kwargs)

    def _predictions_dir(self, trainer_config) -> Path:
        """Where ``predict`` writes: ``--predictions_dir``, else the run folder of ``--ckpt_path``
        (the folder above ``checkpoints/``, or the checkpoint's folder), else
        ``<default_root_dir>/predictions``."""
        config = self._subcommand_config()
        if config.get("predictions_dir"):
            return Path(config["predictions_dir"]).expanduser()
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if ckpt and Path(ckpt).is_file():
            folder = Path(ckpt).resolve().parent
            return folder.parent if folder.name == "checkpoints" else folder
        return Path(trainer_config.get("default_root_dir") or os.getcwd()) / "predictions"

    # ------------------------------------------------------------ checkpoints to load

    def parse_arguments(self, parser, args) -> None:
        """Parse, then resolve ``--ckpt_path last`` and check the checkpoint file, before
        LightningCLI reads the model's hyperparameters from it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._resolve_ckpt_path(self.config[subcommand])
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
            if found is None:
                stopped = sorted(Path(root).glob("**/interrupted-*.ckpt"), key=lambda p: p.stat().st_mtime)
                hint = (f"; the newest state saved at a stop is {stopped[-1]}: pass it as --ckpt_path"
                        if stopped else "")
                raise FileNotFoundError(
                    f"--ckpt_path last: no run under {str(root)!r} has a last.ckpt to resume (the "
                    f"logger's save_dir/name, or trainer.default_root_dir){hint}; start without "
                    f"--ckpt_path, or pass the path of a .ckpt file")
            _say(f"resuming from {found}")
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


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``dcl-cluster`` console script (``args`` default to ``sys.argv``)."""
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
    except (ValueError, FileNotFoundError, DownloadError, UnreadableImageError) as err:
        if debug or not _raised_by_us(err):
            raise
        sys.stderr.write(f"error: {err}\n({DEBUG_ENV}=1 shows the traceback)\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
