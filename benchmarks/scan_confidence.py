"""Does SCAN's self-labelling ever run? How sure the `scan` preset's head gets, epoch by epoch.

SCAN's third stage trains only on images whose un-augmented prediction passes 0.99; in the
80-epoch CIFAR-10-LT runs its loss was 0 on every seed. This runs the README's digits setting
(``examples/configs/digits_lt.yaml`` with ``method/scan.yaml``: 100 epochs, 50 of warm-up,
25 of neighbour consistency, 25 of self-labelling) with the cosine head at its default
scale (10) and at 30, and at 30 with the self-labelling weight 0 (the same run without the
stage), and records after every epoch the share of un-augmented training images above the
threshold (in eval mode) and the quantiles of the head's largest probability, the confident
images the term itself counted in the epoch's training batches, then the final scores.

    python -m benchmarks.scan_confidence --seeds 0 1 2      # about 6 minutes on 2 cores

Writes ``benchmarks/results/scan_confidence.json`` after every run, replacing the rows of the
same (variant, seed) and keeping the others.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> preset overrides (term settings by dotted name)
VARIANTS = {
    "cosine_scale 10 (default)": {},
    "cosine_scale 30": {"cosine_scale": 30.0},
    "cosine_scale 30, no self-labelling": {"cosine_scale": 30.0, "self_label.weight": 0.0},
}

#: the digits config's model settings (examples/configs/digits_lt.yaml)
DIGITS_MODEL = dict(backbone_width=16, projection_hidden_dim=256, projection_dim=64, lr=2e-3, lr_warmup_epochs=2)


def build(variant: str, warmup: int):
    """The `scan` preset with the digits config's model settings and the variant's overrides."""
    from dcl_cluster import DebiasedClusterModule

    return DebiasedClusterModule.from_preset("scan", warmup_epochs=warmup, **DIGITS_MODEL, **VARIANTS[variant])


def self_label_term(module):
    """The module's ``ConfidentSelfLabel`` term."""
    from dcl_cluster.objectives import ConfidentSelfLabel

    return next(t for t in module.objectives if isinstance(t, ConfidentSelfLabel))


def run(variant: str, seed: int, epochs: int, warmup: int) -> dict:
    import lightning.pytorch as pl
    import numpy as np

    from dcl_cluster import LongTailDataModule
    from dcl_cluster.metrics import clustering_scores
    from dcl_cluster.report import collect

    curve = []

    class Confidence(pl.Callback):
        # callbacks' epoch-end hooks run before the module's, which resets the term's counts
        def on_train_epoch_end(self, trainer, module):
            term = self_label_term(module)
            confident, rows = term.epoch_counts()
            _, probs, _ = collect(module, trainer.datamodule.train_eval_dataloader())
            if probs is not None:  # no head before the clustering phase
                top = probs.max(dim=1).values
                curve.append({"epoch": trainer.current_epoch,
                              "share_above": float((top > term.threshold).float().mean()),
                              "median": float(top.median()), "p90": float(top.quantile(0.9)),
                              "max": float(top.max()), "term_confident": confident, "term_rows": rows})

    pl.seed_everything(seed)
    module = build(variant, warmup)
    dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=128, seed=seed)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                         callbacks=[Confidence()])
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    term = self_label_term(module)
    row = {"variant": variant, "seed": seed, "epochs": epochs, "warmup_epochs": warmup,
           "threshold": term.threshold, "self_label_start": term.start_epoch,
           "wall_s": time.perf_counter() - start, "train_class_counts": list(dm.train_class_counts), "curve": curve}
    for split, loader in (("train", dm.train_eval_dataloader()), ("held-out", dm.test_dataloader())):
        _, probs, labels = collect(module, loader)
        pred = probs.argmax(dim=1)
        row[split] = {**clustering_scores(labels, pred, class_counts=list(dm.train_class_counts),
                                          num_classes=dm.num_classes, num_clusters=dm.num_classes),
                      "cluster_sizes": np.bincount(pred.numpy(), minlength=dm.num_classes).tolist()}
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--smoke", action="store_true", help="4 epochs (2 of warm-up), one seed, not written")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scan_confidence.json")
    args = parser.parse_args(argv)
    epochs, warmup = (4, 2) if args.smoke else (100, 50)
    rows = [] if args.smoke or not args.out.exists() else json.loads(args.out.read_text())
    for seed in args.seeds[:1] if args.smoke else args.seeds:
        for variant in args.variants:
            row = run(variant, seed, epochs, warmup)
            rows = [r for r in rows if (r["variant"], r["seed"]) != (variant, seed)] + [row]
            late = row["curve"][-1] if row["curve"] else {}
            print(f"{variant} seed {seed}: share above {row['threshold']} at the end {late.get('share_above')}, "
                  f"train NMI {row['train']['nmi']:.3f}, held-out NMI {row['held-out']['nmi']:.3f} "
                  f"({row['wall_s']:.0f} s)", flush=True)
            if not args.smoke:
                args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
