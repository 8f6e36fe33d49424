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
import re
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from dcl_cluster.callbacks import ClusteringEvaluator, ClusterPredictionWriter
from dcl_cluster.data import DownloadError, LongTailDataModule
from dcl_cluster.data.folders import UnreadableImageError
from dcl_cluster.module import DebiasedClusterModule
from dcl_cluster.report import final_report
from dcl_cluster.run_folders import (  # noqa: F401 - re-exported: the CLI's run folders, as before
    FAILED_MARKER,
    ClearPreviousPredictions,
    RunCheckpoint,
    _first_sentence,
    _init_arguments,
    _say,
    check_checkpoint,
    check_output_folder,
    check_writable_folder,
    clear_previous_predictions,
    failed_run_checkpoints,
    find_last_checkpoint,
    logger_follows_root_dir,
    mark_failed_run,
    predictions_folder,
    remove_empty_run_folder,
    runs_root,
)

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
