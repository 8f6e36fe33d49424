"""ClusteringMetrics synced over two real gloo processes equals one process on all data."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dcl_cluster.metrics import ClusteringMetrics

COUNTS = [500, 300, 150, 80, 40, 20, 10]


def _data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 1500)
    p = np.where(rng.random(1500) < 0.6, (y + 2) % 9, rng.integers(0, 9, 1500))
    return torch.as_tensor(p), torch.as_tensor(y)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        p, y = _data()
        cut = 900  # uneven halves: 900 and 600 samples
        part = slice(0, cut) if rank == 0 else slice(cut, None)
        m = ClusteringMetrics(num_classes=7, num_clusters=9, class_counts=COUNTS)
        for s in range(0, len(y[part]), 100):
            m.update(p[part][s : s + 100], y[part][s : s + 100])
        torch.save(m.compute(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_process_sync_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    p, y = _data()
    single = ClusteringMetrics(num_classes=7, num_clusters=9, class_counts=COUNTS)
    single.update(p, y)
    expected = single.compute()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got == pytest.approx(expected, abs=1e-12), rank
