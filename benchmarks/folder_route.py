"""The photo-folder route from scratch against the model alone (issue 25: at least 0.7x the
model-only rate).

A generated folder of 590 photos (``examples/cluster_folder.py``'s coloured shapes, 64 px
PNGs) trained by ``dcl-cluster fit --config examples/configs/cluster_folder_scratch.yaml`` as a
user runs it (a subprocess; its own loader workers), for a few epochs, each epoch timed by a
callback added on the command line; against the same module's step (``shared_step``,
``loss_terms``, backward, the optimizer) in a bare loop
over ready batches of the views the route's epochs forward, at the config's batch size and
precision.

The run has ``--epochs`` warm-up epochs and one clustering epoch (the config's warm-up is 30:
the warm-up is what a from-scratch run spends most epochs in). Rates count images (each with
all its views) over the warm-up epochs after the first (worker start-up and the first
batches' kernels); the run's wall time and CPU seconds (user, sys) are reported.

    python -m benchmarks.folder_route                  # about 2 minutes on 2 idle cores
    python -m benchmarks.folder_route --set trainer.precision=32-true model.channels_last=false

Writes a row per settings to ``benchmarks/results/folder_route.json`` (a rerun replaces its own).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from benchmarks.common import shape_photo_folder

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIG = REPO / "examples" / "configs" / "cluster_folder_scratch.yaml"
RESULTS = HERE / "results" / "folder_route.json"
COUNTS, PX = (300, 150, 80, 40, 20), 64


class EpochClock(pl.Callback):
    """Every training epoch's wall seconds, images and views forwarded (:attr:`rows`), also
    written to ``$DCL_CLUSTER_EPOCH_CLOCK`` (a JSON list) where it is set: the route's
    subprocess adds it with ``--trainer.callbacks+=``."""

    def __init__(self):
        self.rows, self.path = [], os.environ.get("DCL_CLUSTER_EPOCH_CLOCK")

    def on_train_epoch_start(self, trainer, module):
        self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.images += len(batch[2])

    def on_train_epoch_end(self, trainer, module):
        self.rows.append({"epoch": trainer.current_epoch, "s": time.perf_counter() - self.start,
                          "images": self.images, "views": len(module._step_plan(module.clustering_active)[1])})
        if self.path:
            Path(self.path).write_text(json.dumps(self.rows))


def route(photos: Path, work: Path, epochs: int, extra: list[str]) -> dict:
    """The route as a user runs it, in a subprocess: epoch times, wall, user and sys seconds."""
    clock = work / "epochs.json"
    env = {**os.environ, "DCL_CLUSTER_EPOCH_CLOCK": str(clock), "PYTHONPATH": str(REPO)}
    cmd = [str(Path(sys.executable).parent / "dcl-cluster"), "fit", "--config", str(CONFIG),
           f"--data.data_dir={photos}", f"--trainer.default_root_dir={work / 'runs'}",
           f"--trainer.max_epochs={epochs + 1}", f"--model.warmup_epochs={epochs}",
           "--trainer.enable_progress_bar=false",
           "--trainer.callbacks+=benchmarks.folder_route.EpochClock", *[f"--{s}" for s in extra]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(f"the route failed:\n{out.stderr[-3000:]}")
    rows = json.loads(clock.read_text())
    return {"epochs": rows, "wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime}


def model_only(views: int, settings: list[str], steps: int = 8) -> float:
    """Images/s of the config's module step alone (its precision, its model settings, with
    ``settings`` over them) on ready batches of ``views`` views."""
    import importlib

    import yaml

    from dcl_cluster import DebiasedClusterModule
    from dcl_cluster.optim import build_optimizer

    config = yaml.safe_load(CONFIG.read_text())
    for setting in settings:  # model.x=v and trainer.precision=v, as the command line sets them
        key, value = setting.split("=", 1)
        section, name = key.split(".", 1)
        config.setdefault(section, {})[name] = yaml.safe_load(value)
    model = dict(config["model"])
    bf16 = str(config["trainer"].get("precision", "32-true")).startswith("bf16")
    px = int(config["data"]["image_size"])
    objectives = []
    for spec in model.pop("objectives"):
        where, name = spec["class_path"].rsplit(".", 1)
        objectives.append(getattr(importlib.import_module(where), name)(**spec.get("init_args", {})))
    batch = config["data"]["batch_size"]
    torch.set_num_threads(os.cpu_count() or 1)
    module = DebiasedClusterModule(objectives=objectives, in_channels=3, input_size=px, **model)
    module.setup("fit")  # builds the backbone and heads (no datamodule: the sizes are given)
    hp = module.hparams  # the module's own optimizer (its schedule is not stepped here)
    built = build_optimizer(module.parameters(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum,
                            hp.lr_warmup_epochs, hp.cosine, steps + 1, 1)
    optimizer = built["optimizer"] if isinstance(built, dict) else built
    g = torch.Generator().manual_seed(0)
    names = ["a", "b", "clean"][:views]
    batches = [{n: torch.randn(batch, 3, px, px, generator=g) for n in names} for _ in range(steps + 1)]
    times = []
    for x in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step = module.shared_step(x if "b" in x else {**x, "b": x["a"]}, torch.arange(batch))
            loss = sum(w * v for w, v in module.loss_terms(step).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times[1:])


def table(rows: list[dict]) -> list[str]:
    """docs/benchmarks.md's rows: one per settings measured."""
    lines = ["| settings | route (img/s) | model alone (img/s) | route / model | epoch (s) | run wall (s) | "
             "user / sys CPU (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        setting = ", ".join(f"`{s}`" for s in r["settings"]) or "as shipped"
        epoch = statistics.median(e["s"] for e in r["epochs"][1:-1])
        lines.append(f"| {setting} | {r['route_img_s']:.0f} | {r['model_only_img_s']:.0f} | {r['ratio']:.2f}x | "
                     f"{epoch:.1f} | {r['wall_s']:.0f} | {r['user_s']:.0f} / {r['sys_s']:.0f} |")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], help="extra CLI settings, e.g. data.num_workers=0")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be at least 2 (the first is not timed), got {args.epochs}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = shape_photo_folder(work / "photos", COUNTS, PX)
        ran = route(photos, work, args.epochs, args.set)
    timed = ran["epochs"][1:args.epochs]  # warm-up epochs after the first (the last, clustering, k-means first)
    route_rate = sum(r["images"] for r in timed) / sum(r["s"] for r in timed)
    views = timed[0]["views"]
    alone = model_only(views, args.set)
    row = {"photos": sum(COUNTS), "px": PX, "settings": args.set, "views_forwarded": views, **ran,
           "route_img_s": route_rate, "model_only_img_s": alone, "ratio": route_rate / alone, "cpus": os.cpu_count()}
    print(f"route {route_rate:.0f} img/s, model alone {alone:.0f} img/s ({views} views): {row['ratio']:.2f}x; "
          f"wall {ran['wall_s']:.0f} s, user {ran['user_s']:.0f} s, sys {ran['sys_s']:.0f} s")
    if args.out:  # one row per settings: a rerun replaces its own
        rows = json.loads(args.out.read_text()) if args.out.exists() else []
        rows = [r for r in rows if r["settings"] != row["settings"]] + [row]
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return row


if __name__ == "__main__":
    main()
