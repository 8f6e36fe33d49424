"""The frozen-feature path against bare PyTorch (issue 25). ``cache``: the datamodule's build of
the feature cache against a bare ``model(x)`` loop over as many images of the same size, batch
and precision, and the build by 2 processes of 1 thread each (gloo, each encoding every other
batch) against 1 of 1. ``head``: one epoch of head training on the cached features in a
Lightning Trainer against a bare loop over the same tensor with the same module's step.

Data: a generated folder of photos (``examples/cluster_folder.py``'s coloured shapes, 64 px
PNGs), read as ``dataset: images`` at 128 px; the encoder: frozen EfficientNet-Lite0 with the
packaged weights in bf16 autocast, as ``examples/configs/cluster_folder.yaml``. Loader
workers: none (each process decodes its own images, as on a 2-core machine).

``head`` reads the frozen lab's cache of CIFAR-10-LT IF 100 (12,406 rows; ``python -m
benchmarks.frozen_lab features`` builds it) and trains the lab's ``dcl_cluster`` head: one
warm-up epoch and four clustering epochs in the Trainer (bf16-mixed), the median of the last
three timed (the first also places the head by k-means); then
the same module, head and optimizer settings in a bare loop: batches of 256 rows sliced from
the cached tensors (two different views and the clean row), ``shared_step`` + ``loss_terms``,
backward, step, under the same bf16 autocast, three epochs, the median.

    python -m benchmarks.frozen_path                   # both, about 4 minutes on 2 idle cores
    python -m benchmarks.frozen_path --parts cache     # one part
    python -m benchmarks.frozen_path --smoke           # the cache part, small, writes nothing

Writes ``benchmarks/results/frozen_path_cache.json`` and ``frozen_path_head.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.common import shape_photo_folder

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "frozen_path_cache.json"
HEAD_RESULTS = HERE / "results" / "frozen_path_head.json"
IMAGE_SIZE, BATCH, VIEWS = 128, 128, 2


def photo_folder(root: Path, n: int) -> Path:
    third = n // 3
    return shape_photo_folder(root, counts=(n - 2 * third, third, third), size=64)


def encoder():
    from dcl_cluster.nn import TimmBackbone

    return TimmBackbone("tf_efficientnet_lite0", weights="packaged", trainable_blocks=0).eval()


def bf16(net):
    def encode(x):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x)
    return encode


def datamodule(folder: Path, cache: Path):
    from dcl_cluster import LongTailDataModule

    dm = LongTailDataModule("images", str(folder), image_size=IMAGE_SIZE, batch_size=BATCH, cached_views=VIEWS,
                            test_fraction=0.1, num_workers=0, mean=[0.5] * 3, std=[0.5] * 3,
                            feature_cache_dir=str(cache))
    dm.setup("fit")
    return dm


def encodes(dm) -> int:
    """Images the cache build encodes: every training image's views and clean image, the held-out images."""
    return len(dm.train_dataset) * (VIEWS + 1) + len(dm.test_dataset)


def build_seconds(folder: Path, cache: Path, rank: int = 0, world: int = 1) -> tuple[float, int]:
    """Wall seconds of ``serve_cached_features`` in this process (after a barrier with the others)."""
    from dcl_cluster.data.feature_cache import weights_fingerprint

    net = encoder()
    dm = datamodule(folder, cache)

    def any_rank(flag: bool) -> bool:
        value = torch.tensor([int(flag)])
        dist.all_reduce(value)
        return bool(value.item())

    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    dm.serve_cached_features(bf16(net), weights_fingerprint(net), "bf16-mixed", rank=rank, world=world,
                             any_rank=any_rank if world > 1 else None)
    if world > 1:
        dist.barrier()
    return time.perf_counter() - start, encodes(dm)


def _rank(rank: int, world: int, folder: str, cache: str, init: str, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    seconds, _ = build_seconds(Path(folder), Path(cache), rank, world)
    Path(out, f"rank{rank}").write_text(str(seconds))
    if world > 1:
        dist.destroy_process_group()


def ranks_seconds(folder: Path, work: Path, world: int) -> float:
    """Wall seconds of the cache build by ``world`` spawned processes of one thread each (the slowest)."""
    cache, out = work / f"cache{world}", work / f"out{world}"
    out.mkdir()
    init = f"file://{work / f'init{world}'}"
    mp.spawn(_rank, args=(world, str(folder), str(cache), init, str(out)), nprocs=world, join=True)
    return max(float(p.read_text()) for p in out.glob("rank*"))


def bare_seconds(n: int, threads: int) -> float:
    """A bare loop: ``net(x)`` over ``n`` ready images of the size, batch and precision of the build."""
    torch.set_num_threads(threads)
    net, x = bf16(encoder()), torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    net(x[:8])  # warm-up
    start = time.perf_counter()
    for first in range(0, n, BATCH):
        net(x[: min(BATCH, n - first)])
    return time.perf_counter() - start


def run(n: int, threads: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = photo_folder(work / "photos", n)
        torch.set_num_threads(threads)
        cache_s, images = build_seconds(folder, work / "cache_main")
        bare_s = bare_seconds(images, threads)
        one_s = ranks_seconds(folder, work, 1)
        two_s = ranks_seconds(folder, work, 2)
    return {"photos": n, "images_encoded": images, "image_size": IMAGE_SIZE, "batch": BATCH, "threads": threads,
            "cache_build_s": round(cache_s, 2), "bare_model_s": round(bare_s, 2),
            "cache_over_bare_rate": round(bare_s / cache_s, 3),
            "one_rank_one_thread_s": round(one_s, 2), "two_ranks_one_thread_s": round(two_s, 2),
            "two_over_one": round(two_s / one_s, 3), "cpus": os.cpu_count()}


def table(row: dict) -> list[str]:
    return [
        "| measured | seconds | ratio | target |",
        "|---|---:|---:|---|",
        f"| bare `model(x)` loop, {row['images_encoded']:,} images, {row['threads']} threads | "
        f"{row['bare_model_s']:.1f} | | |",
        f"| the datamodule's cache build, same images, {row['threads']} threads | {row['cache_build_s']:.1f} | "
        f"{row['cache_over_bare_rate']:.2f}x the bare loop's rate | at least 0.9x |",
        f"| cache build, 1 process of 1 thread | {row['one_rank_one_thread_s']:.1f} | | |",
        f"| cache build, 2 processes of 1 thread (gloo) | {row['two_ranks_one_thread_s']:.1f} | "
        f"{row['two_over_one']:.2f}x the wall time of 1 | at most 0.65x |",
    ]


def head_epoch(batch: int = 256, threads: int = 2, repeats: int = 3) -> dict:
    """One clustering epoch of the lab's dcl_cluster head on the IF 100 cache: Trainer against bare loop."""
    import lightning.pytorch as pl

    from benchmarks import frozen_lab
    from benchmarks.folder_route import EpochClock
    from dcl_cluster import DebiasedClusterModule
    from dcl_cluster.presets import preset

    torch.set_num_threads(threads)
    pl.seed_everything(0, verbose=False)
    dm = frozen_lab.datamodule(100.0)
    dm.hparams.batch_size = batch
    module = DebiasedClusterModule(objectives=preset("dcl_cluster")["objectives"], backbone=frozen_lab.encoder(),
                                   num_clusters=10, warmup_epochs=1, kmeans_n_init=1)
    timer = EpochClock()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2 + repeats, precision=frozen_lab.PRECISION,
                         logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    if not module.features_cached:
        raise SystemExit("the module trained on images: build the lab's cache first (python -m benchmarks.frozen_lab "
                         "features)")
    cached = torch.load(dm.feature_cache_path, map_location="cpu", weights_only=True)
    views, clean = cached["views"], cached["clean"]
    n = len(views)
    built = module.configure_optimizers()
    optimizer = built["optimizer"] if isinstance(built, dict) else built
    module.train()
    generator = torch.Generator().manual_seed(0)
    bare_runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        for first in range(0, n - batch + 1, batch):  # the Trainer's loader drops the last partial batch too
            rows = order[first: first + batch]
            pick = torch.rand(len(rows), views.shape[1], generator=generator).argsort(1)[:, :2]  # two views
            batch_views = [views[rows, pick[:, 0]].float(), views[rows, pick[:, 1]].float(), clean[rows].float()]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                step = module.shared_step(batch_views, rows)
                terms = module.loss_terms(step)
                loss = sum(weight * value for weight, value in terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        bare_runs.append(time.perf_counter() - start)
    bare = float(np.median(bare_runs))
    # the clustering epochs after the first (which places the head)
    lightning = float(np.median([row["s"] for row in timer.rows[2:]]))
    return {"rows": n, "batch": batch, "threads": threads, "lightning_epoch_s": round(lightning, 3),
            "bare_epoch_s": round(bare, 3), "lightning_over_bare_rate": round(bare / lightning, 3),
            "terms": sorted(terms)}


def head_table(row: dict) -> list[str]:
    return [
        "| one clustering epoch, dcl_cluster head | seconds | ratio | target |",
        "|---|---:|---:|---|",
        f"| bare loop over the cached tensor ({row['rows']:,} rows, batch {row['batch']}) | {row['bare_epoch_s']:.2f} "
        "| | |",
        f"| in a Lightning Trainer (the datamodule's cached views) | {row['lightning_epoch_s']:.2f} | "
        f"{row['lightning_over_bare_rate']:.2f}x the bare loop's rate | at least 0.8x |",
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the cache part on 200 photos, nothing written")
    parser.add_argument("--photos", type=int, default=900)
    parser.add_argument("--parts", nargs="+", default=["cache", "head"], choices=["cache", "head"])
    args = parser.parse_args(argv)
    out = {}
    if args.smoke or "cache" in args.parts:
        out["cache"] = run(200 if args.smoke else args.photos)
        print("\n".join(table(out["cache"])))
        if not args.smoke:
            RESULTS.write_text(json.dumps(out["cache"], indent=1) + "\n")
    if not args.smoke and "head" in args.parts:
        out["head"] = head_epoch()
        print("\n".join(head_table(out["head"])))
        HEAD_RESULTS.write_text(json.dumps(out["head"], indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
