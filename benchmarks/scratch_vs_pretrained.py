"""Scratch or pretrained? One long-tailed folder of unseen images clustered from scratch, on a
pretrained encoder kept frozen (its features cached), and on the same encoder fine-tuned.

The folder: CIFAR-10's 10,000 *test* images as an ``x, y`` npz, cut long-tailed (imbalance
factor 10: 700 .. 70 training images per class, 300 per class held out, ``test_fraction``
0.3); the labels only score. The pretrained encoder: the small CNN (width 32) that the
80-epoch queue's InfoNCE warm-up trained for 40 epochs, self-supervised, on CIFAR-10-LT IF
100's *training* images (``--encoder``, a Lightning checkpoint): an encoder trained on a
larger unlabelled collection of related images, then used on a new folder (the situation of
DINO features and a photo folder, at the scale of a CPU).

Arms, per seed, all with the ``dcl_cluster`` preset, the same epochs and warm-up:
``scratch`` (random initialisation), ``frozen`` (pretrained, ``requires_grad=False``: the
feature cache serves its features; only the projector and the head train), ``fine-tuned``
(pretrained, everything trains), and ``k-means on pretrained features`` (no training).
Also the number of clusters ``estimate_num_clusters`` finds on each arm's training features.

    python -m benchmarks.scratch_vs_pretrained --encoder benchmarks/results/encoder_infonce_cifar10lt_if100_s0_e40.pt

(that file: the warm-up checkpoint's backbone weights, kept here because the queue deletes its
warm-up checkpoints once every job using them is done).

Writes ``benchmarks/results/scratch_vs_pretrained.json`` (each row as it ends).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.quality import export_shared_cifar10, per_class_recall, score, warmup_epochs

HERE = Path(__file__).resolve().parent
ARMS = ("scratch", "frozen", "fine-tuned", "k-means on pretrained features")


def folder_npz() -> Path:
    """CIFAR-10's test split as an ``x, y`` npz (the 'folder'), from the offline copy."""
    out = Path(os.environ.get("DCL_CLUSTER_CACHE", Path.home() / ".cache" / "dcl_cluster")) / "cifar10_test_xy.npz"
    if not out.exists():
        arrays = np.load(export_shared_cifar10() / "cifar10_uint8.npz")
        np.savez(out, x=arrays["x_test"], y=arrays["y_test"])
    return out


def pretrained_cnn(path: Path, width: int, frozen: bool):
    import torch

    from dcl_cluster.nn import SmallCNN

    state = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" in state:  # a Lightning checkpoint: its backbone's weights
        state = {k.removeprefix("backbone."): v for k, v in state["state_dict"].items() if k.startswith("backbone.")}
    net = SmallCNN(3, width)
    net.load_state_dict(state)
    return net.requires_grad_(False) if frozen else net


def run_arm(arm: str, seed: int, args, cache_dir: str) -> dict:
    import lightning.pytorch as pl

    from dcl_cluster import DebiasedClusterModule, LongTailDataModule
    from dcl_cluster.cluster import estimate_num_clusters
    from dcl_cluster.metrics import clustering_scores
    from dcl_cluster.report import collect

    pl.seed_everything(seed)
    dm = LongTailDataModule("npz", folder_npz(), imbalance_factor=args.imbalance_factor, batch_size=args.batch_size,
                            seed=seed, feature_cache_dir=cache_dir)
    start = time.perf_counter()
    if arm == "k-means on pretrained features":
        from sklearn.cluster import KMeans

        dm.setup("fit")
        module = DebiasedClusterModule.from_preset("simclr", backbone=pretrained_cnn(args.encoder, args.width, True),
                                                   in_channels=3, input_size=dm.image_size)
        row = {"train_class_counts": list(dm.train_class_counts)}
        kmeans = None  # fit on the training images, as the heads are; the held-out images are assigned
        for split, loader in (("train", dm.train_eval_dataloader()), ("test", dm.test_dataloader())):
            embeddings, _, labels = collect(module, loader)
            if kmeans is None:
                kmeans = KMeans(dm.num_classes, n_init=10, random_state=seed).fit(embeddings.numpy())
            pred = kmeans.predict(embeddings.numpy())
            counts = list(dm.train_class_counts)
            row[split] = {"source": "k-means", **clustering_scores(labels, pred, class_counts=counts,
                                                                  num_classes=dm.num_classes,
                                                                  num_clusters=dm.num_classes),
                          "per_class_recall": per_class_recall(labels.numpy(), pred, dm.num_classes),
                          "cluster_sizes": np.bincount(pred, minlength=dm.num_classes).tolist()}
    else:
        backbone = None if arm == "scratch" else pretrained_cnn(args.encoder, args.width, frozen=arm == "frozen")
        module = DebiasedClusterModule.from_preset(
            "dcl_cluster", backbone=backbone, backbone_width=args.width, lr=1e-3, channels_last=True,
            warmup_epochs=warmup_epochs(args.epochs, 0.75))
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             limit_val_batches=0, precision=args.precision)
        trainer.fit(module, datamodule=dm)
        wall = time.perf_counter() - start
        row = score(module, dm, seed)
        row["features_cached"] = bool(module.features_cached)
        if module.features_cached:  # the wall time above computed the cache: a second run reads it
            again = time.perf_counter()
            pl.Trainer(accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                       precision=args.precision).fit(
                DebiasedClusterModule.from_preset("dcl_cluster", backbone=backbone, lr=1e-3,
                                                  warmup_epochs=warmup_epochs(args.epochs, 0.75)),
                datamodule=LongTailDataModule("npz", folder_npz(), imbalance_factor=args.imbalance_factor,
                                              batch_size=args.batch_size, seed=seed, feature_cache_dir=cache_dir))
            row["wall_s_cache_ready"] = time.perf_counter() - again
    row["wall_s"] = wall if arm != "k-means on pretrained features" else time.perf_counter() - start
    embeddings, _, _ = collect(module, dm.train_eval_dataloader())
    row["estimated_k"] = int(estimate_num_clusters(embeddings, k_max=args.max_clusters, seed=seed))
    return {"arm": arm, "seed": seed, "epochs": args.epochs, "imbalance_factor": args.imbalance_factor, **row}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=Path, required=True,
                        help="the pretrained SmallCNN: a state_dict, or a Lightning checkpoint of the module")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--imbalance-factor", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-clusters", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scratch_vs_pretrained.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["arm"], r["seed"], r["epochs"]) for r in rows}
    with tempfile.TemporaryDirectory() as cache_dir:  # the frozen arm computes its cache once per seed
        for seed in args.seeds:
            for arm in args.arms:
                if (arm, seed, args.epochs) in done:
                    continue
                rows.append(run_arm(arm, seed, args, cache_dir))
                print(json.dumps({k: rows[-1][k] for k in ("arm", "seed", "wall_s", "estimated_k")}
                                 | {"train_nmi": rows[-1]["train"]["nmi"]}), flush=True)
                args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
