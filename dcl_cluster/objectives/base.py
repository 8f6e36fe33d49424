"""The ``Objective`` base: one term of the training loss, with its weight, what it needs from
the module, and a config that rebuilds it (so checkpoints reload without the caller's help).

A term is a thin ``nn.Module`` over a pure function of :mod:`dcl_cluster.losses`: the math
lives there once. ``DebiasedClusterModule`` sums ``weight * term(step)`` over its terms and
never asks which terms it runs; it reads their :class:`Needs` once, at ``setup``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["Objective", "Needs", "build_objectives", "apply_term_settings", "objective_config", "check_weight"]

#: The views a term may ask for beyond the two augmented ones
VIEWS = ("clean", "neighbor", "strong")


@dataclass(frozen=True)
class Needs:
    """What a term needs from the module, checked once at ``setup``.

    Attributes:
        views: Views beyond the two augmented ones: ``"clean"`` (the un-augmented image),
            ``"neighbor"`` (an augmented nearest neighbour), ``"strong"`` (a strongly
            augmented view).
        head: ``None``: no cluster head; ``()``: a head of any kind; otherwise the kinds it
            works with (``"student_t"``, ``"softmax"``, ``"cosine"``), first preferred.
        prior: The running estimate of the cluster sizes (``step.cluster_prior``).
        num_clusters: The number of clusters, passed to :meth:`Objective.build`.
        clustering: Runs only in the clustering phase (after the warm-up, head ready).
        warmup: Runs only in the warm-up (before the clustering phase).
    """

    views: tuple[str, ...] = ()
    head: tuple[str, ...] | None = None
    prior: bool = False
    num_clusters: bool = False
    clustering: bool = False
    warmup: bool = False

    def runs_in(self, clustering: bool) -> bool:
        """Whether the term runs in this phase (``clustering``: the clustering phase, else the warm-up)."""
        return not ((self.clustering and not clustering) or (self.warmup and clustering))


def check_weight(weight: float) -> None:
    """Raise ``ValueError`` unless ``weight`` is a finite number >= 0."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")


class Objective(nn.Module):
    """One term of the objective: ``weight * forward(step)`` is added to the loss.

    Subclasses set :attr:`name` (the key in ``loss_terms`` and the logs), implement
    :meth:`forward`, and, as needed, :meth:`needs`, :meth:`check` (range checks of their
    settings: run after construction and again at the module's ``setup``, never per step),
    :meth:`build` (buffers sized by the number of clusters), :meth:`on_train_epoch_start` and
    :meth:`on_train_epoch_end`.
    A term that keeps state (a memory bank, a running estimate) keeps it in buffers, so
    checkpoints and resume stay exact.

    Every constructor argument should be stored as an attribute of the same name: the
    term's :meth:`config` reads them back (``class_path`` + ``init_args``, as LightningCLI
    writes it), which is what checkpoints store and reload.

    Args:
        weight: The term's weight in the sum, ``>= 0``.

    Examples:
        >>> import torch
        >>> class Uniformity(Objective):
        ...     name = "uniformity"
        ...     def forward(self, step):
        ...         z = torch.nn.functional.normalize(step.z_a, dim=1)
        ...         return torch.pdist(z).pow(2).mul(-2).exp().mean().log()
        >>> term = Uniformity(weight=0.1)
        >>> term.config()["init_args"]
        {'weight': 0.1}
    """

    name: ClassVar[str] = "objective"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recorded_init(self, *args: Any, **kw: Any) -> None:
            outermost = "_init_args" not in self.__dict__
            if outermost:  # the arguments of the class the user built, not of its parents
                bound = inspect.signature(init).bind(self, *args, **kw)
                bound.apply_defaults()
                object.__setattr__(self, "_init_args", dict(list(bound.arguments.items())[1:]))
            init(self, *args, **kw)
            if outermost:
                self.check()

        cls.__init__ = recorded_init  # type: ignore[method-assign]

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def needs(self) -> Needs:
        """What this term needs from the module (default: the two views only)."""
        return Needs()

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range (extend in subclasses)."""
        check_weight(self.weight)

    def active(self, step: Any) -> bool:
        """Whether the term runs on this step (beyond its :class:`Needs`); default always."""
        return True

    def reads(self, epoch: int, clustering: bool) -> tuple[str, ...]:
        """The views whose outputs (backbone features, projections, head outputs) the term reads
        on a step of ``epoch`` in the given phase (``clustering``: the clustering phase, else the
        warm-up); ``()`` where it does not run. The module forwards only the views some term
        reads (and ``"a"``, always), so narrowing this saves backbone work; the module reads it
        once per epoch and phase, not per step.

        Default: ``"a"``, ``"b"`` and the :class:`Needs` views in the phases the term runs in
        (``Needs.clustering``: the clustering phase only; ``Needs.warmup``: the warm-up only),
        ``()`` in the other."""
        needs = self.needs()
        return ("a", "b", *needs.views) if needs.runs_in(clustering) else ()

    def build(self, num_clusters: int | None) -> None:
        """Create state sized by the number of clusters; called before a checkpoint loads."""

    def kmeans_heads(self) -> list[nn.Module]:
        """Heads of the term's own that start at k-means centres of the training features
        (``num_clusters``, ``normalize_features``, ``init_centroids``); the module places them
        with its own head, from the same features."""
        return []

    def on_setup(self, module: nn.Module) -> None:
        """Called at the module's ``setup`` for fitting, before any data loader (and its
        workers) exists: hand the datamodule what the term will need (views, schedules)."""

    def on_fit_start(self, module: nn.Module) -> None:
        """Called once a fit starts, after a checkpoint's weights and buffers are restored
        (the loop's epoch is not yet): e.g. fill a table the datamodule shares with its workers."""

    def on_train_epoch_start(self, module: nn.Module) -> None:
        """Called at the start of every training epoch, after the module has readied its
        cluster head (e.g. to mine nearest neighbours at the end of the warm-up)."""

    def on_train_epoch_end(self, module: nn.Module) -> None:
        """Called at the end of every training epoch (e.g. to report what the term did in it)."""

    def logs(self) -> dict[str, Tensor | float]:
        """Extra values to log after :meth:`forward` (``train/<key>``); default none."""
        return {}

    def forward(self, step: Any) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(step)")

    def config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` that rebuild this term with its current settings."""
        params = [p for p in inspect.signature(type(self).__init__).parameters.values()
                  if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        recorded = self.__dict__.get("_init_args", {})
        args = {p.name: getattr(self, p.name, recorded.get(p.name, p.default)) for p in params}
        missing = [n for n, v in args.items() if v is inspect.Parameter.empty]
        if missing:
            raise ValueError(f"{type(self).__qualname__} does not keep its argument(s) {missing} as attributes: "
                             "store each constructor argument as self.<name> so checkpoints can rebuild the term")
        return {"class_path": _class_path(type(self)), "init_args": args}

    def accepts(self, setting: str) -> bool:
        """Whether ``setting`` is one of this term's settings (what :meth:`replace` can change)."""
        return setting in self.config()["init_args"]

    def replace(self, **changes: Any) -> Objective:
        """A new term of the same class with some settings changed (like ``dataclasses.replace``)."""
        return type(self)(**{**self.config()["init_args"], **changes})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config()["init_args"].items())


def _class_path(cls: type) -> str:
    """The shortest import path of ``cls``: its package's export when it has one
    (``dcl_cluster.objectives.InfoNCE``), else ``module.QualName``."""
    parts = cls.__module__.split(".")
    for i in range(1, len(parts)):
        package = sys.modules.get(".".join(parts[:i]))
        if package is not None and getattr(package, cls.__qualname__, None) is cls:
            return f"{package.__name__}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def objective_config(term: Objective | dict) -> dict[str, Any]:
    """A term's ``class_path`` config; a config dict is returned as a plain dict."""
    if isinstance(term, Objective):
        return term.config()
    if hasattr(term, "as_dict"):  # a jsonargparse Namespace
        term = term.as_dict()
    return {"class_path": term["class_path"], "init_args": dict(term.get("init_args") or {})}


def _import_class(class_path: str) -> type:
    module_name, _, qualname = class_path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:  # e.g. a nested path a.b.C.D: walk attributes
        raise ValueError(f"cannot import objective {class_path!r}: {err}") from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"cannot find objective {class_path!r}")
    return obj


def build_objectives(objectives: Any) -> list[Objective]:
    """Terms from a list of ``Objective`` instances and/or ``class_path`` configs.

    Raises:
        ValueError: an empty list, an entry that is neither, a class that is not an
            :class:`Objective`, or two terms with the same name.
    """
    if isinstance(objectives, (Objective, dict)) or not isinstance(objectives, (list, tuple)) or not objectives:
        raise ValueError("objectives must be a non-empty list of Objective terms (or class_path configs), "
                         f"got {objectives!r}")
    terms: list[Objective] = []
    for entry in objectives:
        if not isinstance(entry, Objective):
            if hasattr(entry, "as_dict"):
                entry = entry.as_dict()
            if not isinstance(entry, dict) or "class_path" not in entry:
                raise ValueError(f"an objective must be an Objective or a class_path config, got {entry!r}")
            cls = _import_class(entry["class_path"])
            if not (isinstance(cls, type) and issubclass(cls, Objective)):
                raise ValueError(f"{entry['class_path']} is not a subclass of dcl_cluster.objectives.Objective")
            entry = cls(**dict(entry.get("init_args") or {}))
        terms.append(entry)
    names = [t.name for t in terms]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two objective terms share the name {repeated[0]!r} (names: {names}): each term is "
                         "logged under its name; give one a different `name` class attribute")
    return terms


class TermSettingError(ValueError):
    """A term setting's key names no term, or several."""


def apply_term_settings(terms: list[Objective], settings: dict[str, Any]) -> list[Objective]:
    """``terms`` with some settings changed: keys ``"<term name>.<setting>"``, or a bare
    ``"<setting>"`` when exactly one term has it (``{"contrastive.tau_plus": 0.05}``).

    Raises:
        ValueError: a key that matches no term, or several.

    Examples:
        >>> from dcl_cluster.objectives import DebiasedContrastive, DECClustering
        >>> terms = apply_term_settings([DebiasedContrastive(), DECClustering()], {"clustering.weight": 0.3})
        >>> terms[1].weight
        0.3
    """
    terms = list(terms)
    for key, value in settings.items():
        term_name, _, setting = str(key).rpartition(".")
        owners = [i for i, t in enumerate(terms) if t.accepts(setting) and term_name in ("", t.name)]
        if len(owners) != 1:
            where = "no term" if not owners else f"{len(owners)} terms ({', '.join(terms[i].name for i in owners)})"
            listed = "; ".join(f"{t.name}: {', '.join(t.config()['init_args'])}" for t in terms)
            raise TermSettingError(f"term setting {key!r} matches {where}; the terms and their settings are "
                             f"[{listed}]: use '<term name>.<setting>'")
        terms[owners[0]] = terms[owners[0]].replace(**{setting: value})
    return terms
