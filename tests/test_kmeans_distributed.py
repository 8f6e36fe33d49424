"""KMeans fitted on two gloo processes, each with a shard, equals one fit on all rows."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dcl_cluster.cluster import KMeans

CUT = 700  # uneven shards: rows [0, 700) on rank 0, [700, 1200) on rank 1


def _data():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 8, generator=g) * 4
    y = torch.randint(0, 6, (1200,), generator=g)
    return centres[y] + torch.randn(1200, 8, generator=g)


def _init():
    return _data()[torch.arange(6) * 97]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        x = _data()
        shard = x[:CUT] if rank == 0 else x[CUT:]
        given = KMeans(6, init=_init(), distributed=True).fit(shard)
        seeded = KMeans(6, n_init=2, seed=3, distributed=True).fit(shard)
        torch.save({"given": (given.cluster_centers_, given.labels_, given.inertia_),
                    "seeded": (seeded.cluster_centers_, seeded.inertia_)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_distributed_fit_equals_single_process_fit(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    single = KMeans(6, init=_init()).fit(_data())
    centres, labels0, inertia = r0["given"]
    assert torch.allclose(centres, single.cluster_centers_, atol=1e-5)
    assert torch.equal(torch.cat([labels0, r1["given"][1]]), single.labels_)
    assert inertia == pytest.approx(single.inertia_, rel=1e-6)
    # k-means++ from a gathered sample: identical centres on every rank, a good optimum
    assert torch.equal(r0["seeded"][0], r1["seeded"][0])
    best = KMeans(6, n_init=2, seed=3).fit(_data()).inertia_
    assert r0["seeded"][1] <= 1.01 * best
    assert np.isclose(r0["seeded"][1], r1["seeded"][1])
