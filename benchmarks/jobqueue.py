"""A resumable benchmark queue: a plan of (preset, imbalance factor, seed, epochs) jobs run
one after another, checkpointed every epoch, picked up after any interruption.

    python -m benchmarks.jobqueue run cifar10_lt_80          # benchmarks/plans/cifar10_lt_80.json
    python -m benchmarks.jobqueue status cifar10_lt_80       # done / running / left, time estimates
    python -m benchmarks.jobqueue run smoke_digits           # digits, seconds

(The module is ``jobqueue``, not ``queue``: the scripts in ``benchmarks/`` run with that folder
first on ``sys.path``, where a ``queue.py`` would replace the standard library's ``queue`` that
``torch.utils.data`` imports.)

**Jobs.** A plan expands into *runs* (one per preset, imbalance factor, seed and epoch
budget; each ends with one results row) and *shared warm-ups*: the contrastive-only part of
the clustering presets is trained once per (warm-up group, imbalance factor, seed, warm-up
length) by the group's contrastive preset (:data:`GROUP_BASE`) and every preset of the group
(:data:`WARMUP_GROUP`) starts from its checkpoint; warm-ups of one group chain (the 60-epoch
one resumes the 40-epoch one). The group's contrastive preset itself (``simclr``, ``dcl``)
resumes from the longest warm-up, so its row *is* its run from scratch. A clustering preset's
row is "the group's contrastive preset for ``warmup_epochs`` epochs, then the preset's own
terms": its model and optimizer state at the warm-up's end are mapped by parameter name
(:func:`adapt_checkpoint`; the heads the warm-up lacks start fresh), the learning-rate
schedule, the epoch counters and the data order continue.

**Resuming.** Every job checkpoints at the end of every epoch (``last.ckpt``, written to a
temporary file and renamed, so a kill mid-write leaves the previous one) in
``benchmarks/queue_state/<plan>/<job>/``; ``run`` starts each unfinished job from its last
checkpoint, a warm-up's end or scratch. A job's result depends only on the checkpoint it
starts from and the seeds, never on the process: a killed and resumed queue writes the same
rows as an uninterrupted one (``tests/test_benchmark_queue.py``). Jobs run in this process,
one after another (each re-seeded, with a fresh module and data module): an import of torch
and Lightning costs 5-10 s here, and a job started in a new process gives the same result
anyway, which is what every resume does.

**Files.** ``benchmarks/results/queue_<plan>.json``: one row per finished run (the fields of
``quality.py``'s rows plus per-epoch times and losses, the module's settings and which warm-up
it started from), written when the run ends. ``queue_state/<plan>/state.json`` (finished,
failed and blocked jobs with their epoch times), each job's ``progress.json`` (updated every
epoch) and the ``final.ckpt`` of each warm-up whose dependants are not all done are meant to be
committed (``run --commit`` commits them and the results after every job); ``last.ckpt`` of
the running job and the lock stay local (ignored). So a process killed on the same machine
loses at most the epoch in progress; a new machine with the repository resumes at the first
unfinished job and loses at most that job's epochs.

A preset the installed ``dcl_cluster`` does not have (yet) is *blocked*, not failed: the queue
goes on and a later ``run`` picks it up (its warm-up checkpoint is kept until then).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(REPO))

from benchmarks.quality import score, warmup_epochs  # noqa: E402

PLANS = HERE / "plans"
STATE = HERE / "queue_state"
RESULTS = HERE / "results"

#: preset -> its contrastive warm-up group: the presets of a group share one warm-up.
#: Edit here; a preset not listed runs from scratch.
WARMUP_GROUP: dict[str, str] = {
    "simclr": "info_nce", "cc": "info_nce", "sic": "info_nce", "scan": "info_nce",
    "dcl": "debiased", "dcl_cluster": "debiased", "p2ot": "debiased", "p2ot_alone": "debiased",
}
#: group -> the contrastive-only preset that trains the group's warm-up (debiased: tau+ 0.1)
GROUP_BASE: dict[str, str] = {"info_nce": "simclr", "debiased": "dcl"}
#: preset -> images through the backbone per training image (2 augmented views, + the clean
#: view, + SCAN's neighbour and strong views): the time estimates of ``status``, and where a
#: module does not say (``extra_views``) whether the data module serves the clean view.
VIEWS: dict[str, int] = {"simclr": 2, "dcl": 2, "cc": 2, "sic": 3, "dcl_cluster": 3, "p2ot": 2, "p2ot_alone": 2,
                         "scan": 5, "scan_prior": 5}
#: seconds an epoch when neither a measurement nor the plan gives one (a stated guess)
FALLBACK_EPOCH_S = 30.0
FALLBACK_SCORE_S = 60.0
EPOCH_LOG_KEY = "EpochLog"  # where a checkpoint keeps the per-epoch times and losses
KILL_ENV = "DCL_QUEUE_KILL_AT"  # "<job id>:<epoch>:<batch>" or "<job id>:score": SIGKILL there (tests)
_TIMING_KEYS = ("wall_s", "train_s", "score_s", "epoch_times_s", "peak_rss_mib", "peak_gpu_mib", "resumes",
                "finished")


# --------------------------------------------------------------------------- plan


@dataclass
class Job:
    """One unit of the queue: a run (ends with a results row) or a shared warm-up (ends with
    ``final.ckpt``). ``stop`` is the epoch count it trains to, ``start_epoch`` the count it
    starts from (the warm-up it resumes), ``epochs`` the budget (``max_epochs``, so the
    learning-rate schedule of a warm-up is the one of the runs it feeds)."""

    id: str
    kind: str  # "run" | "warmup"
    preset: str  # the preset trained (a warm-up trains its group's contrastive preset)
    imbalance_factor: float
    seed: int
    epochs: int
    stop: int
    start_epoch: int = 0
    start_from: str | None = None
    warmup_epochs: int | None = None  # the module's warmup_epochs (clustering presets)
    group: str | None = None
    views: int = 2
    dependants: list[str] = field(default_factory=list)


def load_plan(name: str | os.PathLike) -> dict:
    """A plan by name (``benchmarks/plans/<name>.json``) or path; ``plan["name"]`` is its stem."""
    path = Path(name)
    if not path.suffix:
        path = PLANS / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in PLANS.glob("*.json"))
        raise SystemExit(f"plan {name!r} not found ({path}); plans: {', '.join(known)}")
    plan = json.loads(path.read_text())
    plan["name"] = path.stem
    plan["path"] = str(path)
    for key in ("presets", "seeds", "imbalance_factors", "epochs"):
        if not plan.get(key):
            raise SystemExit(f"plan {path}: {key!r} must be a non-empty list")
    return plan


def _num(x: float) -> str:
    return f"{x:g}"


def expand(plan: dict) -> list[Job]:
    """The plan's jobs in run order: per (epochs, imbalance factor, seed) the warm-ups, then the
    runs in the plan's preset order."""
    jobs: list[Job] = []
    fractions = plan.get("warmup_fraction", {})
    share = plan.get("share_warmups", True)
    for epochs in plan["epochs"]:
        for imbalance_factor in plan["imbalance_factors"]:
            for seed in plan["seeds"]:
                tag = f"if{_num(imbalance_factor)}-s{seed}-e{epochs}"
                lengths = {p: warmup_epochs(epochs, fractions[p]) for p in plan["presets"] if p in fractions}
                groups: dict[str, list[int]] = {}
                for preset, w in lengths.items():
                    group = WARMUP_GROUP.get(preset)
                    if share and group in GROUP_BASE:
                        groups.setdefault(group, [])
                        if w not in groups[group]:
                            groups[group].append(w)
                warmups: dict[tuple[str, int], Job] = {}
                for group, ws in groups.items():
                    previous = None
                    for w in sorted(ws):
                        base = GROUP_BASE[group]
                        job = Job(f"warmup-{group}-{tag}-w{w}", "warmup", base, imbalance_factor, seed, epochs, w,
                                  start_epoch=previous.stop if previous else 0,
                                  start_from=previous.id if previous else None, group=group,
                                  views=VIEWS.get(base, 2))
                        warmups[group, w] = previous = job
                        jobs.append(job)
                for preset in plan["presets"]:
                    group, start = WARMUP_GROUP.get(preset), None
                    if preset in lengths and (group, lengths[preset]) in warmups:
                        start = warmups[group, lengths[preset]]
                    elif group in groups and GROUP_BASE.get(group) == preset:  # the contrastive preset itself
                        start = warmups[group, max(groups[group])]
                    jobs.append(Job(f"{preset}-{tag}", "run", preset, imbalance_factor, seed, epochs, epochs,
                                    start_epoch=start.stop if start else 0, start_from=start.id if start else None,
                                    warmup_epochs=lengths.get(preset), group=group,
                                    views=VIEWS.get(preset, 2)))
    by_id = {job.id: job for job in jobs}
    if len(by_id) != len(jobs):
        raise SystemExit(f"plan {plan['name']}: a preset, seed, imbalance factor or epoch budget is listed twice")
    for job in jobs:
        if job.start_from:
            by_id[job.start_from].dependants.append(job.id)
    return jobs


# --------------------------------------------------------------------------- state files


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON through a temporary file and a rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


class Queue:
    """Where one plan keeps its state: ``state_dir/<plan>/`` and ``results_dir/queue_<plan>.json``."""

    def __init__(self, plan: dict, state_dir: Path = STATE, results_dir: Path = RESULTS) -> None:
        self.plan = plan
        self.jobs = expand(plan)
        self.by_id = {job.id: job for job in self.jobs}
        self.dir = Path(state_dir) / plan["name"]
        self.results_path = Path(results_dir) / f"queue_{plan['name']}.json"
        self.state_path = self.dir / "state.json"
        self.lock_path = self.dir / "run.lock"
        self.current_path = self.dir / "current.json"  # the job a runner is on (local, like the lock)

    def job_dir(self, job: Job | str) -> Path:
        return self.dir / (job if isinstance(job, str) else job.id)

    def state(self) -> dict:
        return _read_json(self.state_path, {"plan": self.plan["name"], "jobs": {}})

    def mark(self, job: Job, status: str, **info: Any) -> None:
        state = self.state()
        state["jobs"][job.id] = {"status": status, "kind": job.kind, "preset": job.preset, "updated": _now(), **info}
        _write_json(self.state_path, state)

    def rows(self) -> list[dict]:
        return _read_json(self.results_path, [])

    def add_row(self, row: dict) -> None:
        rows = [r for r in self.rows() if r.get("job") != row["job"]] + [row]
        _write_json(self.results_path, rows)

    def progress(self, job: Job) -> dict | None:
        return _read_json(self.job_dir(job) / "progress.json", None)

    def is_done(self, job: Job, state: dict | None = None) -> bool:
        """A run is done when its row is recorded; a warm-up when its ``final.ckpt`` exists or
        every run that needs it is done."""
        state = self.state() if state is None else state
        if state["jobs"].get(job.id, {}).get("status") != "done":
            return False
        if job.kind == "run":
            return True
        return (self.job_dir(job) / "final.ckpt").exists() or all(
            self.is_done(self.by_id[d], state) for d in job.dependants)

    def holder(self) -> str | None:
        """Who holds the run lock (``pid ... on host since ...``), or None."""
        if not self.lock_path.exists():
            return None
        import fcntl

        with open(self.lock_path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "another process"
            fcntl.flock(f, fcntl.LOCK_UN)
        return None

    @contextlib.contextmanager
    def lock(self):
        """Hold ``run.lock`` (an ``flock``, released by the kernel when the process dies, so a
        killed runner leaves no stale lock); a second runner of the same plan exits."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.lock_path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            f.close()
            raise SystemExit(f"plan {self.plan['name']} is already being run ({who}); "
                             f"status: python -m benchmarks.jobqueue status {self.plan['name']}") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


# --------------------------------------------------------------------------- building blocks


class PresetUnavailable(Exception):
    """The installed dcl_cluster has no such preset (yet)."""


def preset_available(name: str) -> bool:
    from dcl_cluster.presets import PRESETS

    return name in PRESETS


def shared_cifar10_dir() -> Path:
    """The offline CIFAR-10 copy exported to arrays (once; the export is skipped when done).
    Looked for under ``$DCL_CLUSTER_SHARED_DATA``, ``../shared/data`` beside the checkout, then
    ``shared/data`` inside it (where a device machine gets it)."""
    candidates = [Path(os.environ["DCL_CLUSTER_SHARED_DATA"])] if os.environ.get("DCL_CLUSTER_SHARED_DATA") else []
    candidates += [REPO.parent / "shared" / "data", REPO / "shared" / "data"]
    for root in candidates:
        export = root / "cifar10" / "export.py"
        if export.exists():
            out = Path(os.environ.get("DCL_CLUSTER_CACHE", Path.home() / ".cache" / "dcl_cluster")) / "cifar10_arrays"
            subprocess.run([sys.executable, str(export), "arrays", str(out)], check=True, capture_output=True)
            return out
    raise SystemExit("the offline CIFAR-10 copy (cifar10/export.py) was not found under "
                     + ", ".join(map(str, candidates)) + ": set DCL_CLUSTER_SHARED_DATA")


def resolve_data_dir(plan: dict) -> str | None:
    data = plan.get("data", {})
    if data.get("dataset") == "npz" and data.get("data_dir") in (None, "shared:cifar10"):
        return str(shared_cifar10_dir())
    return data.get("data_dir")


def datamodule(plan: dict, job: Job, data_dir: str | None, views: list[str]):
    """The job's data module; ``views``: the extra views its module trains on. Views switched on
    during training (SCAN's neighbour and strong views) need workers that are not persistent."""
    from dcl_cluster import LongTailDataModule

    data = plan.get("data", {})
    kwargs = {"persistent_workers": not {"neighbor", "strong"} & set(views), **plan.get("data_kwargs", {})}
    return LongTailDataModule(data.get("dataset", "digits"), data_dir, imbalance_factor=job.imbalance_factor,
                              batch_size=plan["batch_size"], num_workers=plan.get("num_workers", 0),
                              seed=job.seed, clean_view="clean" in views, **kwargs)


def build_module(plan: dict, preset: str, warmup: int | None, **facts: Any):
    """``DebiasedClusterModule.from_preset`` with the plan's module-level settings only."""
    from dcl_cluster import DebiasedClusterModule

    if not preset_available(preset):
        raise PresetUnavailable(f"preset {preset!r} is not in this dcl_cluster")
    kwargs = dict(plan.get("module", {}))
    if plan.get("backbone") == "resnet18":
        from dcl_cluster.nn import ResNet

        kwargs["backbone"] = ResNet("resnet18", cifar_stem=True)
    if warmup is not None:
        kwargs["warmup_epochs"] = warmup
    return DebiasedClusterModule.from_preset(preset, **kwargs, **facts)


def extra_views(plan: dict, job: Job) -> list[str]:
    """The views ``job``'s module trains on besides the two augmented ones: its ``extra_views``
    when it has them, else ``["clean"]`` where :data:`VIEWS` says more than 2."""
    probe = build_module(plan, job.preset, job.warmup_epochs)  # not built: no parameters yet
    views = getattr(probe, "extra_views", None)
    return list(views) if views is not None else (["clean"] if job.views > 2 else [])


def _built(module) -> bool:
    return any(True for _ in module.parameters())


def adapt_checkpoint(source: Path, target: Path, plan: dict, source_preset: str, job: Job, facts: dict) -> list[str]:
    """Write ``target``: the checkpoint ``source`` (a warm-up's end) as a checkpoint of
    ``job.preset``, for Lightning to resume. Weights and Adam moments move by parameter name;
    parameters the warm-up lacks (the cluster heads) keep the fresh module's values and have no
    optimizer state yet, as in a run from scratch, where they get no gradient before
    ``warmup_epochs``; buffers of another shape (an empty cluster prior) keep the fresh ones.
    Loops, learning-rate schedule and data-module state carry over; of the callbacks' states
    only the epoch log's (:data:`EPOCH_LOG_KEY`). Returns the names that did not come from the
    warm-up."""
    import lightning.pytorch as pl
    import torch

    ckpt = torch.load(source, map_location="cpu", weights_only=False)
    pl.seed_everything(job.seed, verbose=False)  # the fresh heads: the same every time
    fresh = build_module(plan, job.preset, job.warmup_epochs, **facts)
    old = build_module(plan, source_preset, None, **facts)
    for module in (fresh, old):
        if not _built(module):
            module.setup("fit")
    names_old = [n for n, _ in old.named_parameters()]
    names_new = [n for n, _ in fresh.named_parameters()]
    state_old, state_new = ckpt["state_dict"], fresh.state_dict()
    lost = [n for n in names_old if n not in state_new or state_new[n].shape != state_old[n].shape]
    if lost:
        raise ValueError(f"{job.preset} lacks warm-up parameters {lost[:5]}: it cannot share the "
                         f"{source_preset} warm-up (WARMUP_GROUP in benchmarks/jobqueue.py)")
    state = dict(state_new)
    for key, value in state_old.items():
        if key in state_new and state_new[key].shape == value.shape:
            state[key] = value
    fresh_names = [k for k in state_new if k not in state_old or state_new[k].shape != state_old[k].shape]
    (optim,) = ckpt["optimizer_states"]
    params = [i for group in optim["param_groups"] for i in group["params"]]
    if len(optim["param_groups"]) != 1 or params != list(range(len(names_old))):
        raise ValueError("adapt_checkpoint maps one optimizer parameter group in named_parameters() order; "
                         f"the warm-up has {len(optim['param_groups'])} group(s) over {len(params)} tensors "
                         f"for {len(names_old)} parameters")
    index_old = {name: i for i, name in enumerate(names_old)}
    moments = {j: optim["state"][index_old[n]] for j, n in enumerate(names_new)
               if n in index_old and index_old[n] in optim["state"]}
    group = {**optim["param_groups"][0], "params": list(range(len(names_new)))}
    ckpt["optimizer_states"] = [{"state": moments, "param_groups": [group]}]
    ckpt["state_dict"] = state
    ckpt["callbacks"] = {k: v for k, v in ckpt.get("callbacks", {}).items() if k == EPOCH_LOG_KEY}
    ckpt["hyper_parameters"] = dict(fresh.hparams)
    with contextlib.suppress(Exception):  # a module that adds to its checkpoints (term configs)
        fresh.on_save_checkpoint(ckpt)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, target)
    return fresh_names


def epoch_log_in(checkpoint: Path) -> dict:
    """The epoch log's state in a checkpoint of this queue: its length is the epochs done."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return ckpt.get("callbacks", {}).get(EPOCH_LOG_KEY, {"epoch_times_s": [], "epoch_loss": []})


def _callbacks():
    """The queue's callbacks, defined on first use so that ``status`` needs no Lightning."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import Checkpoint

    class _EpochLog(pl.Callback):
        """Per-epoch wall time and mean training loss, kept in the checkpoint (so a resumed
        job has the whole history) and in ``progress.json``; ends the job after ``stop`` epochs;
        ``DCL_QUEUE_KILL_AT=<job>:<epoch>:<batch>`` SIGKILLs the process there (tests)."""

        def __init__(self, progress: Path, job: Job) -> None:
            self.progress, self.job = progress, job
            self.epoch_times_s: list[float] = []
            self.epoch_loss: list[float] = []
            kill = os.environ.get(KILL_ENV, "").rsplit(":", 2)
            self.kill_at = (int(kill[1]), int(kill[2])) if len(kill) == 3 and kill[0] == job.id else None

        @property
        def state_key(self) -> str:
            return EPOCH_LOG_KEY

        def state_dict(self) -> dict:
            return {"epoch_times_s": list(self.epoch_times_s), "epoch_loss": list(self.epoch_loss)}

        def load_state_dict(self, state: dict) -> None:
            self.epoch_times_s = list(state.get("epoch_times_s", []))
            self.epoch_loss = list(state.get("epoch_loss", []))

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start, self._sum, self._n = time.perf_counter(), torch.zeros((), dtype=torch.float64), 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.kill_at == (trainer.current_epoch, batch_idx):
                print(f"{KILL_ENV}: killing the queue in {self.job.id} at epoch {trainer.current_epoch}, "
                      f"batch {batch_idx}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self._sum = self._sum + loss.detach().double().cpu()
            self._n += 1

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.epoch_times_s.append(time.perf_counter() - self._start)
            self.epoch_loss.append(float(self._sum) / max(self._n, 1))
            _write_json(self.progress, {"job": self.job.id, "epochs_done": len(self.epoch_times_s),
                                        "stop": self.job.stop, "start_epoch": self.job.start_epoch,
                                        "epoch_times_s": self.epoch_times_s, "epoch_loss": self.epoch_loss,
                                        "updated": _now()})
            if len(self.epoch_times_s) >= self.job.stop:
                trainer.should_stop = True

    class _LastCheckpoint(Checkpoint):
        """``last.ckpt`` at the end of every epoch, through a temporary file and a rename.
        A ``Checkpoint``, so Lightning calls it after the other callbacks and the module."""

        def __init__(self, path: Path) -> None:
            self.path = path

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            trainer.save_checkpoint(tmp)
            os.replace(tmp, self.path)

    return _EpochLog, _LastCheckpoint


# --------------------------------------------------------------------------- one job


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run_job(queue: Queue, job: Job, data_dir: str | None, log=print) -> dict | None:
    """Train ``job`` from its last checkpoint (or its warm-up's end, or scratch) to ``job.stop``;
    a run is then scored and its row returned, a warm-up keeps ``final.ckpt``."""
    import lightning.pytorch as pl
    import torch

    plan = queue.plan
    if not preset_available(job.preset):
        raise PresetUnavailable(f"preset {job.preset!r} is not in this dcl_cluster")
    jobdir = queue.job_dir(job)
    jobdir.mkdir(parents=True, exist_ok=True)
    last, start = jobdir / "last.ckpt", jobdir / "start.ckpt"
    views = extra_views(plan, job)
    pl.seed_everything(job.seed, verbose=False)
    dm = datamodule(plan, job, data_dir, views)
    dm.setup("fit")
    facts = {"in_channels": dm.num_channels, "input_size": dm.image_size, "num_clusters": dm.num_classes}
    resumes, ckpt_path, done = 0, None, 0
    if last.exists():
        logged = epoch_log_in(last)
        ckpt_path, done = last, len(logged["epoch_times_s"])
        resumes = _read_json(jobdir / "resumes.json", 0) + 1
        _write_json(jobdir / "resumes.json", resumes)
        log(f"  resuming {job.id} from its last checkpoint (epoch {done} of {job.stop})")
        if job.kind == "warmup" and done >= job.stop:  # killed between its last epoch and the rename
            os.replace(last, jobdir / "final.ckpt")
            start.unlink(missing_ok=True)
            return {"epoch_times_s": logged["epoch_times_s"], "train_s": sum(logged["epoch_times_s"])}
    elif job.start_from:
        source = queue.job_dir(job.start_from) / "final.ckpt"
        fresh = adapt_checkpoint(source, start, plan, queue.by_id[job.start_from].preset, job, facts)
        ckpt_path, done = start, job.start_epoch
        log(f"  {job.id} starts from {job.start_from} (epoch {done})"
            + (f"; fresh: {', '.join(sorted({k.split('.')[0] for k in fresh}))}" if fresh else ""))
    pl.seed_everything(job.seed, verbose=False)
    module = build_module(plan, job.preset, job.warmup_epochs)
    epoch_log_cls, last_cls = _callbacks()
    epoch_log = epoch_log_cls(jobdir / "progress.json", job)
    trainer = pl.Trainer(accelerator=plan.get("accelerator", "cpu"), devices=1, max_epochs=job.epochs,
                         precision=plan.get("precision", "32-true"), logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         enable_checkpointing=True, callbacks=[epoch_log, last_cls(last)],
                         default_root_dir=str(jobdir))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    # a run whose last checkpoint is at its end (killed while scoring) is restored and not trained
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if len(epoch_log.epoch_times_s) < job.stop:
        raise RuntimeError(f"{job.id} stopped after {len(epoch_log.epoch_times_s)} of {job.stop} epochs")
    train_s = sum(epoch_log.epoch_times_s)
    if job.kind == "warmup":
        os.replace(last, jobdir / "final.ckpt")
        start.unlink(missing_ok=True)
        return {"epoch_times_s": epoch_log.epoch_times_s, "train_s": train_s}
    if os.environ.get(KILL_ENV) == f"{job.id}:score":
        print(f"{KILL_ENV}: killing the queue before {job.id} is scored", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if plan.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        module.cuda()  # Lightning hands the module back on the CPU
    begin = time.perf_counter()
    scores = score(module, dm, job.seed)
    score_s = time.perf_counter() - begin
    row = {"preset": job.preset, "seed": job.seed, "imbalance_factor": job.imbalance_factor, "epochs": job.epochs,
           "warmup_epochs": job.warmup_epochs or 0, "recipe": plan.get("recipe"),
           "precision": plan.get("precision", "32-true"), "width": plan.get("module", {}).get("backbone_width"),
           "plan": plan["name"], "job": job.id, "started_from": job.start_from, "shared_epochs": job.start_epoch,
           "clean_view": "clean" in views, "extra_views": views, "batch_size": plan["batch_size"],
           "dataset": plan.get("data", {}).get("dataset"),
           "wall_s": train_s, "train_s": train_s, "score_s": score_s,
           "epoch_times_s": epoch_log.epoch_times_s, "epoch_loss": epoch_log.epoch_loss,
           "final_loss": epoch_log.epoch_loss[-1], "settings": _json_safe(dict(module.hparams)),
           **scores,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "resumes": resumes, "finished": _now(), "machine": machine()}
    if torch.cuda.is_available():
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def machine() -> dict:
    """Where a row was computed: a plan finished across machines stays auditable (the last bits
    of a result depend on the CPU's kernels, the torch build and the thread count)."""
    import torch

    info = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# --------------------------------------------------------------------------- run


def git_commit(paths: list[Path], message: str, log=print) -> None:
    """Commit ``paths`` (additions and deletions) and nothing else; retries on index.lock."""
    rel = [str(p.relative_to(REPO)) if p.is_absolute() and REPO in p.parents else str(p) for p in paths]
    # a path neither on disk nor tracked (a warm-up writes no results yet) would fail the whole add
    rel = [r for r in rel if (REPO / r).exists() or subprocess.run(
        ["git", "ls-files", "--error-unmatch", "--", r], cwd=REPO, capture_output=True).returncode == 0]
    if not rel:
        return
    for attempt in range(10):
        add = subprocess.run(["git", "add", "-A", "--", *rel], cwd=REPO, capture_output=True, text=True)
        if add.returncode == 0:
            done = subprocess.run(["git", "commit", "-q", "-m", message, "--", *rel], cwd=REPO,
                                  capture_output=True, text=True)
            if done.returncode == 0 or "nothing" in done.stdout + done.stderr:
                return
            err = done.stderr
        else:
            err = add.stderr
        if "index.lock" not in err:
            log(f"  git commit failed: {err.strip()[-300:]}")
            return
        time.sleep(3 + attempt)
    log("  git commit gave up: index.lock stayed")


def cleanup_warmups(queue: Queue) -> None:
    """Drop the checkpoints of warm-ups whose dependants are all done."""
    state = queue.state()
    for job in queue.jobs:
        if job.kind == "warmup" and all(queue.is_done(queue.by_id[d], state) for d in job.dependants):
            (queue.job_dir(job) / "final.ckpt").unlink(missing_ok=True)


def run(queue: Queue, commit: bool = False, only: list[str] | None = None, stop_on_error: bool = False,
        log=print) -> list[dict]:
    """Run every unfinished job of the plan in order; returns the rows written by this call."""
    import torch

    plan, written = queue.plan, []
    threads = torch.get_num_threads()
    with queue.lock():
        if plan.get("threads"):
            torch.set_num_threads(int(plan["threads"]))
        try:
            data_dir = resolve_data_dir(plan)
            for job in queue.jobs:
                state = queue.state()
                if queue.is_done(job, state) or (only and not any(s in job.id for s in only)):
                    continue
                if job.kind == "warmup" and all(queue.is_done(queue.by_id[d], state) for d in job.dependants):
                    continue
                if job.start_from and not (queue.job_dir(job.start_from) / "final.ckpt").exists():
                    if not (queue.job_dir(job) / "last.ckpt").exists():
                        log(f"{job.id}: waits for {job.start_from}")
                        continue
                log(f"{job.id}: {job.kind} of {job.preset}, epochs {job.start_epoch}..{job.stop} of {job.epochs}")
                _write_json(queue.current_path, {"job": job.id, "since": _now()})
                try:
                    result = run_job(queue, job, data_dir, log)
                except PresetUnavailable as e:
                    queue.mark(job, "blocked", error=str(e))
                    log(f"  blocked: {e}")
                    continue
                except Exception as e:  # one broken job does not stop the queue
                    queue.mark(job, "failed", error=traceback.format_exc()[-3000:])
                    log(f"  FAILED: {type(e).__name__}: {e}")
                    if stop_on_error:
                        raise
                    continue
                if job.kind == "run":
                    queue.add_row(result)
                    queue.mark(job, "done", epoch_times_s=result["epoch_times_s"], train_s=result["train_s"],
                               score_s=result["score_s"])
                    written.append(result)
                    for name in ("last.ckpt", "start.ckpt"):
                        (queue.job_dir(job) / name).unlink(missing_ok=True)
                    log(f"  done: {_fmt_s(result['train_s'])} training, {result['score_s']:.0f} s scoring: "
                        f"NMI {result['train']['nmi']:.3f}, test NMI {result['test']['nmi']:.3f}, "
                        f"final loss {result['final_loss']:.4f}")
                else:
                    queue.mark(job, "done", **result)
                    log(f"  warm-up done: {_fmt_s(result['train_s'])}")
                cleanup_warmups(queue)
                gc.collect()  # the job's data and model, before the next one loads its own
                if commit:
                    git_commit([queue.results_path, queue.dir], f"queue {plan['name']}: {job.id} done", log)
        finally:
            queue.current_path.unlink(missing_ok=True)
            torch.set_num_threads(threads)
    return written


# --------------------------------------------------------------------------- status


def _views(job: Job) -> int:
    return job.views


def estimates(queue: Queue) -> dict:
    """Per job: status, epochs done and seconds left, from measured epoch times of this plan
    (same preset and views, else same views), else the plan's ``default_epoch_s``, else
    :data:`FALLBACK_EPOCH_S`."""
    state = queue.state()
    plan = queue.plan
    measured: dict[tuple, list[float]] = {}
    score_times: list[float] = []
    progress = {job.id: queue.progress(job) for job in queue.jobs}
    for job in queue.jobs:
        info = state["jobs"].get(job.id, {})
        times = info.get("epoch_times_s") or (progress[job.id] or {}).get("epoch_times_s") or []
        own = times[job.start_epoch:] if len(times) > job.start_epoch else []
        for key in ((job.preset, _views(job), job.imbalance_factor), (_views(job), job.imbalance_factor)):
            measured.setdefault(key, []).extend(own)
        if info.get("score_s"):
            score_times.append(info["score_s"])
    defaults = plan.get("default_epoch_s", {})
    default_score = statistics.median(score_times) if score_times else plan.get("default_score_s", FALLBACK_SCORE_S)
    holder = queue.holder()
    current = _read_json(queue.current_path, {}).get("job")
    out = []
    for job in queue.jobs:
        info = state["jobs"].get(job.id, {})
        prog = progress[job.id] or {}
        done_epochs = max(prog.get("epochs_done", 0), job.start_epoch)
        if queue.is_done(job, state):
            status = "done"
        elif info.get("status") in ("blocked", "failed") and done_epochs <= job.start_epoch:
            status = info["status"]
        elif holder and job.id == current:
            status = "running"
        elif prog and done_epochs > job.start_epoch or job.id == current:
            status = "partial"
        else:
            status = "left"
        keys = [((job.preset, _views(job), job.imbalance_factor), "measured"),
                ((_views(job), job.imbalance_factor), "measured, same views")]
        found = [(statistics.median(measured[k]), src) for k, src in keys if measured.get(k)]
        if found:
            per_epoch, source = found[0]
        elif str(_views(job)) in defaults:
            per_epoch, source = float(defaults[str(_views(job))]), "plan default"
        elif "2" in defaults:  # the backbone's work grows with the views (3 views: about 1.5x)
            per_epoch, source = float(defaults["2"]) * _views(job) / 2, "plan default x views / 2"
        else:
            per_epoch, source = FALLBACK_EPOCH_S, "fallback"
        left = 0.0 if status == "done" else (job.stop - done_epochs) * per_epoch + (
            default_score if job.kind == "run" else 0.0)
        out.append({"job": job.id, "kind": job.kind, "preset": job.preset, "status": status,
                    "epochs_done": done_epochs if status != "done" else job.stop, "stop": job.stop,
                    "start_epoch": job.start_epoch, "views": _views(job), "s_per_epoch": per_epoch,
                    "source": source, "left_s": left, "error": info.get("error", "")[-300:]})
    return {"plan": plan["name"], "holder": holder, "jobs": out,
            "left_s": sum(j["left_s"] for j in out),
            "total_s": sum((j["stop"] - j["start_epoch"]) * j["s_per_epoch"] + (
                default_score if j["kind"] == "run" else 0.0) for j in out)}


def _fmt_s(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def status_text(queue: Queue) -> str:
    est = estimates(queue)
    jobs = est["jobs"]
    count = {k: sum(j["status"] == k for j in jobs) for k in ("done", "running", "partial", "left", "blocked",
                                                              "failed")}
    lines = [f"plan {est['plan']} ({queue.plan.get('path', '')}): {len(jobs)} jobs: "
             + ", ".join(f"{n} {k}" for k, n in count.items() if n),
             f"runner: {est['holder'] or 'none'}",
             f"time left: {_fmt_s(est['left_s'])} of {_fmt_s(est['total_s'])} for the whole plan "
             f"(one job at a time, {queue.plan.get('threads') or 'all'} threads)",
             f"results: {queue.results_path}"]
    for kind in ("done", "running", "partial", "left", "blocked", "failed"):
        group = [j for j in jobs if j["status"] == kind]
        if not group:
            continue
        lines.append(f"{kind}:")
        for j in group:
            epochs = f"epoch {j['epochs_done']}/{j['stop']}"
            if j["start_epoch"]:
                epochs += f" (from {j['start_epoch']})"
            est_txt = "" if kind == "done" else (
                f"  ~{_fmt_s(j['left_s'])} left at {j['s_per_epoch']:.1f} s/epoch ({j['source']}, {j['views']} views)")
            err = f"  {j['error'].strip().splitlines()[-1]}" if j["error"] and kind in ("blocked", "failed") else ""
            lines.append(f"  {j['job']:45s} {epochs:24s}{est_txt}{err}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def main(argv=None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jobqueue", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the plan's unfinished jobs"), ("status", "done / running / left"),
                       ("jobs", "list the plan's jobs (JSON)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("plan", help="a name in benchmarks/plans/ or a path to a plan .json")
        p.add_argument("--state-dir", type=Path, default=STATE)
        p.add_argument("--results-dir", type=Path, default=RESULTS)
        if name == "run":
            p.add_argument("--commit", action="store_true",
                           help="git-commit the results and the plan's state after every job")
            p.add_argument("--only", nargs="+", help="run only jobs whose id contains one of these")
            p.add_argument("--stop-on-error", action="store_true")
        if name == "status":
            p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    queue = Queue(load_plan(args.plan), args.state_dir, args.results_dir)
    if args.command == "jobs":
        print(json.dumps([asdict(j) for j in queue.jobs], indent=2))
        return queue.jobs
    if args.command == "status":
        if args.json:
            est = estimates(queue)
            print(json.dumps(est, indent=2))
            return est
        text = status_text(queue)
        print(text)
        return text
    return run(queue, commit=args.commit, only=args.only, stop_on_error=args.stop_on_error,
               log=lambda *a: print(*a, flush=True))


if __name__ == "__main__":
    main()
