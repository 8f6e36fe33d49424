"""The one pad-gather-trim collective on two real gloo processes holding different row counts."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dcl_cluster.distributed import gather_rows, gather_with_grad

ROWS = [3, 5]  # uneven blocks: 3 rows on rank 0, 5 on rank 1
D = 4


def _block(rank: int, rows: int) -> torch.Tensor:
    """Rows that say where they come from: value = 100 * rank + row index (+ column / 10)."""
    return (100.0 * rank + torch.arange(rows, dtype=torch.float64)[:, None]
            + torch.arange(D, dtype=torch.float64) / 10)


def _weights(rank: int) -> torch.Tensor:
    """A different upstream gradient on each rank, over the whole gathered batch."""
    return torch.arange(sum(ROWS) * D, dtype=torch.float64).reshape(-1, D) * (rank + 1)


def _stacking_all_gather(t):
    """What a Lightning strategy's all_gather returns: one (world, *shape) tensor."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return torch.stack(parts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        x = _block(rank, ROWS[rank])
        out = {"rows": gather_rows(x), "rows_stacking": gather_rows(x, _stacking_all_gather),
               "labels": gather_rows(torch.arange(ROWS[rank]) + 10 * rank)}
        # a rank with nothing may hand a (0, 0) tensor: the other rank's rows come back
        empty_first = torch.zeros(0, 0, dtype=torch.float64) if rank == 0 else x
        out["one_empty"] = gather_rows(empty_first)
        leaf = x.clone().requires_grad_(True)
        gathered = gather_with_grad(leaf)
        (gathered * _weights(rank)).sum().backward()
        out["with_grad"], out["grad"] = gathered.detach(), leaf.grad
        try:
            gather_rows(torch.zeros(2, D + rank))  # trailing shapes disagree
        except ValueError as err:
            out["error"] = str(err)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("gather")
    mp.spawn(_worker, args=(2, _free_port(), str(out_dir)), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(2)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_gather_rows_concatenates_uneven_blocks_in_rank_order(per_rank):
    expected = torch.cat([_block(0, ROWS[0]), _block(1, ROWS[1])])
    for out in per_rank:
        assert torch.equal(out["rows"], expected)
        assert torch.equal(out["rows_stacking"], expected)  # a strategy's all_gather
        assert torch.equal(out["labels"], torch.tensor([0, 1, 2, 10, 11, 12, 13, 14]))
        assert torch.equal(out["one_empty"], _block(1, ROWS[1]))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_gather_with_grad_backward_sums_over_ranks_and_takes_the_slice(per_rank):
    expected = torch.cat([_block(0, ROWS[0]), _block(1, ROWS[1])])
    total = _weights(0) + _weights(1)  # d(sum of both ranks' losses) / d(gathered)
    for rank, out in enumerate(per_rank):
        assert torch.equal(out["with_grad"], expected)
        start = sum(ROWS[:rank])
        assert torch.equal(out["grad"], total[start : start + ROWS[rank]])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_gather_rows_names_disagreeing_trailing_shapes(per_rank):
    for out in per_rank:
        assert "only the number of rows may differ" in out["error"]


def test_gather_rows_without_a_process_group_is_the_identity():
    x = torch.randn(3, 2)
    assert gather_rows(x) is x and gather_with_grad(x) is x
