"""From a folder of photos (no labels, number of groups unknown) to a CSV and pictures.

Runs the two commands of the guide (docs/guides/cluster-folder.md) in this process:

    dcl-cluster fit --config examples/configs/cluster_folder.yaml --data.data_dir PHOTOS
    dcl-cluster predict --config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt

and prints where ``predictions.csv``, ``report.html`` (every cluster on one page, to open in a
browser), the contact sheets ``clusters/cluster_<k>.png`` and the chart
``clusters/cluster_sizes.png`` are.

    python examples/cluster_folder.py --data-dir path/to/photos
    python examples/cluster_folder.py --smoke     # a generated folder of shapes, a few epochs
    python examples/cluster_folder.py --make-demo demo/photos   # the guide's photo demo folder
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).resolve().parent / "configs" / "cluster_folder.yaml"  # frozen ImageNet Lite0
SCRATCH_CONFIG = CONFIG.with_name("cluster_folder_scratch.yaml")  # a small CNN from scratch: the smoke run
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


DEMO_CLASSES = ("airplane", "cat", "frog", "ship", "truck")
DEMO_COUNTS = (300, 150, 80, 40, 20)  # a long tail: 590 photos, the largest class 15x the smallest


def find_cifar10_test(start: Path | None = None) -> Path:
    """The offline CIFAR-10 test set (``shared/data/cifar10/cifar10_test_uint8.npz``) beside the
    checkout or inside it, or under ``$DCL_CLUSTER_SHARED_DATA``."""
    import os

    repo = (start or Path(__file__).resolve().parents[1])
    roots = [Path(os.environ["DCL_CLUSTER_SHARED_DATA"])] if os.environ.get("DCL_CLUSTER_SHARED_DATA") else []
    for root in [*roots, repo.parent / "shared" / "data", repo / "shared" / "data"]:
        if (root / "cifar10" / "cifar10_test_uint8.npz").is_file():
            return root / "cifar10" / "cifar10_test_uint8.npz"
    raise SystemExit("the photo demo reads real CIFAR-10 test images from shared/data/cifar10/cifar10_test_uint8.npz "
                     "(beside the checkout, or set DCL_CLUSTER_SHARED_DATA); it was not found")


def make_cifar_folder(root: Path, counts: tuple[int, ...] = DEMO_COUNTS, classes: tuple[str, ...] = DEMO_CLASSES,
                      seed: int = 0, npz: Path | None = None) -> Path:
    """Write a flat folder of real CIFAR-10 test photos, ``counts[i]`` of ``classes[i]``, as PNGs
    named by a random number (no label in any name), and the answer key ``<root>.labels.csv``
    (``path,label``) beside the folder, not in it. Returns ``root``."""
    import csv

    from PIL import Image

    with np.load(npz or find_cifar10_test()) as data:  # each access of an npz key reads the whole array
        images, labels, names = data["x_test"], data["y_test"], [str(c) for c in data["class_names"]]
    unknown = sorted(set(classes) - set(names))
    if unknown or len(classes) != len(counts):
        raise ValueError(f"classes must be CIFAR-10 class names, one per count: got {classes} for {counts}")
    rng = np.random.default_rng(seed)
    picked = [(c, int(i)) for c, n in zip(classes, counts, strict=True)
              for i in rng.choice(np.flatnonzero(labels == names.index(c)), size=n, replace=False)]
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise SystemExit(f"{root} is not empty: the demo writes its photos into a new folder")
    order = rng.permutation(len(picked))
    with open(root.parent / f"{root.name}.labels.csv", "w", newline="") as f:
        key = csv.writer(f)
        key.writerow(["path", "label"])
        for n, j in enumerate(order):
            label, i = picked[j]
            path = root / f"IMG_{n:04d}.png"
            Image.fromarray(images[i]).save(path)
            key.writerow([str(path), label])
    return root


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="the folder of images (any depth, no class folders)")
    parser.add_argument("--out", type=Path, default=Path("runs/cluster_folder"), help="runs and results")
    parser.add_argument("--num-clusters", default="10", help="K, or auto (default 10; recluster tries others)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--smoke", action="store_true",
                        help="generate a small folder of shapes under --out, a small CNN for 3 epochs")
    parser.add_argument("--make-demo", type=Path, metavar="FOLDER",
                        help="only write the photo demo (590 real CIFAR-10 test photos, 5 classes, a long tail) "
                             "into FOLDER and its answer key beside it, then stop")
    args = parser.parse_args(argv)
    if not args.smoke and args.data_dir is None and args.make_demo is None:
        parser.error("--data-dir is required (or --smoke, or --make-demo FOLDER)")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Fit, then predict; returns the paths of the run folder, the CSV and the pictures."""
    from dcl_cluster.cli import find_last_checkpoint
    from dcl_cluster.cli import main as dcl_cluster

    args = parse_args(argv)
    if args.make_demo is not None:
        folder = make_cifar_folder(args.make_demo)
        print(f"{sum(DEMO_COUNTS)} photos in {folder}; answer key {folder.parent / (folder.name + '.labels.csv')}")
        return {"photos": folder}
    config, extra = CONFIG, [f"--model.num_clusters={args.num_clusters}", f"--trainer.max_epochs={args.epochs}"]
    if args.smoke:
        args.data_dir = make_shape_folder(args.out / "photos")
        config, extra = SCRATCH_CONFIG, [
            "--trainer.max_epochs=3", "--model.max_clusters=8", "--model.warmup_epochs=2", "--data.image_size=16",
            "--data.batch_size=16", "--data.num_workers=0", "--data.test_fraction=0.2", "--model.backbone_width=8",
            "--trainer.accelerator=cpu", "--trainer.check_val_every_n_epoch=3", "--evaluator.every_n_epochs=3",
            "--trainer.enable_progress_bar=false"]
    runs = args.out  # runs go to <out>/dcl_cluster/version_<n>, as the guide's go to runs/cluster_folder/dcl_cluster
    dcl_cluster(["fit", "--config", str(config), f"--data.data_dir={args.data_dir}",
                 f"--trainer.default_root_dir={runs}", *extra])
    checkpoint = find_last_checkpoint(runs)
    run = checkpoint.parent.parent
    dcl_cluster(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(checkpoint)])
    pictures = sorted((run / "clusters").glob("*.png"))
    print(f"run folder: {run}\npredictions: {run / 'predictions.csv'}\nreport: {run / 'report.html'}\n"
          f"pictures: {len(pictures)} in {run / 'clusters'}")
    return {"run": run, "csv": run / "predictions.csv", "report": run / "report.html", "pictures": pictures}


if __name__ == "__main__":
    main()
