"""Timing and memory helpers shared by the benchmarks: interleaved repeats with medians,
peak resident memory of a callable measured in a fresh child process, and a generated folder
of photos."""

from __future__ import annotations

import gc
import importlib.util
import multiprocessing as mp
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path


def interleaved_medians(contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict:
    """Median wall time (s) of each contender, running them in turn ``repeats`` times so that
    drifts of a shared machine hit all of them alike."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(make: Callable[[], Callable[[], object]], queue: mp.Queue) -> None:
    fn = make()  # inputs and imports are allocated before the baseline is read
    fn()  # warm-up: lazy initialisation (thread pools, kernels) is not working memory
    gc.collect()
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def poll() -> None:  # the resident set sampled while fn runs (torch ops release the GIL)
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    fn()
    done.set()
    thread.join()
    queue.put(max(0, peak[0] - base) / 2**20)


def peak_memory_mib(make: Callable[[], Callable[[], object]]) -> float:
    """Peak growth of the resident set (MiB) during one call of ``make()``'s callable, after
    one warm-up call, in a fresh spawned process; the resident set is sampled by a thread
    while the call runs. ``make`` must be a picklable module-level function. Large buffers
    are returned to the system when freed (glibc's mmap threshold), so the growth is the
    call's working memory; very short peaks may be missed."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(make, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return value


def shape_photo_folder(root: Path, counts: tuple[int, ...], size: int = 64) -> Path:
    """A folder of generated photos, ``counts[k]`` of shape ``k`` (``examples/cluster_folder.py``'s
    coloured shapes, PNGs of ``size`` px)."""
    path = Path(__file__).resolve().parents[1] / "examples" / "cluster_folder.py"
    spec = importlib.util.spec_from_file_location("cluster_folder", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.make_shape_folder(root, counts=counts, size=size)
