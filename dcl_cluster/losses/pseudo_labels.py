"""Pseudo-labels that let cluster sizes follow a long tail: P²OT's partial optimal transport.

Progressive partial optimal transport (P²OT: Zhang, Ren and He, ICLR 2024, arXiv
2401.09266), METHOD.md 2.5: a transport plan from the samples to K clusters plus a
zero-cost virtual cluster that takes the ``1 - rho`` of mass not yet trusted, with a KL
relaxation of the cluster sizes so they may be imbalanced. Written from the paper's
formulas; the scaling iterations run in float64, in linear space with each row of the kernel
rescaled, and in log space where even that under- or overflows (so sharp heads cannot); every
16 iterations the linear ones jump to an extrapolation of their last iterates, which reaches the
same fixed point in a fraction of the iterations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["partial_ot_targets", "p2ot_rho", "soft_cross_entropy", "p2ot_loss"]


def _as_float(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def _check_settings(rho, epsilon, lam, max_iters, tol) -> None:
    if not _is_number(rho) or not 0 < rho <= 1:
        raise ValueError(f"rho must be a number in (0, 1], got {rho!r}")
    if not _is_number(epsilon) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if not _is_number(lam) or lam <= 0:
        raise ValueError(f"lam must be a number > 0 (math.inf: balanced sizes), got {lam!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be an integer >= 1, got {max_iters!r}")
    if not _is_number(tol) or tol < 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")


def _log_diff_norm(log_b: Tensor, log_b_prev: Tensor) -> Tensor:
    """``log ||b - b_prev||_2`` from the logs, finite where ``b`` itself would overflow."""
    hi = torch.maximum(log_b, log_b_prev)
    gap = (log_b - log_b_prev).abs()
    log_abs = hi + torch.log(-torch.expm1(-gap))  # log|e^x - e^y| = max + log(1 - e^-|x-y|)
    log_abs = torch.where(log_b == log_b_prev, torch.full_like(hi, -math.inf), log_abs)
    return 0.5 * torch.logsumexp(2 * log_abs, dim=0)


#: scaling iterations between two host-side convergence checks (the loop queues up on a GPU)
CHECK_EVERY = 16
#: iterates of each check period that the extrapolation at its end combines (0: none)
EXTRAPOLATE_LAST = 6
#: extrapolations that left the change larger than before them, after which a solve stops jumping
FAILED_JUMPS_ALLOWED = 3
#: on a CPU, kernels of more than twice this many rows run both mat-vecs of an iteration block by
#: block of this many rows (the block's second pass reads it from the cache: one pass over memory)
FUSED_BLOCK_ROWS = 1024


def _scaling_step(g: Tensor, blocks: list[Tensor] | None, b: Tensor) -> Tensor:
    """``G^T (1 / (G b))`` ``(cols,)``: two mat-vecs, or per block of rows both at once."""
    if blocks is None:
        return torch.reciprocal(torch.mv(g, b)) @ g  # one copy of G: half the cache
    out = torch.zeros_like(b)
    for block in blocks:  # (rows, cols) each
        out.addmv_(block.T, torch.reciprocal(torch.mv(block, b)))
    return out


def _extrapolate(history: Tensor) -> Tensor:
    """Reduced rank extrapolation (Sidi et al. 1977) of fixed-point iterates ``x_0..x_m``, rows of
    ``history`` ``(m+1, cols)``: with the steps ``u_i = x_{i+1} - x_i``, the weights ``gamma``
    (summing to 1) that minimise ``||sum_i gamma_i u_i||`` give ``sum_i gamma_i x_{i+1}``, the
    fixed point where the iterates' error is a combination of ``m`` geometric modes. A fixed
    point of the iterations stays one (its steps are 0). Runs on the device, no host sync."""
    steps = torch.diff(history, dim=0)  # (m, cols)
    gram = steps @ steps.T  # (m, m)
    gram = gram + 1e-12 * gram.diagonal().sum() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    gamma, _ = torch.linalg.solve_ex(gram, torch.ones(len(gram), dtype=gram.dtype, device=gram.device))
    return (gamma / gamma.sum()) @ history[1:]  # (cols,)


def _rescaled_kernel(x: Tensor, epsilon: float, cols: int) -> Tensor:
    """``G = exp(-C / eps)`` for logits ``x`` ``(N, K)``, each row divided by its largest entry
    (absorbed into ``a``, which leaves ``b`` exactly as without it), so no row underflows to zero:
    ``exp((x - max x) / eps)``; with the virtual column (``cols = K + 1``, cost 0, the largest
    entry of every row), ``[P^(1/eps) | 1]``. Element-wise passes and row maxima only: a
    ``log_softmax`` over a short last dimension costs more than the whole solve on a CPU."""
    n, k = x.shape
    shifted = x - x.amax(dim=1, keepdim=True)  # (N, K), each row's maximum 0
    g = x.new_empty(n, cols)
    torch.exp(shifted / epsilon, out=g[:, :k])
    if cols > k:
        log_sum = torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))  # (N, 1): log sum_j e^(x_j - max x)
        g[:, :k] *= torch.exp(-log_sum / epsilon)  # P^(1/eps) = e^((x - max x - log_sum) / eps)
        g[:, k] = 1.0
    return g


def _scale_linear(g: Tensor, log_c: Tensor, log_b: Tensor, k: int, n: int, power: float, max_iters: int,
                  tol: float) -> Tensor | None:
    """The scaling iterations in linear space, on the kernel of :func:`_rescaled_kernel`: per
    iteration two mat-vecs over ``G`` (:func:`_scaling_step`: on a CPU, block by block for a
    large ``G``, so one pass over memory) and three element-wise passes over ``K + 1`` numbers.
    ``a`` is never formed (``b = N c / (G^T (1 / (G b)))``). The reference's
    stopping rule (``||b - b_prev||_2 < tol``) is read on the host every :data:`CHECK_EVERY`
    iterations, so a solve runs up to ``CHECK_EVERY - 1`` iterations past the reference's stop
    (closer to the fixed point).

    At each check that does not stop, ``log b`` jumps to the extrapolation (:func:`_extrapolate`)
    of the period's last :data:`EXTRAPOLATE_LAST` iterates: where the plain iterations contract
    by 0.99 per step (a small ``rho``), this reaches the fixed point in about a tenth of the
    iterations. The stopping rule is read on plain iterations only, so the fixed point and the
    test are the reference's. A jump after which the change at the next check is larger than at
    the check before it counts as failed; after :data:`FAILED_JUMPS_ALLOWED` of them the solve
    goes on with plain iterations only (they converge from any positive ``b``). Returns
    ``log b``, or ``None`` when a column under- or overflowed (then the log-space iterations
    take over)."""
    nc, b = n * torch.exp(log_c), torch.exp(log_b)
    powers = torch.ones_like(b)
    powers[:k] = power
    depth = min(EXTRAPOLATE_LAST, CHECK_EVERY) if b.dtype == torch.float64 else 0  # not in float32 (MPS)
    fused = g.device.type == "cpu" and len(g) > 2 * FUSED_BLOCK_ROWS
    blocks = list(g.split(FUSED_BLOCK_ROWS)) if fused else None
    recent: list[Tensor] = []  # b of the period's last iterates (fresh tensors: kept, not copied)
    last_change, jumped, failed = math.inf, False, 0
    for it in range(max_iters):
        pos = it % CHECK_EVERY
        check = pos == CHECK_EVERY - 1 or it == max_iters - 1
        prev = b
        b = torch.pow(nc / _scaling_step(g, blocks, b), powers)
        if depth > 1 and pos >= CHECK_EVERY - depth:
            recent.append(b)
        if check:
            change, bad = torch.stack([torch.linalg.vector_norm(b - prev),
                                       (~(torch.isfinite(b) & (b > 0)).all()).to(b.dtype)]).tolist()
            if bad:
                return None
            if change < tol:
                break
            failed += jumped and change > last_change
            if failed >= FAILED_JUMPS_ALLOWED:
                depth = 0  # the jumps do not help this solve: plain iterations from here on
            last_change, jumped = change, False
            if depth > 1 and pos == CHECK_EVERY - 1:
                guess = torch.exp(_extrapolate(torch.log(torch.stack(recent))))  # (cols,)
                b = torch.where((torch.isfinite(guess) & (guess > 0)).all(), guess, b)
                jumped = True
            recent = []
    return torch.log(b)


def _scale_log(log_g: Tensor, log_c: Tensor, log_b: Tensor, k: int, log_row: float, power: float, max_iters: int,
               tol: float) -> Tensor:
    """The same iterations in log space (a host check per iteration): for plans whose kernel
    under- or overflows float64 even with rows rescaled."""
    log_tol = math.log(tol) if tol > 0 else -math.inf
    for _ in range(max_iters):
        log_a = log_row - torch.logsumexp(log_g + log_b, dim=1)  # (N,)
        log_b_prev = log_b
        log_b = log_c - torch.logsumexp(log_g + log_a[:, None], dim=0)  # (cols,)
        log_b[:k] = log_b[:k] * power
        if float(_log_diff_norm(log_b, log_b_prev)) < log_tol:
            break
    return log_b


def partial_ot_targets(
    logits: Tensor,
    rho: float,
    epsilon: float = 0.1,
    lam: float = 1.0,
    max_iters: int = 1000,
    tol: float = 1e-6,
    init_log_b: Tensor | None = None,
    return_log_b: bool = False,
    prior: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """P²OT pseudo-labels: trust only a share ``rho`` of the samples and let cluster sizes be imbalanced.

    METHOD.md 2.5. With ``P = softmax(logits)`` and the cost ``C = [-log P | 0]``
    (``N x (K+1)``; the last column is the virtual cluster), the plan ``Q`` minimises
    ``<Q, C> - eps H(Q) + lam KL(Q^T 1 [1..K] || rho/K)`` with rows summing to ``1/N``
    and the virtual column to ``1 - rho``. Scaling iterations on ``G = exp(-C / eps)``,
    in float64 (linear space, rows rescaled; log space where a column under- or overflows):
    ``a = (1/N) / (G b)``, ``b = c / (G^T a)`` with
    ``c = [rho/K, ..., rho/K, 1 - rho]``, then ``b_k <- b_k^(lam / (lam + eps))`` for
    the K real clusters; from ``b = 1/(K+1)`` until ``||b - b_prev||_2 < tol`` (in linear
    scale) or ``max_iters``, with a jump to the extrapolated fixed point every 16 iterations
    (the fixed point and the stopping rule stay the loop's; at the same ``tol`` the plan is as
    near the fixed point as the rule resolves, far nearer than the loop's where that contracts
    slowly). A last ``a`` update makes every row sum exactly ``1/N``, so ``T = N Q[:, :K]``
    has row sums ``<= 1`` (a row's sum is how much that sample is trusted); the total
    ``T.sum()`` is ``rho * N`` at convergence. With ``rho = 1`` the virtual column carries no
    mass and is left out. ``lam = math.inf`` with ``rho = 1`` is SeLa's balanced Sinkhorn.

    Args:
        logits: Cluster-head logits, shape ``(N, K)``, ``K >= 2`` (a batch, possibly with
            a memory bank of earlier detached logits stacked on). No gradient flows.
        rho: Share of the mass put on the real clusters, in ``(0, 1]`` (see :func:`p2ot_rho`).
        epsilon: Entropic regularisation ``eps > 0``.
        lam: Weight ``lam > 0`` of the KL relaxation of the cluster sizes (``math.inf``:
            sizes forced to ``rho / K``).
        max_iters: Most scaling iterations, ``>= 1``.
        tol: Stop when the L2 change of ``b`` falls below this (``>= 0``).
        init_log_b: ``log b`` to start from, shape ``(K+1,)`` (e.g. the previous call's, a
            warm start); its last entry may be ``-inf``. ``None``: ``b = 1/(K+1)``.
        return_log_b: Also return the final ``log b`` (float64, shape ``(K+1,)``; last
            entry ``-inf`` when ``rho = 1``).
        prior: Cluster-size shares ``pi`` ``(K,)`` (positive, normalised here) that the KL
            relaxation pulls the real clusters' sizes toward: ``rho * pi`` instead of
            ``rho / K``. ``None``: uniform, as in P²OT.

    Returns:
        ``T`` of shape ``(N, K)``, detached, in ``logits``' dtype (float32 for half
        precision); with ``return_log_b``, the pair ``(T, log_b)``.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[4.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.5, 0.0]])
        >>> t = partial_ot_targets(logits, rho=0.5)
        >>> t.shape, round(float(t.sum()), 4)  # half of the 4 samples' mass is trusted
        (torch.Size([4, 2]), 2.0)
        >>> bool((t.sum(dim=1) <= 1 + 1e-6).all())
        True
        >>> t, log_b = partial_ot_targets(logits, rho=1.0, return_log_b=True)
        >>> round(float(t.sum()), 4), tuple(log_b.shape)
        (4.0, (3,))
    """
    _check_settings(rho, epsilon, lam, max_iters, tol)
    if logits.ndim != 2 or logits.shape[1] < 2 or logits.shape[0] < 1:
        raise ValueError(f"logits must have shape (N, K) with N >= 1 and K >= 2 clusters, got {tuple(logits.shape)}")
    n, k = logits.shape
    if prior is not None and (prior.shape != (k,) or not bool(torch.isfinite(prior).all() & (prior > 0).all())):
        raise ValueError(f"prior must have shape ({k},) with finite entries > 0, got shape {tuple(prior.shape)}"
                         + (f" and values {prior.tolist()}" if prior.numel() <= 20 else ""))
    if init_log_b is not None and (
        init_log_b.shape != (k + 1,) or bool(torch.isnan(init_log_b).any() | (init_log_b[:k] == -math.inf).any()
                                             | (init_log_b == math.inf).any())
    ):
        raise ValueError(
            f"init_log_b must have shape ({k + 1},) with finite entries (the last may be -inf), "
            f"got shape {tuple(init_log_b.shape)}"
        )
    out_dtype = _as_float(logits).dtype
    work = torch.float32 if logits.device.type == "mps" else torch.float64  # MPS has no float64
    power = 1.0 if math.isinf(lam) else lam / (lam + epsilon)
    with torch.no_grad(), torch.autocast(logits.device.type, enabled=False):
        x = logits.detach().to(work)
        cols = k if rho == 1 else k + 1  # with rho = 1 the virtual column has no mass
        log_c = torch.full((cols,), math.log(rho / k), dtype=work, device=logits.device)
        if prior is not None:
            pi = prior.detach().to(device=logits.device, dtype=work)
            log_c[:k] = math.log(rho) + torch.log(pi / pi.sum())
        if cols == k + 1:
            log_c[k] = math.log1p(-rho)
        if init_log_b is None:
            log_b = torch.full((cols,), -math.log(k + 1), dtype=work, device=logits.device)
        else:
            log_b = init_log_b.detach().to(device=logits.device, dtype=work)[:cols].clone()
        g = _rescaled_kernel(x, epsilon, cols)  # (N, cols)
        scaled = _scale_linear(g, log_c, log_b, k, n, power, max_iters, tol)
        if scaled is not None:
            log_b, b = scaled, torch.exp(scaled)
            targets = g[:, :k] * b[:k] / (g @ b)[:, None]  # N a G b with a = (1/N) / (G b): (N, K)
        else:
            log_g = torch.log_softmax(x, dim=1) / epsilon  # (N, K): -C / eps
            if cols == k + 1:
                log_g = torch.cat([log_g, log_g.new_zeros(n, 1)], dim=1)  # (N, K+1)
            log_row = -math.log(n)
            log_b = _scale_log(log_g, log_c, log_b, k, log_row, power, max_iters, tol)
            log_a = log_row - torch.logsumexp(log_g + log_b, dim=1)
            targets = n * torch.exp(log_a[:, None] + log_g[:, :k] + log_b[:k])  # (N, K)
        targets = targets.to(out_dtype)
        if not return_log_b:
            return targets
        if cols == k:
            log_b = torch.cat([log_b, log_b.new_full((1,), -math.inf)])
        return targets, log_b.to(torch.float64)


def p2ot_rho(progress: float, rho_0: float = 0.1) -> float:
    """P²OT's curriculum: trust few samples early and all of them at the end of training.

    ``rho = rho_0 + (1 - rho_0) exp(-5 (1 - progress)^2)`` (METHOD.md 2.5), with
    ``progress = t / T_total`` over the clustering steps, clipped to ``[0, 1]``.

    Args:
        progress: Fraction of the clustering steps done.
        rho_0: Starting share, in ``(0, 1]``.

    Returns:
        ``rho`` in ``(0, 1]``, reaching 1 at ``progress = 1``.

    Examples:
        >>> round(p2ot_rho(0.0), 4), round(p2ot_rho(0.5), 4), p2ot_rho(1.0)
        (0.1061, 0.3579, 1.0)
    """
    if not _is_number(rho_0) or not 0 < rho_0 <= 1:
        raise ValueError(f"rho_0 must be a number in (0, 1], got {rho_0!r}")
    if not _is_number(progress):
        raise ValueError(f"progress must be a number (clipped to [0, 1]), got {progress!r}")
    progress = min(max(float(progress), 0.0), 1.0)
    return rho_0 + (1 - rho_0) * math.exp(-5 * (1 - progress) ** 2)


def _check_pair(logits: Tensor, targets: Tensor, what: str) -> None:
    if logits.ndim != 2 or logits.shape[1] < 2 or logits.shape != targets.shape:
        raise ValueError(
            f"{what} must have the same shape (B, K) with K >= 2, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against soft (and partial) pseudo-labels, so untrusted rows weigh less.

    ``CE(l, T) = -(1/B) sum_i sum_k T_ik log softmax(l_i)_k`` (METHOD.md 2.5), computed
    in float32 for half-precision inputs. ``targets`` rows need not sum to 1; gradients
    flow into both arguments (detach the targets yourself, as :func:`p2ot_loss` does).

    Args:
        logits: Logits, shape ``(B, K)``.
        targets: Soft targets, shape ``(B, K)``, non-negative.

    Returns:
        The scalar loss.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
        >>> round(float(soft_cross_entropy(logits, torch.tensor([[1.0, 0.0], [0.0, 0.5]]))), 4)
        0.8783
    """
    _check_pair(logits, targets, "logits and targets")
    log_p = torch.log_softmax(_as_float(logits), dim=1)
    return -(_as_float(targets).to(log_p.dtype) * log_p).sum(dim=1).mean()


def p2ot_loss(logits_a: Tensor, logits_b: Tensor, targets_a: Tensor, targets_b: Tensor) -> Tensor:
    """P²OT's cross-view loss: each view learns the other view's pseudo-labels.

    ``L_ot = CE(l^a, T^b) + CE(l^b, T^a)`` (METHOD.md 2.5) with :func:`soft_cross_entropy`;
    the targets (from :func:`partial_ot_targets`) are detached here.

    Args:
        logits_a: Logits of the first views, shape ``(B, K)``.
        logits_b: Logits of the second views, shape ``(B, K)``.
        targets_a: Pseudo-labels of the first views, shape ``(B, K)``.
        targets_b: Pseudo-labels of the second views, shape ``(B, K)``.

    Returns:
        The scalar loss.

    Examples:
        >>> import torch
        >>> la, lb = torch.randn(8, 3), torch.randn(8, 3)
        >>> ta, tb = partial_ot_targets(la, rho=0.5), partial_ot_targets(lb, rho=0.5)
        >>> bool(p2ot_loss(la, lb, ta, tb) > 0)
        True
    """
    _check_pair(logits_a, logits_b, "logits_a and logits_b")
    _check_pair(logits_a, targets_a, "logits_a and targets_a")
    _check_pair(logits_b, targets_b, "logits_b and targets_b")
    return soft_cross_entropy(logits_a, targets_b.detach()) + soft_cross_entropy(logits_b, targets_a.detach())
