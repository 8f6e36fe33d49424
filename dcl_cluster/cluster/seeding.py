"""k-means++ seeding in torch, several seedings at once (one pass over the data per step).

Arthur & Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007, in
the greedy form scikit-learn uses (``2 + log(k)`` candidates per centre, the one that
lowers the potential most is kept).
"""

from __future__ import annotations

import math

import torch


def greedy_kmeans_plusplus(X: torch.Tensor, xc_sq: torch.Tensor, mean: torch.Tensor, k: int,
                     gens: list[torch.Generator]) -> torch.Tensor:
    """Greedy k-means++ (as scikit-learn's ``_kmeans_plusplus``), one seeding per generator.

    The seedings run together, so each step reads ``X`` once for all of them.
    ``xc_sq`` holds ``||x - mean||^2``. Returns ``(len(gens), k, d)`` centres.
    """
    n, d = X.shape
    R = len(gens)
    trials = 2 + int(math.log(k))
    rows = torch.arange(R, device=X.device)

    def sq_dists(ids):  # (n, len(ids)) squared distances to the rows ids
        shifted = X[ids] - mean
        const = xc_sq[:, None] + (xc_sq[ids] + 2 * (shifted @ mean))[None, :]
        return torch.addmm(const, X, shifted.T, alpha=-2.0).clamp_min_(0)

    first = torch.tensor([int(torch.randint(n, (1,), generator=g)) for g in gens],
                         device=X.device)
    centres = X.new_empty(R, k, d)
    centres[:, 0] = X[first]
    closest = sq_dists(first).T.contiguous()  # (R, n)
    pot = closest.sum(1, dtype=torch.float64)  # (R,)
    for c in range(1, k):
        cum = torch.cumsum(closest, 1, dtype=torch.float64)  # (R, n)
        draws = torch.stack([torch.rand(trials, generator=g, dtype=torch.float64)
                             for g in gens]).to(X.device) * pot[:, None]  # (R, trials)
        ids = torch.searchsorted(cum, draws).clamp_(max=n - 1)  # (R, trials)
        d_c = sq_dists(ids.flatten()).view(n, R, trials)
        d_c = torch.minimum(d_c, closest.T[:, :, None])  # (n, R, trials)
        pots = d_c.sum(0, dtype=torch.float64)  # (R, trials)
        best = torch.argmin(pots, dim=1)  # (R,)
        pot = pots[rows, best]
        closest = d_c[:, rows, best].T.contiguous()  # (R, n)
        centres[:, c] = X[ids[rows, best]]
    return centres
