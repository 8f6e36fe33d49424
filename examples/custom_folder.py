"""Cluster your own image folder, made long-tailed, with the dcl_cluster method.

The folder needs one sub-folder per class (torchvision's ImageFolder layout)::

    ROOT/train/<class>/*.png|jpg|...
    ROOT/test/<class>/*          (optional; without val/ and test/, 30% of train is held out)

Class 0 is the first class name in sorted order; it keeps the most images and the others
follow the long-tail rule ``n_i = int(n_max * (1/IF) ** (i / (C-1)))``. Use
``--imbalance-factor 1`` when your folder is long-tailed already. The run prints the
clustering table of the final model, writes plots (cluster sizes against class sizes, a
t-SNE of the embeddings, the matched confusion matrix) and exports the backbone.

    python examples/custom_folder.py --data-dir path/to/images --imbalance-factor 10
    python examples/custom_folder.py --smoke          # a tiny generated folder, two epochs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make_toy_folder(root: Path, classes: int = 4, train_per_class: int = 12, test_per_class: int = 4,
                    size: int = 16, seed: int = 0) -> Path:
    """Write a small ImageFolder of coloured stripes (one orientation and colour per class)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = [(220, 60, 60), (60, 180, 60), (60, 90, 220), (220, 200, 40), (180, 60, 200), (40, 200, 200)]
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(classes):
        angle = np.pi * c / classes
        for split, n in (("train", train_per_class), ("test", test_per_class)):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                phase = rng.uniform(0, 2 * np.pi)
                wave = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 1.2 + phase) > 0  # (S, S)
                image = np.where(wave[..., None], colours[c % len(colours)], 30).astype(np.float64)
                image += rng.normal(0, 12, image.shape)
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="ROOT of the ImageFolder layout (train/<class>/...)")
    parser.add_argument("--imbalance-factor", type=float, default=10.0,
                        help="n_max / n_min of the long-tailed train set (1 keeps the folder's counts)")
    parser.add_argument("--preset", default="dcl_cluster", help="simclr, dcl, cc, sic or dcl_cluster")
    parser.add_argument("--image-size", type=int, default=64, help="side of the views in pixels")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--warmup-epochs", type=int, default=None,
                        help="contrastive-only epochs before the clustering terms (default: epochs // 2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--out", type=Path, default=Path("runs/custom_folder"), help="logs, plots, backbone")
    parser.add_argument("--smoke", action="store_true",
                        help="generate a tiny folder under --out and train two epochs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.batch_size, args.image_size, args.num_workers = 2, 8, 16, 0
        args.imbalance_factor = 4.0
    elif args.data_dir is None:
        parser.error("--data-dir is required (or --smoke)")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Train, report and export; returns the final scores, the plot files and the backbone path."""
    args = parse_args(argv)
    if args.smoke:
        args.data_dir = make_toy_folder(args.out / "toy_images")
    return train(args)


def train(args: argparse.Namespace) -> dict:
    import lightning.pytorch as pl

    from dcl_cluster import ClusteringEvaluator, DebiasedClusterModule, EmbeddingPlots, LongTailDataModule
    from dcl_cluster.report import final_report

    pl.seed_everything(0)
    datamodule = LongTailDataModule(
        "image_folder",
        data_dir=str(args.data_dir),
        imbalance_factor=args.imbalance_factor,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )  # the model asks it for the extra views its objective terms need
    datamodule.setup("fit")
    print(f"classes {datamodule.class_names}; long-tailed train counts {datamodule.train_class_counts}")

    warmup = args.warmup_epochs if args.warmup_epochs is not None else args.epochs // 2
    # in_channels, input_size and num_clusters come from the datamodule at setup.
    model = DebiasedClusterModule.from_preset(args.preset, warmup_epochs=warmup,
                                              backbone_width=16 if args.smoke else 32)
    evaluator = ClusteringEvaluator(every_n_epochs=max(1, args.epochs // 4))
    plots = EmbeddingPlots(every_n_epochs=max(1, args.epochs // 4), method="pca" if args.smoke else "tsne",
                           save_dir=str(args.out / "plots"))
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=1,
        callbacks=[evaluator, plots],
        default_root_dir=str(args.out),
        logger=pl.loggers.CSVLogger(str(args.out), name="custom_folder"),
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_progress_bar=not args.smoke,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    report = final_report(trainer, model, datamodule)  # prints the table, writes final_metrics.json

    backbone_path = args.out / "backbone.pt"
    model.export_backbone(str(backbone_path))
    print(f"plots: {plots.last_files}\nbackbone state_dict: {backbone_path}")
    return {"report": report, "metrics": evaluator.last_metrics, "plots": plots.last_files,
            "backbone": str(backbone_path), "class_counts": datamodule.train_class_counts}


if __name__ == "__main__":
    main()
