"""MiniClustering's re-weighted self-labelling (METHOD.md 2.7) against plain float64 loops:
the span-count weights, the loss, its gradients, bf16, the term through the module, and two
gloo ranks for the term's gathered mini head."""

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dcl_cluster import DebiasedClusterModule, LongTailDataModule
from dcl_cluster.losses import mini_cluster_weights, minicluster_loss
from dcl_cluster.nn import CosineHead
from dcl_cluster.objectives import MiniClusterSelfLabel, StepOutputs


def weights_loop(pred, mini, k, m, delta):
    counts = [[0.0] * m for _ in range(k)]
    for a, b in zip(pred.tolist(), mini.tolist(), strict=True):
        counts[a][b] += 1
    spans = []
    for c in range(k):
        span = 0
        for j in range(m):
            col = sum(counts[r][j] for r in range(k))
            if col > 0 and counts[c][j] / col > delta:
                span += 1
        spans.append(max(0.5, span))
    return [m / s for s in spans]


def softmax(row):
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def confident_ce_loop(target_logits, logits, threshold, weights=None):
    """torch's weighted-mean cross-entropy over the confident rows; weights per class given,
    or 1 / share among the confident rows when ``weights`` is None."""
    rows = []
    for t_row, row in zip(target_logits.tolist(), logits.tolist(), strict=True):
        p = softmax(t_row)
        if max(p) > threshold:
            rows.append((p.index(max(p)), row))
    if not rows:
        return 0.0
    if weights is None:
        share = {c: sum(1 for t, _ in rows if t == c) / len(rows) for c, _ in rows}
        weights = {c: 1 / s for c, s in share.items()}
    num = den = 0.0
    for t, row in rows:
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        num += weights[t] * (log_z - row[t])
        den += weights[t]
    return num / den


def loss_loop(target_logits, logits, target_mini, mini, threshold, delta, alpha, beta):
    c = [softmax(r) for r in logits.tolist()]
    o = [softmax(r) for r in mini.tolist()]
    pred = torch.tensor([r.index(max(r)) for r in c])
    mpred = torch.tensor([r.index(max(r)) for r in o])
    w = weights_loop(pred, mpred, logits.shape[1], mini.shape[1], delta)
    ce_k = confident_ce_loop(target_logits, logits, threshold, dict(enumerate(w)))
    ce_m = confident_ce_loop(target_mini, mini, threshold)

    def gram(p):
        norms = [math.sqrt(sum(v * v for v in r)) for r in p]
        return [[sum(a * b for a, b in zip(p[i], p[j], strict=True)) / (norms[i] * norms[j])
                 for j in range(len(p))] for i in range(len(p))]

    gc, go = gram(c), gram(o)
    n = len(c)
    mse = sum((gc[i][j] - go[i][j]) ** 2 for i in range(n) for j in range(n)) / (n * n)
    return ce_k + alpha * ce_m + beta * mse


def test_weights_count_the_mini_clusters_each_cluster_spans():
    g = torch.Generator().manual_seed(0)
    for delta in (0.0, 0.3, 0.6):
        pred, mini = torch.randint(4, (50,), generator=g), torch.randint(9, (50,), generator=g)
        got = mini_cluster_weights(pred, mini, 4, 9, delta)
        torch.testing.assert_close(got, torch.tensor(weights_loop(pred, mini, 4, 9, delta)))
    # a cluster that owns no mini-cluster at all counts 0.5: the largest weight, 2 M
    pred, mini = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])  # column 1 is half 0, half 1
    assert mini_cluster_weights(pred, mini, 3, 2, 0.5).tolist() == [2.0, 4.0, 4.0]
    with pytest.raises(ValueError, match=r"delta must be in \[0, 1\), got 1.0"):
        mini_cluster_weights(pred, mini, 3, 2, 1.0)


@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_the_loss_matches_a_float64_loop(threshold):
    g = torch.Generator().manual_seed(1)
    b, k, m = 24, 4, 8
    la, lb = torch.randn(b, k, generator=g, dtype=torch.float64) * 3, torch.randn(b, k, generator=g) * 3
    ma, mb = torch.randn(b, m, generator=g, dtype=torch.float64) * 3, torch.randn(b, m, generator=g) * 3
    got = minicluster_loss(la, lb.double(), ma, mb.double(), threshold, 0.3, 0.7, 0.2)
    expected = loss_loop(la, lb.double(), ma, mb.double(), threshold, 0.3, 0.7, 0.2)
    assert got.dtype == torch.float32
    assert abs(float(got) - expected) < 1e-5 * max(1.0, abs(expected))


def test_gradients_reach_the_trained_view_only_and_bf16_agrees():
    g = torch.Generator().manual_seed(2)
    la, ma = torch.randn(32, 3, generator=g) * 4, torch.randn(32, 6, generator=g) * 4
    lb = (la + 0.3 * torch.randn(32, 3, generator=g)).requires_grad_()
    mb = (ma + 0.3 * torch.randn(32, 6, generator=g)).requires_grad_()
    ta, tm = la.clone().requires_grad_(), ma.clone().requires_grad_()
    loss = minicluster_loss(ta, lb, tm, mb, 0.9)
    loss.backward()
    assert float(loss) > 0 and lb.grad.abs().sum() > 0 and mb.grad.abs().sum() > 0
    assert ta.grad is None and tm.grad is None
    half = minicluster_loss(la.bfloat16(), lb.detach().bfloat16(), ma.bfloat16(), mb.detach().bfloat16(), 0.9)
    assert half.dtype == torch.float32 and abs(float(half) - float(loss)) < 0.05 * float(loss)


def test_no_confident_row_leaves_only_the_similarity_term():
    flat = torch.zeros(8, 3)
    mini = torch.randn(8, 5, generator=torch.Generator().manual_seed(3))
    got = minicluster_loss(flat, flat.clone().requires_grad_(), flat[:, :1].repeat(1, 5), mini, 0.99, beta=0.2)
    assert abs(float(got) - loss_loop(flat, flat, flat[:, :1].repeat(1, 5), mini, 0.99, 0.3, 1.0, 0.2)) < 1e-6


def test_the_term_trains_its_mini_head_inside_the_module_and_reloads(tmp_path):
    from dcl_cluster.objectives import InfoNCE

    pl.seed_everything(0)
    dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=64)
    term = MiniClusterSelfLabel(mini_clusters=12, threshold=0.6)
    with pytest.warns(UserWarning, match="cosine_scale=30.0: the cluster head's logits are bounded"):
        module = DebiasedClusterModule(objectives=[InfoNCE(), term], cluster_head="cosine", cosine_scale=30.0,
                                       warmup_epochs=1, backbone_width=8)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                             default_root_dir=tmp_path)
        in_graph, after_step = [], []

        class Spy(pl.Callback):
            def on_before_optimizer_step(self, trainer, *args):  # before the module's own hook
                if trainer.current_epoch == 0:
                    in_graph.append(term.mini_head.centroids.grad)

            def on_train_batch_end(self, trainer, *args):  # after the step: the module cleared idle grads
                if trainer.current_epoch == 0:
                    after_step.append(term.mini_head.centroids.grad)

        trainer.callbacks.append(Spy())
        trainer.fit(module, datamodule=dm)
    # idle in the warm-up: in the graph (a zero gradient, so DDP sees every parameter used), then no step
    assert in_graph and all(g is not None and not g.any() for g in in_graph)
    assert after_step and all(g is None for g in after_step)
    term = module.objectives[1]
    assert term.mini_head is not None and term.mini_head.ready and term.mini_head.num_clusters == 12
    assert any(p is term.mini_head.centroids for group in trainer.optimizers[0].param_groups for p in group["params"])
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    again = DebiasedClusterModule.load_from_checkpoint(tmp_path / "last.ckpt")
    torch.testing.assert_close(again.objectives[1].mini_head.centroids, term.mini_head.centroids)
    with pytest.raises(ValueError, match="mini_clusters must be an integer >= 2"):
        MiniClusterSelfLabel(mini_clusters=1).check()


# ---------------------------------------------------------------- two gloo ranks

WORLD, B, D, K, M = 2, 6, 5, 3, 4


def _term_and_batch():
    torch.manual_seed(0)
    term = MiniClusterSelfLabel(mini_clusters=M, threshold=0.5)
    term.build(K)
    term.mini_head = CosineHead(D, M, scale=5.0).double()
    term.mini_head.init_centroids(torch.randn(M, D, dtype=torch.float64))
    head = torch.randn(K, D, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    h_a, h_b = torch.randn(2 * B, D, generator=g, dtype=torch.float64), torch.randn(2 * B, D, generator=g,
                                                                                    dtype=torch.float64)
    return term, head, h_a, h_b


def _loss(term, head, h_a, h_b, logits_a, logits_b):
    step = StepOutputs(h_a, h_b, h_a=h_a, h_b=h_b, logits={"a": logits_a, "b": logits_b})
    loss = term(step)
    loss.backward()
    return loss.detach(), term.mini_head.centroids.grad.clone()


def _worker(rank, init_file, out_file):
    from dcl_cluster.distributed import gather_with_grad

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    term, head, h_a, h_b = _term_and_batch()
    rows = slice(rank * B, (rank + 1) * B)
    la, lb = gather_with_grad(5 * h_a[rows] @ head.t()), gather_with_grad(5 * h_b[rows] @ head.t())
    loss, grad = _loss(term, head, h_a[rows], h_b[rows], la, lb)
    dist.all_reduce(grad)
    local, local_term = None, _term_and_batch()[0]
    local_term._gather = False  # a module with gather_distributed=False: this rank's rows only
    local, _ = _loss(local_term, head, h_a[rows], h_b[rows], 5 * h_a[rows] @ head.t(), 5 * h_b[rows] @ head.t())
    torch.save((loss, grad / WORLD, local), f"{out_file}.{rank}")
    dist.destroy_process_group()


def test_two_gloo_ranks_give_the_loss_and_gradients_of_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    term, head, h_a, h_b = _term_and_batch()
    loss, grad = _loss(term, head, h_a, h_b, 5 * h_a @ head.t(), 5 * h_b @ head.t())
    for r in range(WORLD):
        got_loss, got_grad, got_local = torch.load(f"{tmp_path / 'out'}.{r}")
        torch.testing.assert_close(got_loss, loss)
        # DDP averages gradients; each rank's loss is the global batch's, so the average is one process's
        torch.testing.assert_close(got_grad, grad)
        rows = slice(r * B, (r + 1) * B)
        single = _term_and_batch()[0]
        expected, _ = _loss(single, head, h_a[rows], h_b[rows], 5 * h_a[rows] @ head.t(), 5 * h_b[rows] @ head.t())
        torch.testing.assert_close(got_local, expected)


def test_the_term_warns_once_when_the_head_empties_a_cluster():
    term = MiniClusterSelfLabel(threshold=0.5)
    term.build(3)
    term.mini_head = CosineHead(4, 6, scale=5.0)
    term.mini_head.init_centroids(torch.randn(6, 4))
    h = torch.randn(8, 4)
    logits = torch.tensor([[5.0, 0.0, 0.0]] * 4 + [[0.0, 5.0, 0.0]] * 4)  # cluster 2 never wins
    step = StepOutputs(h, h, h_a=h, h_b=h, logits={"a": logits, "b": logits})

    class Module:
        current_epoch = 3

    term.on_fit_start(Module())
    term(step)
    with pytest.warns(UserWarning, match=r"in epoch 3 the cluster head assigned no training image to cluster\(s\) "
                                         r"\[2\] of 3"):
        term.on_train_epoch_end(Module())
    term(step)
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        term.on_train_epoch_end(Module())  # once per fit
