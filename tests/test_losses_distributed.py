"""Two real gloo processes give the loss and the (DDP-averaged) gradients of one process
on the concatenated batch, for every loss that gathers the global batch."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dcl_cluster.distributed import gather_with_grad
from dcl_cluster.losses import (
    ClusterContrastiveLoss,
    DebiasedContrastiveLoss,
    DECClusteringLoss,
    HardNegativeLoss,
    InfoNCELoss,
)

WORLD = 2
D_IN, D_OUT, K = 6, 5, 3


def make_losses(gather):
    return {
        "info_nce": lambda a, b, tau: InfoNCELoss(0.2, gather_distributed=gather)(a, b),
        "debiased": lambda a, b, tau: DebiasedContrastiveLoss(0.2, 0.1, gather_distributed=gather)(a, b),
        "debiased_per_anchor": lambda a, b, tau: DebiasedContrastiveLoss(
            0.2, 0.1, gather_distributed=gather)(a, b, tau),
        "hard_negative": lambda a, b, tau: HardNegativeLoss(0.5, 0.1, 1.0, gather_distributed=gather)(a, b),
        "dec": lambda a, b, tau: DECClusteringLoss(1.0, gather_distributed=gather)(
            torch.softmax(a[:, :K], 1)),
        # Sinkhorn over the global batch: its column sums are global
        "dec_prior_matched": lambda a, b, tau: DECClusteringLoss(target="prior", gather_distributed=gather)(
            torch.softmax(a[:, :K], 1), prior=torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)),
        "cluster_contrastive": lambda a, b, tau: ClusterContrastiveLoss(1.0, gather_distributed=gather)(
            torch.softmax(a[:, :K], 1), torch.softmax(b[:, :K], 1)),
    }


def global_batch(sizes):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x_a = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    x_b = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    tau_a = torch.rand(n, generator=g, dtype=torch.float64) * 0.3
    tau_b = torch.rand(n, generator=g, dtype=torch.float64) * 0.3
    return x_a, x_b, tau_a, tau_b


def loss_and_grad(name, x_a, x_b, tau, gather):
    torch.manual_seed(1)
    layer = torch.nn.Linear(D_IN, D_OUT).double()
    loss = make_losses(gather)[name](layer(x_a), layer(x_b), tau)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in layer.parameters()])
    return loss.detach(), grads


def worker(rank, sizes, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    x_a, x_b, tau_a, tau_b = global_batch(sizes)
    start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
    local_tau = torch.cat([tau_a[start:stop], tau_b[start:stop]])
    results = {}
    for name in make_losses(True):
        loss, grads = loss_and_grad(name, x_a[start:stop], x_b[start:stop], local_tau, gather=True)
        dist.all_reduce(grads)  # what DDP does: average parameter gradients over processes
        results[name] = (loss, grads / WORLD)
    gathered = gather_with_grad(torch.full((stop - start, 2), float(rank)))
    results["gathered_rows"] = gathered[:, 0]
    torch.save(results, f"{out_file}.{rank}")
    dist.destroy_process_group()


def run_two_processes(tmp_path, sizes):
    out = tmp_path / "results"
    mp.spawn(worker, args=(sizes, str(tmp_path / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(f"{out}.{r}") for r in range(WORLD)]


def check_against_single_process(per_rank, sizes):
    x_a, x_b, tau_a, tau_b = global_batch(sizes)
    for name in make_losses(False):
        loss, grads = loss_and_grad(name, x_a, x_b, torch.cat([tau_a, tau_b]), gather=False)
        for r in range(WORLD):
            got_loss, got_grads = per_rank[r][name]
            torch.testing.assert_close(got_loss, loss, rtol=1e-6, atol=1e-6, msg=f"{name} loss, rank {r}")
            torch.testing.assert_close(got_grads, grads, rtol=1e-6, atol=1e-6, msg=f"{name} grads, rank {r}")


def test_gather_losses_match_single_process_two_ranks(tmp_path):
    sizes = [4, 4]
    per_rank = run_two_processes(tmp_path, sizes)
    check_against_single_process(per_rank, sizes)
    expected_rows = torch.tensor([0.0] * 4 + [1.0] * 4)
    for r in range(WORLD):
        torch.testing.assert_close(per_rank[r]["gathered_rows"], expected_rows)


def test_gather_losses_match_single_process_unequal_batches(tmp_path):
    sizes = [3, 5]
    per_rank = run_two_processes(tmp_path, sizes)
    check_against_single_process(per_rank, sizes)
    torch.testing.assert_close(per_rank[1]["gathered_rows"], torch.tensor([0.0] * 3 + [1.0] * 5))
