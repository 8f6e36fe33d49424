"""Timing and memory helpers shared by the benchmarks: interleaved repeats with medians,
and peak resident memory of a callable measured in a fresh child process."""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable


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


def _child(make: Callable[[], Callable[[], object]], queue: mp.Queue) -> None:
    fn = make()  # inputs and imports are allocated before the baseline is read
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)


def peak_memory_mib(make: Callable[[], Callable[[], object]]) -> float:
    """Growth of the peak resident set (MiB) during one call of ``make()``'s callable, in a
    fresh spawned process (inputs are made before the baseline is read). ``make`` must be a
    picklable module-level function. Includes a few MiB of one-time lazy initialisation,
    alike for every contender."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(make, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return value
