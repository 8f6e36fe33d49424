"""Two-view images per second out of LongTailDataModule.train_dataloader(), on CPU.

The loader must stay well ahead of training: a small 4-layer CNN trains at about 440
two-view images/s on a 2-core CPU. Measured for the digits default and for CIFAR-10-LT
(IF 100, the ``npz`` source exported from ``../shared/data``, skipped when absent), at
``num_workers`` 0 and 2, after the first batch (worker start-up is reported apart).

    python -m benchmarks.loader_throughput            # ~1 min
    python -m benchmarks.loader_throughput --smoke    # a few seconds
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DCL_CLUSTER_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("DCL_CLUSTER_CACHE", Path.home() / ".cache" / "dcl_cluster"))


def cifar10_npz_dir() -> Path | None:
    """Export the offline CIFAR-10 copy to the cache (once); ``None`` when it is absent."""
    export = SHARED_DATA / "cifar10" / "export.py"
    if not export.exists():
        return None
    out = CACHE / "cifar10_arrays"
    subprocess.run([sys.executable, str(export), "arrays", str(out)], check=True,
                   capture_output=True)
    return out


def measure(dm_kwargs: dict, num_workers: int, batches: int) -> tuple[float, float, int]:
    """(two-view images/s after the first batch, seconds to the first batch, batches seen)."""
    from dcl_cluster.data import LongTailDataModule

    dm = LongTailDataModule(num_workers=num_workers, persistent_workers=False, **dm_kwargs)
    dm.setup("fit")
    loader = dm.train_dataloader()
    start = time.perf_counter()
    images, seen, first = 0, 0, 0.0
    while seen < batches + 1:
        for views, _, _ in loader:
            if seen == 0:
                first = time.perf_counter() - start
                start = time.perf_counter()
            else:
                images += views[0].shape[0]
            seen += 1
            if seen == batches + 1:
                break
    return images / (time.perf_counter() - start), first, seen - 1


def measure_epochs(dm_kwargs: dict, num_workers: int, epochs: int) -> tuple[float, float, int]:
    """(images/s over ``epochs`` whole epochs, seconds of the first epoch, batches timed).

    The rate a training loop sees: persistent workers, the first epoch (worker start-up and
    the prefetched batches: with 16 workers, 32 of them, more than a CIFAR-10-LT epoch at
    batch 512) left out, then every batch of the next epochs, their restarts included."""
    from dcl_cluster.data import LongTailDataModule

    dm = LongTailDataModule(num_workers=num_workers, persistent_workers=num_workers > 0, **dm_kwargs)
    dm.setup("fit")
    loader = dm.train_dataloader()
    start = time.perf_counter()
    for _ in loader:
        pass
    first = time.perf_counter() - start
    images, seen, start = 0, 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for views, _, _ in loader:
            images += views[0].shape[0]
            seen += 1
    return images / (time.perf_counter() - start), first, seen


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny, quick run")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per setting")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--clean-view", action="store_true", help="also time 3-view batches")
    args = parser.parse_args(argv)
    batches = 3 if args.smoke else args.batches
    batch_size = 64 if args.smoke else args.batch_size

    settings = [("digits (8 px, 1 ch)", {"dataset": "digits", "imbalance_factor": 1.0})]
    npz = cifar10_npz_dir()
    if npz is None:
        print(f"CIFAR-10 copy not found under {SHARED_DATA}; timing digits only")
    else:
        settings.append(("CIFAR-10-LT IF 100 (32 px)",
                         {"dataset": "npz", "data_dir": str(npz), "imbalance_factor": 100.0}))
    views = [False, True] if args.clean_view else [False]

    print(f"torch threads: {__import__('torch').get_num_threads()}, cpus: {os.cpu_count()}, "
          f"batch size {batch_size}, {batches} timed batches")
    print(f"| {'source':28s} | views | workers | two-view img/s | first batch (s) |")
    print(f"|{'-' * 30}|-------|---------|----------------|-----------------|")
    for name, kwargs in settings:
        for clean in views:
            for workers in args.workers:
                rate, first, _ = measure({**kwargs, "batch_size": batch_size,
                                          "clean_view": clean}, workers, batches)
                print(f"| {name:28s} | {3 if clean else 2:5d} | {workers:7d} | {rate:14.0f} "
                      f"| {first:15.2f} |", flush=True)


if __name__ == "__main__":
    main()
