"""Speed against peers, measured side by side in one run and reported as ratios.

Sections (all on the CPU with ``torch.set_num_threads(2)``; medians of interleaved repeats):
  loss        debiased_contrastive_loss vs lightly's NTXentLoss, the paper's formulation, matmul floor
  kmeans      dcl_cluster KMeans vs scikit-learn KMeans, 50k x 128, K in {10, 100}, same n_init
  metrics     ClusteringMetrics (one contingency table) vs scikit-learn NMI + ARI, 1M labels, 1000 classes
  throughput  DebiasedClusterModule (dcl_cluster preset, clustering on) in a Trainer vs a plain
              PyTorch SimCLR loop, same backbone and batch; with channels-last and bf16 autocast
  transport   partial_ot_targets vs P²OT's scaling loop as its paper describes it (linear float64,
              a host check every iteration), one thread, cold solves; plans compared; and the
              memory-bound floor: two passes over the N x (K+1) kernel per iteration

    python -m benchmarks.speed                      # everything, writes benchmarks/results/speed.json
    python -m benchmarks.speed --sections kmeans    # one section
    python -m benchmarks.speed --smoke              # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import speed_losses
from benchmarks.common import interleaved_medians

HERE = Path(__file__).resolve().parent


def bench_kmeans(n, d, ks, n_init, repeats) -> list[dict]:
    from sklearn.cluster import KMeans as SkKMeans
    from sklearn.datasets import make_blobs

    from dcl_cluster.cluster import KMeans

    x, _ = make_blobs(n_samples=n, n_features=d, centers=max(ks), cluster_std=4.0, random_state=0)
    x = x.astype(np.float32)
    xt = torch.from_numpy(x)
    rows = []
    for k in ks:
        results = {}

        def ours(k=k, results=results):
            results["ours"] = KMeans(k, n_init=n_init, seed=0).fit(xt).inertia_

        def sklearn(k=k, results=results):
            results["sklearn"] = SkKMeans(k, n_init=n_init, random_state=0).fit(x).inertia_

        times = interleaved_medians({"dcl_cluster KMeans": ours, "scikit-learn KMeans": sklearn}, repeats)
        row = {"N": n, "d": d, "K": k, "n_init": n_init, "ours_s": times["dcl_cluster KMeans"],
               "sklearn_s": times["scikit-learn KMeans"],
               "speedup": times["scikit-learn KMeans"] / times["dcl_cluster KMeans"],
               "inertia_ratio": float(results["ours"]) / float(results["sklearn"])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_metrics(n, classes, repeats) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from dcl_cluster.metrics import ClusteringMetrics

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (n,), generator=g)
    pred = torch.where(torch.rand(n, generator=g) < 0.7, y, torch.randint(0, classes, (n,), generator=g))
    y_np, pred_np = y.numpy(), pred.numpy()
    results = {}

    def ours():
        metric = ClusteringMetrics(num_classes=classes, num_clusters=classes)
        metric.update(pred, y)
        results["ours"] = metric.compute()

    def sklearn():
        results["sklearn"] = (normalized_mutual_info_score(y_np, pred_np), adjusted_rand_score(y_np, pred_np))

    times = interleaved_medians({"ours": ours, "sklearn": sklearn}, repeats)
    row = {"N": n, "classes": classes, "ours_s": times["ours"], "sklearn_nmi_ari_s": times["sklearn"],
           "speedup": times["sklearn"] / times["ours"],
           "nmi_diff": abs(results["ours"]["nmi"] - results["sklearn"][0]),
           "ari_diff": abs(results["ours"]["ari"] - results["sklearn"][1]),
           "note": "ours computes acc, balanced_acc, macro_f1, nmi, ari and ami; scikit-learn nmi and ari only"}
    print(json.dumps(row), flush=True)
    return [row]


def _views(batch, size, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 3, size, size, generator=g) for _ in range(3)] for _ in range(steps)]


def plain_simclr_loop(backbone_fn, batches, channels_last, bf16) -> float:
    """Images/s of a hand-written SimCLR loop: backbone + 2-layer projector, InfoNCE, Adam."""
    from dcl_cluster.losses import info_nce_loss
    from dcl_cluster.nn import MLPProjectionHead

    torch.manual_seed(0)
    backbone = backbone_fn()
    projector = MLPProjectionHead(backbone.out_dim, 512, 128)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    params = list(backbone.parameters()) + list(projector.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    start = None
    for i, views in enumerate(batches):
        if i == 1:
            start = time.perf_counter()  # the first step warms up allocators and kernels
        x = torch.cat(views[:2])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = projector(backbone(x))
            n = views[0].shape[0]
            loss = info_nce_loss(z[:n], z[n:], 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 2 * views[0].shape[0] * (len(batches) - 1) / (time.perf_counter() - start)


def module_in_trainer(backbone_fn, batches, channels_last, bf16, size, dec_input) -> float:
    """Images/s (two augmented views per image) of DebiasedClusterModule in a Lightning Trainer,
    dcl_cluster preset with the clustering terms on (DEC, cluster-prior tau+). With
    ``dec_input="clean"`` the batch carries a third, un-augmented view (50% more backbone work
    than SimCLR's two); ``"views"`` feeds DEC the two augmented views, without the anchor loss
    (it needs the clean view)."""
    import lightning.pytorch as pl

    from dcl_cluster import DebiasedClusterModule
    from dcl_cluster.presets import preset

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 1:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *args):
            self.elapsed = time.perf_counter() - self.start

    torch.manual_seed(0)
    from dcl_cluster.objectives import DebiasedContrastive, DECClustering

    terms = preset("dcl_cluster")["objectives"]
    if dec_input != "clean":  # two views: DEC on the augmented views, no anchor loss
        terms = [DebiasedContrastive(tau_plus="cluster_prior"), DECClustering(target="prior", inputs="views")]
    module = DebiasedClusterModule(
        objectives=terms, backbone=backbone_fn(), in_channels=3, input_size=size, num_clusters=10,
        warmup_epochs=0, channels_last=channels_last, projection_hidden_dim=512, cosine=False)
    n_views = 3 if dec_input == "clean" else 2
    loader = [(views[:n_views], torch.zeros(len(views[0]), dtype=torch.long), torch.arange(len(views[0])))
              for views in batches]
    module.init_centroids([(v[2],) for v in batches[:2]])  # k-means init is not part of a step
    timer = Timer()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                         precision="bf16-mixed" if bf16 else "32-true", limit_val_batches=0)
    # batch_size=None hands the prepared batches over as they are
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(loader, batch_size=None))
    return 2 * len(batches[0][0]) * (len(batches) - 1) / timer.elapsed


def bench_throughput(configs, steps, combos=None) -> list[dict]:
    from dcl_cluster.nn import ResNet, SmallCNN

    backbones = {"SmallCNN(width=32)": lambda: SmallCNN(3, 32), "ResNet-18 (CIFAR stem)": lambda: ResNet("resnet18")}
    rows = []
    for name, batch, size in configs:
        batches = _views(batch, size, steps)
        for channels_last, bf16 in combos or ((False, False), (True, False), (True, True)):
            plain = plain_simclr_loop(backbones[name], batches, channels_last, bf16)
            two = module_in_trainer(backbones[name], batches, channels_last, bf16, size, "views")
            three = module_in_trainer(backbones[name], batches, channels_last, bf16, size, "clean")
            row = {"backbone": name, "batch": batch, "px": size, "channels_last": channels_last, "bf16": bf16,
                   "plain_simclr_img_s": plain, "module_2views_img_s": two, "module_3views_img_s": three,
                   "ratio_2views": two / plain, "ratio_3views": three / plain}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def p2ot_paper_loop(logits: torch.Tensor, rho: float, eps: float = 0.1, lam: float = 1.0, max_iters: int = 1000,
                    tol: float = 1e-6) -> tuple[torch.Tensor, int]:
    """P²OT's semi-relaxed scaling iterations as the paper describes them (METHOD.md 2.5): the
    kernel ``G = exp(-C / eps)`` formed once in float64, then ``a = (1/N) / (G b)``,
    ``b = c / (G^T a)``, ``b_k <- b_k^(lam / (lam + eps))``, until ``||b - b_prev|| < tol`` (read
    on the host every iteration). Returns the pseudo-labels ``N Q[:, :K]`` and the iterations."""
    n, k = logits.shape
    cost = torch.cat([-torch.log_softmax(logits.double(), dim=1), torch.zeros(n, 1, dtype=torch.float64)], dim=1)
    g = torch.exp(-cost / eps)
    pa = torch.full((n, 1), 1.0 / n, dtype=torch.float64)
    pb = torch.full((k + 1, 1), rho / k, dtype=torch.float64)
    pb[-1] = 1 - rho
    b = torch.full((k + 1, 1), 1.0 / (k + 1), dtype=torch.float64)
    power, it, err = lam / (lam + eps), 0, 1.0
    while err > tol and it < max_iters:
        last = b
        a = pa / (g @ b)
        b = pb / (g.t() @ a)
        b[:-1] = b[:-1] ** power
        err = float(torch.linalg.vector_norm(b - last))
        it += 1
    return (n * a * g * b.t())[:, :k], it


def _transport_contenders(logits: torch.Tensor, rho: float, iters: int) -> dict:
    from dcl_cluster.losses import partial_ot_targets

    n, k = logits.shape
    kernel = torch.rand(n, k + 1, dtype=torch.float64)
    vec_a, vec_b = torch.rand(n, dtype=torch.float64), torch.rand(k + 1, dtype=torch.float64)

    def floor():  # what the paper's iterations cannot go below: two passes over one kernel each
        for _ in range(iters):
            torch.mv(kernel, vec_b)
            vec_a @ kernel

    return {"ours": lambda: partial_ot_targets(logits, rho), "paper": lambda: p2ot_paper_loop(logits, rho),
            "floor": floor}


def _counting_iterations(solve, *args):
    """``solve(*args)`` and its scaling iterations, counted (untimed): the linear-space iterations
    of ``partial_ot_targets`` call ``pseudo_labels._scaling_step`` once each."""
    from dcl_cluster.losses import pseudo_labels

    calls, real = [], pseudo_labels._scaling_step
    pseudo_labels._scaling_step = lambda *a: calls.append(1) or real(*a)
    try:
        result = solve(*args)
    finally:
        pseudo_labels._scaling_step = real
    return result, len(calls)


def bench_transport(cases, repeats) -> list[dict]:
    """Cold solves of ``partial_ot_targets`` against :func:`p2ot_paper_loop` on the same logits
    (a cosine head's: normalised rows x 10), one thread; and the floor: the iterations the
    paper's loop needed times two float64 mat-vecs over the kernel, timed alone. Both plans are
    also compared with the fixed point (the paper's loop run to a change below 1e-11)."""
    from dcl_cluster.losses import partial_ot_targets

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for n, k, rho in cases:
            g = torch.Generator().manual_seed(n + k)
            logits = torch.nn.functional.normalize(torch.randn(n, k, generator=g), dim=1) * 10
            ours, ours_iters = _counting_iterations(partial_ot_targets, logits, rho)
            theirs, iters = p2ot_paper_loop(logits, rho)
            fixed_point, _ = p2ot_paper_loop(logits, rho, max_iters=50_000, tol=1e-11)
            times = interleaved_medians(_transport_contenders(logits, rho, iters), repeats)
            floor_at_ours = times["floor"] * ours_iters / iters  # the same two mat-vecs, our count of them
            row = {"N": n, "K": k, "rho": rho, "iterations": iters, "ours_iterations": ours_iters,
                   "ours_s": times["ours"], "paper_s": times["paper"], "floor_s": times["floor"],
                   "speedup": times["paper"] / times["ours"], "ours_over_floor": times["ours"] / times["floor"],
                   "ours_over_floor_at_ours": times["ours"] / floor_at_ours,
                   "max_plan_diff": float((ours.double() - theirs).abs().max()),
                   "ours_to_fixed_point": float((ours.double() - fixed_point).abs().max()),
                   "paper_to_fixed_point": float((theirs - fixed_point).abs().max())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        torch.set_num_threads(threads)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["loss", "kmeans", "metrics", "throughput"])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    results = json.loads(args.out.read_text()) if args.out.exists() and not args.smoke else {}
    smoke = args.smoke
    for section in args.sections:
        if section == "loss":
            results["loss"] = (speed_losses.run([16], 8, 1, memory=False) if smoke
                               else speed_losses.run([256, 1024, 2048], 128, 15))
        elif section == "kmeans":
            results["kmeans"] = (bench_kmeans(500, 8, [5], 1, 1) if smoke
                                 else bench_kmeans(50_000, 128, [10, 100], 3, 3))
        elif section == "metrics":
            results["metrics"] = bench_metrics(10_000, 50, 1) if smoke else bench_metrics(1_000_000, 1000, 5)
        elif section == "throughput":
            configs = ([("SmallCNN(width=32)", 8, 16)] if smoke
                       else [("SmallCNN(width=32)", 256, 32), ("ResNet-18 (CIFAR stem)", 64, 32)])
            results["throughput"] = bench_throughput(configs, 3 if smoke else 6,
                                                     [(False, False)] if smoke else None)
        elif section == "transport":
            cases = ([(256, 10, 0.5)] if smoke
                     else [(n, k, rho) for n, k in ((3072, 10), (3072, 100), (20_000, 100)) for rho in (0.1, 0.5)])
            results["transport"] = bench_transport(cases, 1 if smoke else 5)
        else:
            raise SystemExit(f"unknown section {section!r}")
    if not smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
