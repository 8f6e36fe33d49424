"""From a folder of photos (no labels, number of groups unknown) to a CSV and pictures.

Runs the two commands of the guide (docs/guides/cluster-folder.md) in this process:

    dcl-cluster fit --config examples/configs/cluster_folder.yaml --data.data_dir PHOTOS
    dcl-cluster predict --config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt

and prints where ``predictions.csv``, ``report.html`` (every cluster on one page, to open in a
browser), the contact sheets ``clusters/cluster_<k>.png`` and the chart
``clusters/cluster_sizes.png`` are.

    python examples/cluster_folder.py --data-dir path/to/photos
    python examples/cluster_folder.py --smoke     # a generated folder of shapes, a few epochs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).resolve().parent / "configs" / "cluster_folder.yaml"
SHAPES = ("square", "disc", "cross", "stripes")
COLOURS = ((220, 50, 50), (40, 170, 60), (50, 80, 220), (230, 200, 40))


def make_shape_folder(root: Path, counts: tuple[int, ...] = (40, 16, 8), size: int = 16, seed: int = 0) -> Path:
    """Write a flat folder of unlabelled PNGs, ``counts[i]`` images of shape ``i`` (a long tail),
    each shape in its own colour, jittered in position and noisy; plus a ``README.txt`` that
    the reader skips. Returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    n = 0
    for kind, count in enumerate(counts):
        for _ in range(count):
            cy, cx = rng.uniform(0.35, 0.65, 2) * size
            r = size * rng.uniform(0.22, 0.3)
            mask = {
                0: (abs(yy - cy) < r) & (abs(xx - cx) < r),
                1: (yy - cy) ** 2 + (xx - cx) ** 2 < r**2,
                2: (abs(yy - cy) < r / 3) | (abs(xx - cx) < r / 3),
                3: np.sin(xx * 1.5 + cy) > 0,
            }[kind % len(SHAPES)]
            image = np.where(mask[..., None], COLOURS[kind % len(COLOURS)], 25).astype(np.float64)
            image += rng.normal(0, 10, image.shape)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / f"photo_{n:04d}.png")
            n += 1
    (root / "README.txt").write_text("generated shapes, no labels\n")
    return root


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="the folder of images (any depth, no class folders)")
    parser.add_argument("--out", type=Path, default=Path("runs/cluster_folder"), help="runs and results")
    parser.add_argument("--max-clusters", type=int, default=30, help="largest K that the estimate considers")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--smoke", action="store_true", help="generate a small folder under --out, 3 epochs")
    args = parser.parse_args(argv)
    if not args.smoke and args.data_dir is None:
        parser.error("--data-dir is required (or --smoke)")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Fit, then predict; returns the paths of the run folder, the CSV and the pictures."""
    from dcl_cluster.cli import find_last_checkpoint
    from dcl_cluster.cli import main as dcl_cluster

    args = parse_args(argv)
    extra: list[str] = []
    if args.smoke:
        args.data_dir = make_shape_folder(args.out / "photos")
        args.epochs, args.max_clusters = 3, 8
        extra = ["--data.image_size=16", "--data.batch_size=16", "--data.num_workers=0", "--data.test_fraction=0.2",
                 "--model.backbone_width=8", "--model.warmup_epochs=2", "--trainer.accelerator=cpu",
                 "--trainer.check_val_every_n_epoch=3", "--evaluator.every_n_epochs=3",
                 "--trainer.enable_progress_bar=false"]
    runs = args.out  # runs go to <out>/dcl_cluster/version_<n>, as the guide's go to runs/cluster_folder/dcl_cluster
    dcl_cluster(["fit", "--config", str(CONFIG), f"--data.data_dir={args.data_dir}",
                 f"--model.max_clusters={args.max_clusters}", f"--trainer.max_epochs={args.epochs}",
                 f"--model.warmup_epochs={args.epochs // 2}", f"--trainer.default_root_dir={runs}", *extra])
    checkpoint = find_last_checkpoint(runs)
    run = checkpoint.parent.parent
    dcl_cluster(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(checkpoint)])
    pictures = sorted((run / "clusters").glob("*.png"))
    print(f"run folder: {run}\npredictions: {run / 'predictions.csv'}\nreport: {run / 'report.html'}\n"
          f"pictures: {len(pictures)} in {run / 'clusters'}")
    return {"run": run, "csv": run / "predictions.csv", "report": run / "report.html", "pictures": pictures}


if __name__ == "__main__":
    main()
