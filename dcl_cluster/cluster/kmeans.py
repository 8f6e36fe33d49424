"""K-means in torch, so embeddings are clustered where they live: CPU, GPU or DDP shards.

Evaluation clusters validation embeddings every epoch and initialises DEC centroids
from training features; moving those to NumPy (and gathering them on one process) is
what this module avoids, with scikit-learn's estimator shape and inertia.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from dcl_cluster.cluster.seeding import greedy_kmeans_plusplus
from dcl_cluster.distributed import all_reduce_sum, gather_rows

_METRICS = ("euclidean", "cosine")


class KMeans:
    """K-means with greedy k-means++ seeding and chunked, matmul-based Lloyd iterations.

    Implements:

    1. Lloyd, "Least squares quantization in PCM", 1982 (the iterations);
    2. Arthur & Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007,
       in its greedy form (``2 + log(k)`` local trials per centre, as scikit-learn);
    3. Dhillon & Modha, "Concept decompositions for large sparse text data using
       clustering", 2001 (spherical k-means, ``metric="cosine"``).

    Distances are ``||x||^2 - 2 x c^T + ||c||^2`` over row chunks, so memory beyond the
    data is ``O(chunk_size * n_clusters + n_clusters * d)``. Convergence follows
    scikit-learn: stop when no label changes or when the squared centre shift falls
    below ``tol`` times the mean per-feature variance. Empty clusters are re-seeded at
    the points farthest from their centres. ``inertia_`` is the sum of squared
    Euclidean distances to the nearest centre (``metric="cosine"``: the sum of cosine
    distances ``1 - cos``), computed exactly (not by the expansion) in a last pass.
    The ``n_init`` runs share each pass over the data, distances are taken about the
    data mean (float32 stays accurate far from the origin), and Hamerly's bounds
    (Hamerly, "Making k-means even faster", SDM 2010) skip rows that cannot change
    cluster: the result is Lloyd's, only cheaper.

    Distributed fit: with ``distributed=True`` and ``torch.distributed`` initialised,
    every process passes its own shard of the rows; per-cluster sums and counts are
    all-reduced each iteration, k-means++ runs on a sample gathered from all shards,
    and every rank ends with identical centres (``labels_`` are those of the local
    shard). All ranks must call ``fit`` together.

    Args:
        n_clusters: Number of clusters ``K`` (>= 1, at most the number of samples).
        n_init: Number of seedings; the run with the lowest inertia is kept.
        max_iter: Maximum Lloyd iterations per run.
        tol: Relative tolerance on the squared centre shift (as scikit-learn).
        seed: Seed of the k-means++ draws.
        metric: ``"euclidean"`` or ``"cosine"`` (rows and centres L2-normalised).
        chunk_size: Rows per distance block; ``None`` picks one from ``n_clusters``.
        init: ``"k-means++"`` or an initial ``(n_clusters, d)`` array (one run).
        init_sample_size: Rows sampled for k-means++ seeding (all rows when the data
            has fewer; ``None``: 100,000).
        distributed: Fit on the shards of all processes (see above).

    Examples:
        >>> X = torch.cat([torch.randn(50, 2), torch.randn(50, 2) + 10])
        >>> km = KMeans(n_clusters=2, seed=0).fit(X)
        >>> km.cluster_centers_.shape
        torch.Size([2, 2])
        >>> bool((km.predict(X) == km.labels_).all())
        True
    """

    def __init__(
        self,
        n_clusters: int,
        n_init: int = 3,
        max_iter: int = 100,
        tol: float = 1e-4,
        seed: int = 0,
        metric: str = "euclidean",
        chunk_size: int | None = None,
        init: str | torch.Tensor | np.ndarray = "k-means++",
        init_sample_size: int | None = None,
        distributed: bool = False,
    ) -> None:
        for name, value in (("n_clusters", n_clusters), ("n_init", n_init),
                            ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol!r}")
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be None or >= 1, got {chunk_size!r}")
        if init_sample_size is not None and init_sample_size < n_clusters:
            raise ValueError(f"init_sample_size must be >= n_clusters={n_clusters}, "
                             f"got {init_sample_size}")
        if isinstance(init, str) and init != "k-means++":
            raise ValueError(f"init must be 'k-means++' or an array of centres, got {init!r}")
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.metric = metric
        self.chunk_size = chunk_size
        self.init = init
        self.init_sample_size = init_sample_size
        self.distributed = distributed
        self.cluster_centers_: torch.Tensor | None = None
        self.labels_: torch.Tensor | None = None
        self.inertia_: float | None = None
        self.n_iter_: int | None = None

    # ----------------------------------------------------------------- public API
    def fit(self, X: torch.Tensor | np.ndarray) -> KMeans:
        """Cluster ``X`` of shape ``(n, d)`` (this process's shard when distributed)."""
        X = self._prepare(X)
        self._dist = self.distributed and dist.is_available() and dist.is_initialized()
        n_total, mean, xc_sq, mean_var = self._statistics(X)
        if self.n_clusters > n_total:
            raise ValueError(f"n_clusters={self.n_clusters} must be <= the number of "
                             f"samples, got {n_total} samples")
        inits = self._initial_centres(X, xc_sq, mean, n_total)  # (R, K, d)
        labels, inertia, centres, n_iter = self._lloyd(X, xc_sq, mean, inits,
                                                       self.tol * mean_var)
        best = int(torch.argmin(inertia))
        centres = centres[best].contiguous()
        labels = labels[best]
        if self._dist:  # identical centres on every rank, whatever the arithmetic did
            dist.broadcast(centres, src=0)
            labels = self._assign(X, xc_sq, mean, centres[None])[0][0]
        self.cluster_centers_, self.labels_ = centres, labels
        self.inertia_, self.n_iter_ = self._exact_inertia(X, centres, labels), n_iter[best]
        return self

    def predict(self, X: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Index of the nearest centre for each row of ``X``, a ``(n,)`` long tensor."""
        if self.cluster_centers_ is None:
            raise RuntimeError("KMeans.predict called before fit")
        X = self._prepare(X)
        if X.shape[1] != self.cluster_centers_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, the centres have "
                             f"{self.cluster_centers_.shape[1]}")
        centres = self.cluster_centers_.to(device=X.device, dtype=X.dtype)
        mean = X.mean(0)
        labels = self._assign(X, self._centred_sq(X, mean), mean, centres[None])[0]
        return labels[0]

    def fit_predict(self, X: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``fit(X)`` then return ``labels_``."""
        return self.fit(X).labels_

    # ----------------------------------------------------------------- input checks
    def _prepare(self, X) -> torch.Tensor:
        if isinstance(X, np.ndarray):
            X = torch.from_numpy(X)
        if not isinstance(X, torch.Tensor):
            raise TypeError(f"X must be a torch.Tensor or numpy array, got {type(X).__name__}")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
        if X.dtype != torch.float64:
            X = X.float()
        if self.metric == "cosine":
            X = F.normalize(X, dim=1)
        return X.contiguous()

    def _chunk(self, n: int, columns: int) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return max(1024, min(n, (1 << 22) // max(columns, 1)))

    def _centred_sq(self, X: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """``||x - mean||^2`` per row, in chunks (distances are taken about the mean)."""
        out = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
        step = self._chunk(X.shape[0], X.shape[1])
        for s in range(0, X.shape[0], step):
            out[s : s + step] = (X[s : s + step] - mean).pow(2).sum(1)
        return out

    def _statistics(self, X: torch.Tensor):
        """Global sample count, mean, ``||x - mean||^2`` per row, mean feature variance.

        Working about the mean keeps float32 distances accurate for data far from the
        origin (scikit-learn centres its copy of ``X`` for the same reason).
        """
        n = X.shape[0]
        stats = torch.cat([X.sum(0, dtype=torch.float64),
                           torch.tensor([n], dtype=torch.float64, device=X.device)])
        self._all_reduce(stats)
        n_total = int(stats[-1])
        mean = (stats[:-1] / max(n_total, 1)).to(X.dtype)  # (d,)
        xc_sq = self._centred_sq(X, mean)  # (n,)
        spread = torch.stack([xc_sq.sum(dtype=torch.float64),
                              (~torch.isfinite(xc_sq)).sum().double()])
        self._all_reduce(spread)
        if spread[1] > 0 or not torch.isfinite(spread[0]):
            rows = int((~torch.isfinite(X)).any(dim=1).sum())
            raise ValueError(f"X must be finite, got NaN or inf in {rows} rows of this shard")
        # mean over features of the population variance = sum ||x - mean||^2 / (n d)
        mean_var = float(spread[0]) / max(n_total * X.shape[1], 1)
        return n_total, mean, xc_sq, mean_var

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(t) if self._dist else t

    def _gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return gather_rows(t) if self._dist else t

    # ----------------------------------------------------------------- seeding
    def _initial_centres(self, X, xc_sq, mean, n_total) -> torch.Tensor:
        """``(n_init, K, d)`` initial centres: given ones, or k-means++ seedings."""
        if not isinstance(self.init, str):
            centres = torch.as_tensor(self.init).to(device=X.device, dtype=X.dtype)
            if centres.shape != (self.n_clusters, X.shape[1]):
                raise ValueError(f"init must have shape ({self.n_clusters}, {X.shape[1]}), "
                                 f"got {tuple(centres.shape)}")
            if self.metric == "cosine":
                centres = F.normalize(centres, dim=1)
            return centres[None].clone()
        gens = [torch.Generator().manual_seed(self.seed * 1_000_003 + i)
                for i in range(self.n_init)]
        sample_size = min(n_total, self.init_sample_size or 100_000)
        S, s_sq = X, xc_sq
        if sample_size < n_total or self._dist:
            S = self._sample_rows(X, sample_size, n_total)
            s_sq = self._centred_sq(S, mean)
        centres = greedy_kmeans_plusplus(S, s_sq, mean, self.n_clusters, gens)
        if self._dist:
            dist.broadcast(centres, src=0)
        return centres

    def _sample_rows(self, X, sample_size, n_total):
        """About ``sample_size`` rows drawn uniformly from all shards, gathered."""
        rank = dist.get_rank() if self._dist else 0
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + rank)
        take = min(X.shape[0], math.ceil(sample_size * X.shape[0] / n_total))
        idx = torch.randperm(X.shape[0], generator=gen)[:take].to(X.device)
        return self._gather_rows(X[idx])

    # ----------------------------------------------------------------- Lloyd
    def _assign(self, X, xc_sq, mean, centres, rows=None, sums=None, second=False):
        """Nearest centre of the rows ``rows`` (default all) for each run ``(R, K, d)``.

        Returns labels ``(R, m)``, squared distances to the nearest centre ``(R, m)``
        and, with ``second``, to the second nearest (else None). With ``sums``
        ``(R, K, d)`` (and all rows), adds each row to its cluster's sum in the same pass.
        """
        R, K, d = centres.shape
        m = X.shape[0] if rows is None else rows.numel()
        shifted = (centres - mean).reshape(R * K, d)  # (RK, d)
        const = shifted.pow(2).sum(1) + 2 * (shifted @ mean)  # (RK,)
        labels = torch.empty(R, m, dtype=torch.long, device=X.device)
        best = torch.empty(R, m, dtype=X.dtype, device=X.device)
        nxt = torch.full((R, m), float("inf"), dtype=X.dtype, device=X.device) if second else None
        step = self._chunk(m, R * K)
        for s in range(0, m, step):
            xc = X[s : s + step] if rows is None else X[rows[s : s + step]]  # (b, d)
            dists = torch.addmm(const, xc, shifted.T, alpha=-2.0).view(-1, R, K)
            values, idx = dists.min(dim=2)  # (b, R)
            if second and K > 1:  # two min passes: much faster than topk(2) on CPU
                dists.scatter_(2, idx[..., None], float("inf"))
                nxt[:, s : s + step] = dists.min(dim=2).values.T
            labels[:, s : s + step] = idx.T
            best[:, s : s + step] = values.T
            if sums is not None:
                for r in range(R):
                    sums[r].index_add_(0, idx[:, r], xc)
        sq = xc_sq if rows is None else xc_sq[rows]
        best.add_(sq).clamp_min_(0)
        if nxt is not None:
            nxt.add_(sq).clamp_min_(0)
        return labels, best, nxt

    def _sq_dist_to_assigned(self, X, centres, labels) -> torch.Tensor:
        """``||x - c_label||^2`` per row by direct differences (exact, chunked)."""
        out = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
        step = self._chunk(X.shape[0], X.shape[1])
        for s in range(0, X.shape[0], step):
            out[s : s + step] = (X[s : s + step] - centres[labels[s : s + step]]).pow(2).sum(1)
        return out

    def _exact_inertia(self, X, centres, labels) -> float:
        """Sum of ``||x - c||^2`` by direct differences (the expansion loses digits)."""
        sq = self._sq_dist_to_assigned(X, centres, labels)
        total = float(self._all_reduce(sq.sum(dtype=torch.float64)))
        return total / 2 if self.metric == "cosine" else total

    def _lloyd(self, X, xc_sq, mean, centres, tol):
        """Lloyd iterations of all runs together; each run stops on its own criterion.

        Two exact shortcuts keep late iterations cheap. Hamerly's bounds (SDM 2010):
        an upper bound on each row's distance to its centre and a lower bound on the
        distance to any other; rows whose bounds still separate after the centres
        moved keep their label and skip the distance pass. And cluster sums are
        updated from the rows that changed cluster only (in full on the first
        iteration, every 20th and after a relocation).
        """
        R, K, d = centres.shape
        n = X.shape[0]
        labels = torch.full((R, n), -1, dtype=torch.long, device=X.device)
        upper = torch.zeros(R, n, dtype=X.dtype, device=X.device)  # >= dist to own centre
        lower = torch.zeros(R, n, dtype=X.dtype, device=X.device)  # <= dist to any other
        sums = torch.zeros_like(centres)  # (R, K, d) over all ranks, for `labels`
        counts = torch.zeros(R, K, dtype=X.dtype, device=X.device)
        n_iter = [self.max_iter] * R
        active, full = list(range(R)), True
        for it in range(1, self.max_iter + 1):
            act = torch.tensor(active, device=X.device)
            A, old, prev = len(active), centres[act], labels[act]  # old: (A, K, d)
            up, low = upper[act], lower[act]
            rows = None if it == 1 else torch.nonzero(
                (up >= low * (1 - 1e-4)).any(0)).flatten()  # bounds may no longer hold
            part = torch.zeros_like(old)
            lab, best, second = self._assign(X, xc_sq, mean, old, rows,
                                             part if it == 1 else None, second=True)
            new_labels = lab if rows is None else prev.index_copy(1, rows, lab)
            if rows is None:
                up, low = best.sqrt(), second.sqrt()
            else:
                up[:, rows], low[:, rows] = best.sqrt(), second.sqrt()
            moved = new_labels != prev  # (A, n)
            if full and it > 1:  # (the first pass added the rows already)
                for a in range(A):
                    part[a].index_add_(0, new_labels[a], X)
            if full:
                flat = (new_labels + torch.arange(A, device=X.device)[:, None] * K).flatten()
                part_counts = torch.bincount(flat, minlength=A * K)
            else:  # add the rows that arrived, subtract the rows that left
                run, row = moved.nonzero(as_tuple=True)
                to, frm = new_labels[run, row] + run * K, prev[run, row] + run * K
                step = self._chunk(len(row), d)
                for b in range(0, len(row), step):  # chunks bound the copy of moved rows
                    xs, sl = X[row[b : b + step]], slice(b, b + step)
                    part.view(A * K, d).index_add_(0, to[sl], xs).index_add_(
                        0, frm[sl], xs, alpha=-1)
                part_counts = (torch.bincount(to, minlength=A * K)
                               - torch.bincount(frm, minlength=A * K))
            packed = torch.cat([part.flatten(), part_counts.to(X.dtype),
                                moved.sum(1).to(X.dtype)])
            self._all_reduce(packed)
            s = packed[: A * K * d].view(A, K, d)
            c = packed[A * K * d : A * K * (d + 1)].view(A, K)
            changed = packed[A * K * (d + 1) :]
            if not full:
                s, c = sums[act] + s, counts[act] + c
            full = it % 20 == 0
            for a in range(A):
                if (c[a] == 0).any():  # labels no longer match the sums: recount next time
                    dist_a = self._sq_dist_to_assigned(X, old[a], new_labels[a])
                    full |= self._relocate_empty(X, new_labels[a], dist_a, s[a], c[a])
            sums[act], counts[act] = s, c
            new = torch.where(c[..., None] > 0, s / c.clamp_min(1)[..., None], old)
            if self.metric == "cosine":
                new = F.normalize(new, dim=2)
            delta = (new - old).pow(2).sum(2)  # (A, K) squared centre moves
            moves = delta.sqrt()
            upper[act] = up + moves.gather(1, new_labels)
            lower[act] = low - moves.max(1, keepdim=True).values
            centres[act], labels[act] = new, new_labels
            # stop: 1 strict (no label changed), 2 centre shift within tol, 0 go on
            stop = torch.where(changed == 0, 1, torch.where(delta.sum(1) <= tol, 2, 0))
            if it == self.max_iter:
                stop = torch.where(stop == 0, 2, stop)
            if self._dist:  # one decision for all ranks, so collectives stay matched
                dist.broadcast(stop, src=0)
            for a, r in enumerate(active):
                if stop[a] > 0:
                    n_iter[r] = it
            active = [r for a, r in enumerate(active) if stop[a] == 0]
            if not active:
                break
        # labels that match the final centres, and each run's inertia, in one pass
        labels, best, _ = self._assign(X, xc_sq, mean, centres)
        return labels, self._all_reduce(best.sum(1, dtype=torch.float64)).cpu(), centres, n_iter

    def _relocate_empty(self, X, labels, min_d, sums, counts) -> bool:
        """Move empty clusters to the points farthest from their centres (scikit-learn).

        Returns whether any moved (the same answer on every rank).
        """
        empty = torch.nonzero(counts == 0).flatten()
        far_d, far_i = torch.topk(min_d, min(len(empty), X.shape[0]))
        far_d = self._gather_rows(far_d)
        far_x = self._gather_rows(X[far_i])
        far_old = self._gather_rows(labels[far_i])
        if len(far_d) == 0 or float(far_d.max()) == 0:
            return False  # more clusters than distinct points: nothing to gain
        _, order = torch.topk(far_d, min(len(empty), len(far_d)))
        for new, j in zip(empty.tolist(), order.tolist(), strict=False):
            old = int(far_old[j])
            sums[old] -= far_x[j]
            counts[old] -= 1
            sums[new] = far_x[j]
            counts[new] = 1
        return True

