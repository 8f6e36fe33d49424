"""GPU evidence for the ResNet-18 CIFAR-10-LT recipe: epoch time, images/s, peak GPU memory,
and whether the data loader keeps the GPU fed.

On one GPU it trains each preset (``dcl``, ``dcl_cluster``, and ``p2ot`` once the installed
``dcl_cluster`` has it; a missing preset is recorded as skipped) with the recipe of
``examples/configs/recipes/cifar10_lt_resnet18_gpu.yaml`` (ResNet-18 with the CIFAR stem,
batch 512, Adam 1e-3 with 10 learning-rate warm-up epochs and cosine decay over 500 epochs,
projector 2048, bf16-mixed, channels-last, CIFAR-10-LT IF 100) for as many epochs as fit in
its share of ``--budget-s`` (8 minutes in all by default), then scores it once. The
clustering terms start after ``--warmup-epochs`` (1: the recipe's 100 would never be reached,
and the clustering epochs are the ones to time). Before that it measures the training loader's
images/s with 1/4, 1/2 and all of the CPU cores as workers, two and three views, and trains
with the fastest worker count.

    python -m benchmarks.gpu_evidence                        # one GPU, about 10 minutes
    python -m benchmarks.gpu_evidence --out $OUT/gpu_evidence.json
    python -m benchmarks.gpu_evidence --smoke                # CPU, digits, seconds (tests)

Images/s counts training images (each gives 2 augmented views, 3 with the clean view);
views/s is that times the views. Writes ``benchmarks/results/gpu_evidence.json`` after every
stage, so a run stopped at a time limit keeps what it measured. CIFAR-10 comes from the
offline copy (``$DCL_CLUSTER_SHARED_DATA``, ``../shared/data`` beside the checkout, or
``shared/data`` inside it; see docs/guides/benchmark-queue.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from benchmarks.jobqueue import GROUP_BASE, VIEWS, _now, _write_json, preset_available, shared_cifar10_dir  # noqa: E402
from benchmarks.quality import score  # noqa: E402

#: examples/configs/recipes/cifar10_lt_resnet18_gpu.yaml, module-level settings only
RECIPE = {"batch_size": 512, "max_epochs": 500, "precision": "bf16-mixed",
          "module": {"projection_hidden_dim": 2048, "lr": 1e-3, "weight_decay": 1e-6, "lr_warmup_epochs": 10,
                     "channels_last": True}}
SMOKE = {"batch_size": 64, "max_epochs": 3, "precision": "32-true",
         "module": {"backbone_width": 8, "lr": 1e-3, "channels_last": False}}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def environment() -> dict:
    import lightning
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
           "cpu_cores": cpu_count(), "host": platform.node(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30,
                   capability=f"{props.major}.{props.minor}", cuda_version=torch.version.cuda)
    return env


def measure_loader(dm_kwargs: dict, workers: list[int], epochs: int, clean_views: list[bool]) -> list[dict]:
    """Images/s out of ``train_dataloader()`` over whole epochs after the first (worker
    start-up and prefetching apart: :func:`benchmarks.loader_throughput.measure_epochs`)."""
    from benchmarks.loader_throughput import measure_epochs

    rows = []
    for clean in clean_views:
        for w in workers:
            rate, first, seen = measure_epochs({**dm_kwargs, "clean_view": clean}, w, epochs)
            rows.append({"workers": w, "views": 3 if clean else 2, "images_per_s": rate,
                         "views_per_s": rate * (3 if clean else 2), "first_epoch_s": first, "epochs": epochs,
                         "batches": seen})
            print(f"loader: {w:2d} workers, {3 if clean else 2} views: {rate:8.0f} images/s "
                  f"over {epochs} epochs (first epoch {first:.1f} s)", flush=True)
    return rows


def train_one(preset: str, args, data: dict, recipe: dict, workers: int, budget_s: float) -> dict:
    """Train ``preset`` until the next epoch would pass ``budget_s``; time each epoch."""
    import lightning.pytorch as pl
    import torch

    from dcl_cluster import DebiasedClusterModule, LongTailDataModule

    clustering = preset not in GROUP_BASE.values()
    kwargs = dict(recipe["module"])
    if clustering:
        kwargs["warmup_epochs"] = args.warmup_epochs
    views = getattr(DebiasedClusterModule.from_preset(preset, **kwargs), "extra_views", None)  # not built yet
    clean = "clean" in views if views is not None else VIEWS.get(preset, 2) > 2
    pl.seed_everything(args.seed, verbose=False)
    dm = LongTailDataModule(data["dataset"], data.get("data_dir"), imbalance_factor=args.imbalance_factor,
                            batch_size=recipe["batch_size"], num_workers=workers, seed=args.seed, clean_view=clean,
                            pin_memory=torch.cuda.is_available(),
                            persistent_workers=workers > 0 and not {"neighbor", "strong"} & set(views or ()))
    if not args.smoke:
        from dcl_cluster.nn import ResNet

        kwargs["backbone"] = ResNet("resnet18", cifar_stem=True)
    module = DebiasedClusterModule.from_preset(preset, **kwargs)

    class Budget(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.begin = time.perf_counter()

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)
            typical = statistics.median(self.times[1:] or self.times)
            if time.perf_counter() - self.begin + typical > budget_s:
                trainer.should_stop = True

    budget = Budget()
    accelerator = "gpu" if torch.cuda.is_available() and not args.smoke else "cpu"
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=recipe["max_epochs"],
                         precision=recipe["precision"], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                         num_sanity_val_steps=0, benchmark=accelerator == "gpu", callbacks=[budget],
                         limit_train_batches=args.limit_batches)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=dm)
    images = int(trainer.num_training_batches) * recipe["batch_size"]  # an epoch's images (drop_last)
    n_views = 2 + len(views) if views is not None else VIEWS.get(preset, 2)
    out = {"preset": preset, "views": n_views, "workers": workers, "epochs_run": len(budget.times),
           "warmup_epochs": args.warmup_epochs if clustering else 0, "train_images": dm.num_train_samples,
           "images_per_epoch": images, "epoch_times_s": budget.times}
    if torch.cuda.is_available():
        out["peak_gpu_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    # per phase, leaving out the first epoch of the run (start-up, cudnn autotuning)
    phases = {"contrastive": [t for i, t in enumerate(budget.times) if i < out["warmup_epochs"] or not clustering]}
    if clustering:
        phases["clustering"] = [t for i, t in enumerate(budget.times) if i >= out["warmup_epochs"]]
    for phase, times in phases.items():
        steady = times[1:] if phase == "contrastive" and len(times) > 1 else times
        if steady:
            epoch_s = statistics.median(steady)
            out[phase] = {"epochs": len(times), "epoch_s": epoch_s, "images_per_s": images / epoch_s,
                          "views_per_s": images * out["views"] / epoch_s}
    if args.score:
        if accelerator == "gpu":
            module.cuda()  # Lightning hands the module back on the CPU
        begin = time.perf_counter()
        scores = score(module, dm, args.seed)
        out["score_s"] = time.perf_counter() - begin
        out["scores"] = {split: {k: scores[split][k] for k in ("source", "nmi", "acc", "balanced_acc", "tail_acc",
                                                                 "macro_f1") if k in scores[split]}
                         for split in ("train", "test")}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["dcl", "dcl_cluster", "p2ot"])
    parser.add_argument("--budget-s", type=float, default=480.0, help="training seconds for all presets together")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="contrastive-only epochs of clustering presets")
    parser.add_argument("--imbalance-factor", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="loader workers to measure (default: 1/4, 1/2 and all CPU cores)")
    parser.add_argument("--loader-epochs", type=int, default=2, help="timed loader epochs after the first")
    parser.add_argument("--limit-batches", type=int, default=None,
                        help="training batches an epoch (a quick check of the full recipe on a CPU)")
    parser.add_argument("--no-score", dest="score", action="store_false")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu_evidence.json")
    parser.add_argument("--smoke", action="store_true", help="CPU, digits, a small CNN, seconds")
    args = parser.parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    if args.smoke:
        args.budget_s, args.loader_epochs = min(args.budget_s, 6.0), 1
        args.workers, args.threads = args.workers or [0], args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict:
    import torch

    recipe = SMOKE if args.smoke else RECIPE
    if not args.smoke and not torch.cuda.is_available():
        print("no GPU: this measures the CPU (use --smoke for a quick check)", flush=True)
    data = ({"dataset": "digits"} if args.smoke else {"dataset": "npz", "data_dir": str(shared_cifar10_dir())})
    cores = cpu_count()
    workers = args.workers or sorted({max(1, cores // 4), max(1, cores // 2), cores})
    result = {"created": _now(), "smoke": args.smoke, "environment": environment(),
              "recipe": {**recipe, "module": {k: v for k, v in recipe["module"].items()},
                         "backbone": "small_cnn" if args.smoke else "resnet18 (CIFAR stem)",
                         "dataset": data["dataset"], "imbalance_factor": args.imbalance_factor, "seed": args.seed,
                         "warmup_epochs": args.warmup_epochs},
             "budget_s": args.budget_s, "presets": {},
             "notes": "images/s: training images a second (each gives 2 views, 3 with the clean view); "
                      "epoch_s: median over epochs, the run's first epoch left out of the contrastive phase"}
    print(json.dumps(result["environment"]), flush=True)
    dm_kwargs = {"dataset": data["dataset"], "data_dir": data.get("data_dir"), "imbalance_factor":
                 args.imbalance_factor, "batch_size": recipe["batch_size"], "seed": args.seed}
    result["loader"] = measure_loader(dm_kwargs, workers, args.loader_epochs, [False, True])
    best = max(result["loader"], key=lambda r: (r["views"] == 3, r["images_per_s"]))["workers"]
    result["train_workers"] = best
    _write_json(args.out, result)
    available = [p for p in args.presets if preset_available(p)]
    for preset in args.presets:
        result["presets"][preset] = {"skipped": f"preset {preset!r} is not in this dcl_cluster"}
        if preset not in available:
            print(f"{preset}: skipped (not in this dcl_cluster)", flush=True)
    share = args.budget_s / max(1, len(available))
    for preset in available:
        result["presets"][preset] = {"running": _now()}
        row = train_one(preset, args, data, recipe, best, share)
        result["presets"][preset] = row
        for phase in ("contrastive", "clustering"):
            if phase in row:
                p = row[phase]
                print(f"{preset} {phase}: {p['epoch_s']:.2f} s/epoch, {p['images_per_s']:.0f} images/s "
                      f"({p['views_per_s']:.0f} views/s) over {p['epochs']} epochs", flush=True)
        if "peak_gpu_allocated_gib" in row:
            print(f"{preset}: peak GPU memory {row['peak_gpu_allocated_gib']:.2f} GiB allocated, "
                  f"{row['peak_gpu_reserved_gib']:.2f} GiB reserved", flush=True)
        _write_json(args.out, result)
    fastest_loader = max(r["images_per_s"] for r in result["loader"] if r["workers"] == best and r["views"] == 3)
    needed = max((row[ph]["images_per_s"] for row in result["presets"].values() for ph in ("contrastive", "clustering")
                  if ph in row), default=0.0)
    result["loader_headroom"] = fastest_loader / needed if needed else None
    _write_json(args.out, result)
    print(f"wrote {args.out}; loader (3 views, {best} workers) / fastest training images/s: "
          f"{result['loader_headroom'] or float('nan'):.2f}", flush=True)
    return result


if __name__ == "__main__":
    main()
