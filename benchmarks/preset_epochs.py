"""Each preset's training step in a Trainer against ``dcl``'s step plus the preset's own cost
(issue 25: every preset within 10% of ``dcl``'s time plus its own head's cost).

For every preset, one fit of three short epochs (a warm-up epoch, then two clustering
epochs: SCAN's neighbour stage and its self-labelling stage fall one in each) on ready batches
of every view the preset's terms ask for (random tensors, 256 images at 32 px; the images of a
generated folder only place the head and mine SCAN's neighbours), SmallCNN of width 32,
bf16 autocast, channels-last, as ``benchmarks/quality.py`` trains. Per epoch:

- ``trainer_s``: the median step time in the Trainer (the epoch's first step left out);
- ``bare_s``: the median time of the same module's step (``shared_step``, ``loss_terms``,
  backward, the optimizer) run by hand right after each Trainer step, on the same batch cut to
  the views the terms that run in that epoch read: the least the preset's method costs (the
  two alternate, so a drift of the machine hits both alike).

The bare step reads the terms' own ``reads()``, so it cannot show a ``reads()`` that is too
wide; the "before" column (every served view forwarded) shows what narrowing them saved.
The preset's own cost is ``bare_s - dcl's bare_s`` of the same phase, and the check is
``trainer_s <= 1.1 x (dcl's trainer_s + own cost)``. ``--before REF`` also times the Trainer
part with the package of an earlier commit (a git worktree, in a process of its own), so the
table shows before and after on one machine in one run.

    python -m benchmarks.preset_epochs                   # every preset, now and --before
    python -m benchmarks.preset_epochs --presets dcl scan --steps 6

Writes ``benchmarks/results/preset_epochs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "preset_epochs.json"
BATCH, SIZE, WIDTH = 256, 32, 32
#: the commit before views per phase and the per-epoch plan (9167b8e): every served view forwarded
BEFORE_REF = "9167b8e^"
PHASES = ("warm-up", "clustering 1", "clustering 2")


def _folder(root: Path) -> Path:
    """A small generated array source (1,000 images): it places the head and feeds SCAN's mining."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1000, SIZE, SIZE, 3), dtype=np.uint8)
    y = np.arange(1000) % 10
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "data.npz", x=x, y=y)
    return root


def read_now(module) -> set[str]:
    """The views the terms that run on this epoch's steps read (the least a step must forward)."""
    running, _ = module._step_plan(module.clustering_active)
    read = {"a"}
    for term, _ in running:
        read |= set(term.reads(module.current_epoch, module.clustering_active))
    return read


def fit_preset(name: str, steps: int, bare: bool, data: Path) -> list[dict]:
    """One fit of ``name``: per epoch the Trainer's median step and (``bare``) the bare loop's."""
    import lightning.pytorch as pl

    from dcl_cluster import DebiasedClusterModule, LongTailDataModule
    from dcl_cluster.presets import preset

    torch.set_num_threads(2)
    pl.seed_everything(0, verbose=False)
    module = DebiasedClusterModule(objectives=preset(name)["objectives"], backbone_width=WIDTH, in_channels=3,
                                   input_size=SIZE, num_clusters=10, warmup_epochs=1, channels_last=True,
                                   kmeans_n_init=1)
    views = ["a", "b", *module.extra_views]  # every view the datamodule may serve (each from its epoch)
    g = torch.Generator().manual_seed(0)
    batches = [({v: torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for v in views},
                torch.zeros(BATCH, dtype=torch.long), torch.arange(BATCH)) for _ in range(steps + 1)]

    class EpochBatches:
        """The ready batches with the views the datamodule's own dataset serves in this epoch."""

        def __init__(self, dm):
            self.dm = dm

        def __len__(self):
            return len(batches)

        def __iter__(self):
            ds, epoch = self.dm.train_dataset, self.dm.trainer.current_epoch
            table = ds.neighbors
            now = {"a", "b", *(["clean"] if ds.clean is not None else []),
                   *(["neighbor"] if table is not None and bool((table[:, 0] >= 0).any()) else []),
                   *(["strong"] if ds.strong is not None and epoch >= ds.strong_from_epoch else [])}
            for x, y, index in batches:
                yield {v: t for v, t in x.items() if v in now}, y, index

    class ReadyBatches(LongTailDataModule):
        def train_dataloader(self):
            return EpochBatches(self)

    dm = ReadyBatches("npz", str(data), imbalance_factor=1.0, image_size=SIZE, batch_size=BATCH, num_workers=0,
                      mean=[0.5] * 3, std=[0.5] * 3)
    rows = []

    class Timer(pl.Callback):
        """Times each Trainer step and, right after it (``bare``), one bare step on the same
        batch: the two alternate, so a drift of the machine hits both alike."""

        def on_train_epoch_start(self, trainer, module):
            self.times, self.bare_times, self.read = [], [], None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.start, self.served = time.perf_counter(), list(batch[0])

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self.start)
            if bare:
                if self.read is None:  # after the module's epoch-start hooks (the head placed)
                    self.read = read_now(module)
                self.bare_times.append(bare_step(module, trainer.optimizers[0], batch, self.read))

        def on_train_epoch_end(self, trainer, module):
            row = {"preset": name, "phase": PHASES[trainer.current_epoch], "served": self.served,
                   "trainer_s": statistics.median(self.times[1:])}
            if bare:
                row["read"] = sorted(self.read, key=views.index)
                forwarded = module._step_plan(module.clustering_active)[1] & set(self.served)
                row["forwarded"] = [v for v in views if v in forwarded]
                row["bare_s"] = statistics.median(self.bare_times[1:])
            rows.append(row)

    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=len(PHASES), precision="bf16-mixed", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Timer()])
    trainer.fit(module, datamodule=dm)
    return rows


def bare_step(module, optimizer, batch, read: set[str]) -> float:
    """Seconds of the module's step on ``batch`` cut to the views in ``read`` (``b`` kept for
    the batch's form where it is not read: the module does not forward it then)."""
    views, _, index = batch
    keep = {k: v for k, v in views.items() if k in read or k == "b"}
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = module.shared_step(keep, index)
        loss = sum(w * v for w, v in module.loss_terms(step).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def _child(names: list[str], steps: int, bare: bool) -> None:
    """Print ``ROWS`` and the rows of every preset, timed with the dcl_cluster this process imports."""
    import dcl_cluster

    with tempfile.TemporaryDirectory() as tmp:
        data = _folder(Path(tmp) / "data")
        rows = [{**row, "package": str(Path(dcl_cluster.__file__).parent.parent)}
                for name in names for row in fit_preset(name, steps, bare, data)]
    print("ROWS" + json.dumps(rows))


def run_with(package: Path | None, names: list[str], steps: int, bare: bool) -> list[dict]:
    """:func:`_child` in a fresh process importing dcl_cluster from ``package`` (default: this
    checkout); this file runs as a script there, so no other ``benchmarks`` shadows it."""
    env = {**os.environ, "PYTHONPATH": str(package if package is not None else HERE.parent)}  # that checkout
    cmd = [sys.executable, __file__, "--child", json.dumps([names, steps, bare])]
    out = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("ROWS")]
    if out.returncode or not lines:
        raise SystemExit(f"the timing process failed:\n{out.stderr[-3000:]}")
    rows = json.loads(lines[-1][4:])
    if package is not None and any(Path(r["package"]).resolve() != package.resolve() for r in rows):
        raise SystemExit(f"the timing process imported dcl_cluster from {rows[0]['package']}, not {package}")
    return rows


def worktree(ref: str) -> Path:
    """The package at ``ref``, checked out beside this one (once)."""
    path = Path(tempfile.gettempdir()) / f"dcl_cluster_{ref.replace('^', '_parent').replace('/', '_')}"
    if not path.exists():
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(path), ref], check=True,
                       capture_output=True)
    return path


def checks(rows: list[dict], before: list[dict]) -> list[dict]:
    """Per preset and phase: now and before in the Trainer, the bare step, the own cost and the check."""
    dcl = {r["phase"]: r for r in rows if r["preset"] == "dcl"}
    then = {(r["preset"], r["phase"]): r["trainer_s"] for r in before}
    out = []
    for r in rows:
        own = r["bare_s"] - dcl[r["phase"]]["bare_s"]
        allowed = 1.1 * (dcl[r["phase"]]["trainer_s"] + own)
        out.append({**r, "before_s": then.get((r["preset"], r["phase"])), "own_cost_s": own,
                    "allowed_s": allowed, "within": r["trainer_s"] <= allowed})
    return out


def table(rows: list[dict]) -> list[str]:
    lines = ["| preset | phase | views forwarded (~~struck~~: no running term reads it) | step before (s) | "
             "step now (s) | bare step (s) | dcl + own cost (s) | now / (dcl + own) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        before = f"{r['before_s']:.3f}" if r.get("before_s") is not None else ""
        views = ", ".join(v if v in r["read"] else f"~~{v}~~" for v in r["forwarded"])
        lines.append(f"| {r['preset']} | {r['phase']} | {views} | {before} | {r['trainer_s']:.3f} | "
                     f"{r['bare_s']:.3f} | {r['allowed_s'] / 1.1:.3f} | {r['trainer_s'] * 1.1 / r['allowed_s']:.2f} |")
    return lines


def main(argv=None) -> list[dict]:
    from dcl_cluster.presets import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per epoch (one more is run)")
    parser.add_argument("--before", default=BEFORE_REF, help="the commit to compare with ('' for none)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = list(dict.fromkeys(["dcl", *args.presets]))
    now = run_with(None, names, args.steps, bare=True)
    write = {"steps": args.steps, "batch": BATCH, "px": SIZE, "before": args.before, "cpus": os.cpu_count()}
    args.out.write_text(json.dumps({**write, "rows": checks(now, [])}, indent=1) + "\n")  # kept if before fails
    before = run_with(worktree(args.before), names, args.steps, bare=False) if args.before else []
    rows = checks(now, before)
    print("\n".join(table(rows)))
    args.out.write_text(json.dumps({**write, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(*json.loads(sys.argv[2]))
    else:
        main()
