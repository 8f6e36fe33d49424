"""Clustering quality of the five presets on CIFAR-10-LT under one equal budget.

Same backbone, epochs, batch, optimizer and seed for every preset; each run in its own
process (so peak memory is its own). Scores on the long-tailed train set and on the
balanced test set: NMI, ACC, balanced ACC, ARI, head/medium/tail ACC, with wall time and
peak memory; plus the floor, k-means on 50 PCA components of raw pixels.

    python -m benchmarks.quality --epochs 20                 # CPU budget (small CNN)
    python -m benchmarks.quality --recipe gpu --accelerator gpu   # ResNet-18, 500 epochs
    python -m benchmarks.quality --smoke                      # CI: digits, 1 epoch

Data: the offline CIFAR-10 copy (``../shared/data/cifar10/export.py arrays DIR``, the
``"npz"`` source) or, with ``--dataset cifar10 --data-dir DIR``, torchvision's folder.
Writes ``benchmarks/results/quality.json`` and per-class accuracy plots.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PRESETS = ["simclr", "dcl", "cc", "sic", "dcl_cluster", "p2ot", "scan"]
RECIPES = {
    # a budget that fits 2 CPU cores: small CNN, batch 256, Adam 1e-3
    # (dcl_cluster starts clustering at 3/4 of it: the ablations in docs/benchmarks.md)
    "cpu": {"backbone": "small_cnn", "batch_size": 256, "lr": 1e-3,
            "warmup_fraction": {"cc": 0.5, "sic": 0.5, "dcl_cluster": 0.75, "p2ot": 0.75, "p2ot_alone": 0.75,
                                "scan": 0.75, "scan_prior": 0.75}},
    # the full GPU recipe: ResNet-18 with the CIFAR stem
    "gpu": {"backbone": "resnet18", "batch_size": 512, "lr": 1e-3,
            "warmup_fraction": {"cc": 0.2, "sic": 0.2, "dcl_cluster": 0.2, "p2ot": 0.2, "p2ot_alone": 0.2,
                                "scan": 0.2, "scan_prior": 0.2}},
}


def warmup_epochs(epochs: int, fraction: float) -> int:
    """Contrastive-only epochs of the clustering presets: ``fraction`` of the budget, at least
    one, and at least one epoch left for the clustering terms."""
    return max(1, min(epochs - 1, round(epochs * fraction)))


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[float]:
    """Recall of each class under the Hungarian one-to-one map of clusters to classes."""
    from dcl_cluster.metrics import contingency_table, match_clusters_to_classes

    k = max(int(y_pred.max()) + 1, num_classes)
    table = contingency_table(y_pred, y_true, k, num_classes).numpy()  # (clusters, classes)
    rows, cols = match_clusters_to_classes(table)
    recall = np.zeros(num_classes)
    recall[cols] = table[rows, cols] / np.maximum(table.sum(0)[cols], 1)
    return recall.tolist()


def run_one(args) -> dict:
    """Train one preset and score it; runs in a child process."""
    import lightning.pytorch as pl
    import torch

    from dcl_cluster import DebiasedClusterModule, LongTailDataModule
    from dcl_cluster.nn import ResNet
    from dcl_cluster.presets import preset

    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    clusters = any(term.needs().clustering for term in preset(args.preset)["objectives"])
    pl.seed_everything(args.seed)
    dm = LongTailDataModule(args.dataset, args.data_dir, imbalance_factor=args.imbalance_factor,
                            batch_size=args.batch_size or recipe["batch_size"], num_workers=args.workers,
                            seed=args.seed)  # the module asks for the views its terms need
    backbone = ResNet("resnet18", cifar_stem=True) if recipe["backbone"] == "resnet18" else None
    warmup = 0  # contrastive-only presets have no warm-up
    if clusters:
        fraction = recipe["warmup_fraction"][args.preset] if args.warmup_fraction is None else args.warmup_fraction
        warmup = warmup_epochs(args.epochs, fraction)
    module = DebiasedClusterModule.from_preset(
        args.preset, backbone=backbone, backbone_width=args.width, lr=recipe["lr"], warmup_epochs=warmup,
        channels_last=True)
    trainer = pl.Trainer(accelerator=args.accelerator, devices=1, max_epochs=args.epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, precision=args.precision)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    wall = time.perf_counter() - start
    result = {"preset": args.preset, "seed": args.seed, "imbalance_factor": args.imbalance_factor,
              "epochs": args.epochs, "warmup_epochs": warmup, "recipe": args.recipe, "precision": args.precision,
              "width": args.width, "wall_s": wall, **score(module, dm, args.seed)}
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def score(module, dm, seed: int) -> dict:
    """Scores on the long-tailed train set and the balanced test set: the head's clusters
    where the module has a head (k-means on features under ``*_k-means``), else k-means."""
    from dcl_cluster.metrics import clustering_scores
    from dcl_cluster.report import cluster_predictions, collect

    counts = list(dm.train_class_counts)
    result = {"train_class_counts": counts}
    for split, loader in (("train", dm.train_eval_dataloader()), ("test", dm.test_dataloader())):
        embeddings, probs, labels = collect(module, loader)
        for source, pred in cluster_predictions(embeddings, probs, dm.num_classes, seed).items():
            key = split if source == ("head" if probs is not None else "k-means") else f"{split}_{source}"
            result[key] = {"source": source, **clustering_scores(labels, pred, class_counts=counts,
                                                                 num_classes=dm.num_classes,
                                                                 num_clusters=dm.num_classes),
                           "per_class_recall": per_class_recall(labels.numpy(), pred.numpy(), dm.num_classes),
                           "cluster_sizes": np.bincount(pred.numpy(), minlength=dm.num_classes).tolist()}
    return result


def pixel_floor(args) -> dict:
    """k-means on 50 PCA components of raw pixels: the score no representation should lose to."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from dcl_cluster import LongTailDataModule
    from dcl_cluster.metrics import clustering_scores

    dm = LongTailDataModule(args.dataset, args.data_dir, imbalance_factor=args.imbalance_factor, seed=args.seed)
    dm.setup("fit")
    out = {"preset": "k-means on PCA-50 pixels", "imbalance_factor": args.imbalance_factor, "seed": args.seed}
    for split, loader in (("train", dm.train_eval_dataloader()), ("test", dm.test_dataloader())):
        xs, ys = zip(*[(b[0].flatten(1).numpy(), b[1].numpy()) for b in loader], strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        z = PCA(min(50, x.shape[1]), random_state=args.seed).fit_transform(x)
        pred = KMeans(dm.num_classes, n_init=10, random_state=args.seed).fit_predict(z)
        out[split] = {"source": "k-means", **clustering_scores(y, pred, class_counts=list(dm.train_class_counts),
                                                              num_classes=dm.num_classes,
                                                              num_clusters=dm.num_classes)}
        out[split]["per_class_recall"] = per_class_recall(y, pred, dm.num_classes)
    return out


def child(args, preset, seed, imbalance_factor) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.quality", "--run-one", preset, "--seed", str(seed),
           "--imbalance-factor", str(imbalance_factor), "--epochs", str(args.epochs), "--recipe", args.recipe,
           "--dataset", args.dataset,
           "--data-dir", str(args.data_dir), "--width", str(args.width), "--workers", str(args.workers),
           "--threads", str(args.threads), "--accelerator", args.accelerator, "--precision", args.precision]
    if args.warmup_fraction is not None:
        cmd += ["--warmup-fraction", str(args.warmup_fraction)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise RuntimeError(f"{preset} seed {seed} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--imbalance-factors", nargs="+", type=float, default=[100.0, 10.0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--dataset", default="npz")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--width", type=int, default=32, help="SmallCNN width (cpu recipe)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="bf16-mixed",
                        help="Lightning precision; bf16-mixed is 1.7x faster on this CPU's small CNN")
    parser.add_argument("--warmup-fraction", type=float, default=None,
                        help="contrastive-only share of the epochs for every clustering preset "
                             "(default: the recipe's, per preset)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quality.json")
    parser.add_argument("--smoke", action="store_true", help="digits, 1 epoch, two presets: for CI")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--imbalance-factor", type=float, default=100.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        args.preset = args.run_one
        print(json.dumps(run_one(args)))
        return []
    if args.smoke:
        args.dataset, args.data_dir, args.epochs, args.width, args.precision = "digits", None, 2, 8, "32-true"
        args.presets, args.imbalance_factors, args.batch_size = ["dcl_cluster"], [10.0], 64
    elif args.dataset == "npz" and args.data_dir is None:
        args.data_dir = export_shared_cifar10()
    rows = []
    for imbalance_factor in args.imbalance_factors:
        args.imbalance_factor = imbalance_factor
        rows.append(pixel_floor(args))
        for seed in args.seeds:
            for preset in args.presets:
                rows.append(child(args, preset, seed, imbalance_factor))
                print(json.dumps({k: rows[-1][k] for k in ("preset", "seed", "imbalance_factor", "wall_s")}),
                      flush=True)
                if not args.smoke:  # after every run, so an interrupted benchmark keeps what it has
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(rows, indent=2))
    return rows


def export_shared_cifar10() -> Path:
    export = REPO.parent / "shared" / "data" / "cifar10" / "export.py"
    if not export.exists():
        raise SystemExit(f"{export} not found: pass --dataset cifar10 --data-dir <torchvision CIFAR-10 folder>")
    out = Path(os.environ.get("DCL_CLUSTER_CACHE", Path.home() / ".cache" / "dcl_cluster")) / "cifar10_arrays"
    subprocess.run([sys.executable, str(export), "arrays", str(out)], check=True, capture_output=True)
    return out


if __name__ == "__main__":
    main()
