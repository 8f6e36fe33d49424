"""What ``--model.num_clusters auto`` finds on digits-LT, per seed, against the truth (10).

Trains the default digits run (``examples/configs/digits_lt.yaml``'s model: the
``dcl_cluster`` preset, SmallCNN of width 16) with ``num_clusters="auto"``: K is estimated
(``estimate_num_clusters``, ``max_clusters=20``) on the backbone features of the long-tailed
train set at the end of the warm-up, then the head of that size trains. Per seed (the
long-tailed draw and the training): the estimated K, the held-out scores of the head at that K,
and of k-means on the final features at the estimated K and at the true K=10. A shortened
schedule (40 epochs, 20 of warm-up) keeps it to about a minute per seed on one CPU thread.

    python -m benchmarks.auto_k_digits                 # seeds 0 1 2
    python -m benchmarks.auto_k_digits --smoke         # seconds, writes nothing
    python -m benchmarks.auto_k_digits --epochs 10 --warmup 5 \
        --out benchmarks/results/auto_k_digits_warmup5.json   # a short warm-up

Writes ``benchmarks/results/auto_k_digits.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

from dcl_cluster import DebiasedClusterModule, LongTailDataModule
from dcl_cluster.cluster import KMeans
from dcl_cluster.metrics import clustering_scores
from dcl_cluster.report import collect

OUT = Path(__file__).resolve().parent / "results" / "auto_k_digits.json"
TRUE_K = 10


def run(seed: int, epochs: int, warmup: int, max_clusters: int, imbalance_factor: float) -> dict:
    pl.seed_everything(seed, verbose=False)
    dm = LongTailDataModule("digits", imbalance_factor=imbalance_factor, batch_size=128, seed=seed)
    module = DebiasedClusterModule.from_preset(
        "dcl_cluster", num_clusters="auto", max_clusters=max_clusters, warmup_epochs=warmup, backbone_width=16,
        projection_hidden_dim=256, projection_dim=64, lr=2e-3, lr_warmup_epochs=2)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, dm)
    seconds = time.perf_counter() - start
    k = int(module.hparams.num_clusters)
    embeddings, probs, labels = collect(module, dm.val_dataloader())

    def scores(pred: torch.Tensor) -> dict:
        s = clustering_scores(labels, pred, num_classes=TRUE_K, num_clusters=int(max(TRUE_K, int(pred.max()) + 1)))
        return {name: round(float(s[name]), 4) for name in ("nmi", "acc", "ari")}

    return {
        "seed": seed, "estimated_k": k, "true_k": TRUE_K, "train_class_counts": dm.train_class_counts,
        "held_out_head_at_estimated_k": scores(probs.argmax(1)),
        "held_out_kmeans_at_estimated_k": scores(KMeans(k, n_init=3, seed=0).fit_predict(embeddings)),
        "held_out_kmeans_at_true_k": scores(KMeans(TRUE_K, n_init=3, seed=0).fit_predict(embeddings)),
        "fit_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-clusters", type=int, default=20)
    parser.add_argument("--imbalance-factor", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON file written")
    parser.add_argument("--smoke", action="store_true", help="one seed, 2 epochs, writes nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs, args.warmup = [0], 2, 1
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    rows = []
    for seed in args.seeds:
        rows.append(run(seed, args.epochs, args.warmup, args.max_clusters, args.imbalance_factor))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "what": f"num_clusters='auto' on digits-LT (sklearn digits, IF {args.imbalance_factor:g}), estimated at the "
                "end of the warm-up on the backbone features of the long-tailed train set",
        "settings": {"epochs": args.epochs, "warmup_epochs": args.warmup, "max_clusters": args.max_clusters,
                     "threads": 1, "device": "cpu"},
        "rows": rows,
    }
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
