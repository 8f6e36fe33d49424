"""How fast the feature cache is built (issue 25): the datamodule's own build against a bare
``model(x)`` loop over as many images of the same size, batch and precision; and the build
by 2 processes of 1 thread each (gloo, each encoding every other batch) against 1 of 1.

Data: a generated folder of photos (``examples/cluster_folder.py``'s coloured shapes, 64 px
PNGs), read as ``dataset: images`` at 128 px; the encoder: frozen EfficientNet-Lite0 with the
packaged weights in bf16 autocast, as ``examples/configs/cluster_folder.yaml``. Loader
workers: none (each process decodes its own images, as on a 2-core machine).

    python -m benchmarks.cache_build            # about 3 minutes on 2 idle cores
    python -m benchmarks.cache_build --smoke    # seconds, writes nothing

Writes ``benchmarks/results/cache_build.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cache_build.json"
IMAGE_SIZE, BATCH, VIEWS = 128, 128, 2


def photo_folder(root: Path, n: int) -> Path:
    spec = importlib.util.spec_from_file_location("cluster_folder", HERE.parent / "examples" / "cluster_folder.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    third = n // 3
    return example.make_shape_folder(root, counts=(n - 2 * third, third, third), size=64)


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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="200 photos, nothing written")
    parser.add_argument("--photos", type=int, default=900)
    args = parser.parse_args(argv)
    row = run(200 if args.smoke else args.photos)
    print(json.dumps(row, indent=1))
    print("\n".join(table(row)))
    if not args.smoke:
        RESULTS.write_text(json.dumps(row, indent=1) + "\n")
    return row


if __name__ == "__main__":
    main()
