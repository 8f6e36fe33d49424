"""Instance-level contrastive objectives of METHOD.md section 1, as pure functions.

InfoNCE / NT-Xent (SimCLR), the debiased contrastive loss (Chuang et al., NeurIPS 2020)
with a constant or per-anchor ``tau_plus``, and the hard-negative loss (Robinson et al.,
ICLR 2021). Everything is computed in log space from one ``(2B, 2B)`` logit matrix, so
float32 and bf16 autocast stay finite at temperatures down to 0.05.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dcl_cluster.losses.checks import (  # noqa: F401  (re-exported for older imports)
    check_beta,
    check_tau_plus,
    check_temperature,
    tensor_value_checks_enabled,
)

__all__ = ["info_nce_loss", "debiased_contrastive_loss", "hard_negative_loss"]


def _check_views(z_a: Tensor, z_b: Tensor) -> None:
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            "z_a and z_b must both have shape (B, d), got "
            f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 2:
        raise ValueError(f"batch size B must be >= 2 (N = 2B - 2 negatives), got B={z_a.shape[0]}")


def _normalized_views(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """``normalize(cat([z_a, z_b]))`` of shape ``(2B, d)``, in float32 for half inputs."""
    _check_views(z_a, z_b)
    check_temperature(temperature)
    z = torch.cat([z_a, z_b])  # (2B, d)
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()  # normalise and score the positives in float32
    return F.normalize(z, dim=1)


def _masked_logits(z: Tensor, temperature: float) -> Tensor:
    """``z z^T / t`` as ``(2B, 2B)`` float logits with ``-inf`` at each anchor itself and at
    its positive (the other view), so a row's logsumexp is ``log sum_{k not in {i, j}} s_ik``."""
    n = z.shape[0]
    logits = torch.mm(z, z.t())  # (2B, 2B); bf16 under autocast
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits.mul_(1.0 / temperature)
    rows = torch.arange(n, device=z.device)
    positive = (rows + n // 2) % n
    logits.view(-1).index_fill_(0, torch.cat([rows * n + rows, rows * n + positive]), float("-inf"))
    return logits


class _NegativeLogSumExp(torch.autograd.Function):
    """``log sum_{k not in {i, j(i)}} exp(z_i . z_k / t)`` for each row of normalised ``z``.

    The backward is written out so that the one ``(2B, 2B)`` logit buffer saved by the
    forward becomes the softmax in place: besides it, only the ``(2B, d)`` gradient is
    allocated (this is the hot path of every contrastive loss).
    """

    @staticmethod
    def forward(ctx, z: Tensor, temperature: float) -> Tensor:  # type: ignore[override]
        logits = _masked_logits(z, temperature)
        lse = torch.logsumexp(logits, dim=1)  # (2B,)
        ctx.save_for_backward(z, lse)
        ctx.temperature = temperature
        ctx.logits = logits  # not a saved tensor: the backward consumes it in place
        return lse

    @staticmethod
    def backward(ctx, grad_lse: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        z, lse = ctx.saved_tensors
        logits, ctx.logits = ctx.logits, None
        if logits is None:  # a second backward (retain_graph=True): rebuild the logits
            logits = _masked_logits(z, ctx.temperature)
        # d lse_i / d logit_ik = softmax_ik; -inf entries give exactly 0
        weights = logits.sub_(lse.unsqueeze(1)).exp_().mul_(grad_lse.to(logits.dtype).unsqueeze(1))
        zf = z.to(weights.dtype)
        grad = (torch.mm(weights, zf) + torch.mm(weights.t(), zf)).mul_(1.0 / ctx.temperature)
        return grad.to(z.dtype), None


def _log_pos_and_neg(z_a: Tensor, z_b: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``(log_pos, log_neg)``, each ``(2B,)``: ``z_i . z_j / t`` and the log of the sum of
    ``s_ik`` over the ``N = 2B - 2`` negatives of anchor ``i``."""
    z = _normalized_views(z_a, z_b, temperature)
    b = z_a.shape[0]
    log_pos = (z[:b] * z[b:]).sum(dim=1) / temperature  # (B,)
    return torch.cat([log_pos, log_pos]), _NegativeLogSumExp.apply(z, temperature)


def _tau_plus_per_anchor(tau_plus: float | Tensor, n_anchors: int, like: Tensor) -> float | Tensor:
    if isinstance(tau_plus, Tensor):
        if tau_plus.shape != (n_anchors,):
            raise ValueError(
                f"a tensor tau_plus must have shape (2B,) = ({n_anchors},), got {tuple(tau_plus.shape)}"
            )
        if tensor_value_checks_enabled():  # a host sync: the training module turns it off
            bad = (tau_plus < 0) | (tau_plus >= 1) | ~torch.isfinite(tau_plus)
            if bool(bad.any()):
                value = tau_plus[bad][0].item()
                raise ValueError(f"tau_plus must be in [0, 1), got {value} in the per-anchor tensor")
        return tau_plus.detach().to(like.dtype)
    check_tau_plus(tau_plus)
    return float(tau_plus)


def _debiased_from_log_terms(
    log_pos: Tensor, log_neg: Tensor, n_neg: int, temperature: float, tau_plus: float | Tensor
) -> Tensor:
    """``mean_i -log(s_ij / (s_ij + Ng_i))`` with the debiased, clamped ``Ng_i`` (METHOD.md 1.2).

    ``Ng_i = max((neg_i - tau+ N s_ij) / (1 - tau+), N exp(-1/t))`` is evaluated as
    ``log neg_i + log(1 - r_i) - log(1 - tau+)`` with ``r_i = tau+ N s_ij / neg_i``; where
    ``r_i >= 1`` the bracket is not positive and the clamp takes over.
    """
    log_floor = math.log(n_neg) - 1.0 / temperature
    if isinstance(tau_plus, Tensor):
        log_tau_n = torch.log(tau_plus * n_neg)  # -inf where tau+ = 0
        log_one_minus_tau = torch.log1p(-tau_plus)
    else:
        log_tau_n = math.log(tau_plus * n_neg) if tau_plus > 0 else float("-inf")
        log_one_minus_tau = math.log1p(-tau_plus)
    log_r = log_tau_n + (log_pos - log_neg)  # (2B,)
    valid = log_r < 0
    one_minus_r = -torch.expm1(torch.where(valid, log_r, torch.full_like(log_r, -1.0)))
    # clamp_min keeps log and its gradient finite where 1 - r underflows; the clamp wins there.
    log_unclamped = log_neg + torch.log(one_minus_r.clamp_min(torch.finfo(log_r.dtype).tiny))
    log_unclamped = log_unclamped - log_one_minus_tau
    floor = torch.full_like(log_neg, log_floor)
    log_ng = torch.where(valid, torch.maximum(log_unclamped, floor), floor)
    return (torch.logaddexp(log_pos, log_ng) - log_pos).mean()


def info_nce_loss(z_a: Tensor, z_b: Tensor, temperature: float = 0.5) -> Tensor:
    """InfoNCE / NT-Xent loss of SimCLR (Chen et al., ICML 2020), METHOD.md 1.1.

    ``L_i = -log(s_ij / (s_ij + sum_{k not in {i, j}} s_ik))`` with
    ``s_ik = exp(z_i . z_k / t)`` on L2-normalised projections, averaged over all 2B anchors.

    Args:
        z_a: Projections of the first views, shape ``(B, d)``; need not be normalised.
        z_b: Projections of the second views, shape ``(B, d)``.
        temperature: ``t > 0``.

    Returns:
        The scalar loss.

    Examples:
        >>> import torch
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> info_nce_loss(z_a, z_b, temperature=0.5).shape
        torch.Size([])
    """
    log_pos, log_neg = _log_pos_and_neg(z_a, z_b, temperature)
    return (torch.logaddexp(log_pos, log_neg) - log_pos).mean()


def debiased_contrastive_loss(
    z_a: Tensor, z_b: Tensor, temperature: float = 0.5, tau_plus: float | Tensor = 0.1
) -> Tensor:
    """Debiased contrastive loss (Chuang et al., NeurIPS 2020), METHOD.md 1.2 and 1.3.

    The negative term is corrected for the chance ``tau+`` that a negative shares the
    anchor's class, and clamped at its theoretical minimum ``N exp(-1/t)``, ``N = 2B - 2``:
    ``Ng_i = max((sum_{k not in {i,j}} s_ik - tau+ N s_ij) / (1 - tau+), N exp(-1/t))``,
    ``L_i = -log(s_ij / (s_ij + Ng_i))``, averaged over all 2B anchors.

    Args:
        z_a: Projections of the first views, shape ``(B, d)``.
        z_b: Projections of the second views, shape ``(B, d)``.
        temperature: ``t > 0``.
        tau_plus: Class prior in ``[0, 1)``: a float, or a tensor of shape ``(2B,)`` with
            one value per anchor ordered ``[a_0..a_{B-1}, b_0..b_{B-1}]`` (the long-tail
            variant of METHOD.md 1.3). A tensor receives no gradient.

    Returns:
        The scalar loss. ``tau_plus=0`` gives :func:`info_nce_loss` wherever the clamp is
        inactive.

    Examples:
        >>> import torch
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> loss = debiased_contrastive_loss(z_a, z_b, temperature=0.5, tau_plus=0.1)
        >>> bool(torch.isfinite(loss))
        True
    """
    log_pos, log_neg = _log_pos_and_neg(z_a, z_b, temperature)
    tau = _tau_plus_per_anchor(tau_plus, log_pos.shape[0], log_pos)
    return _debiased_from_log_terms(log_pos, log_neg, log_pos.shape[0] - 2, temperature, tau)


def hard_negative_loss(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float = 0.5,
    tau_plus: float | Tensor = 0.1,
    beta: float = 1.0,
) -> Tensor:
    """Debiased loss with hard-negative importance weights (Robinson et al., ICLR 2021).

    METHOD.md 1.4: inside the negative sum of :func:`debiased_contrastive_loss` each
    negative is weighted by ``w_ik = s_ik^beta / mean_k(s_ik^beta)``, so the sum becomes
    ``N * sum_k s_ik^(1+beta) / sum_k s_ik^beta``. The weights carry gradients, as in the
    authors' code. ``beta = 0`` gives the debiased loss.

    Args:
        z_a: Projections of the first views, shape ``(B, d)``.
        z_b: Projections of the second views, shape ``(B, d)``.
        temperature: ``t > 0``.
        tau_plus: Class prior in ``[0, 1)``, float or per-anchor ``(2B,)`` tensor.
        beta: Concentration on hard negatives, ``beta >= 0``.

    Returns:
        The scalar loss.

    Examples:
        >>> import torch
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> hard_negative_loss(z_a, z_b, beta=1.0).ndim
        0
    """
    check_beta(beta)
    if beta == 0:
        return debiased_contrastive_loss(z_a, z_b, temperature, tau_plus)
    z = _normalized_views(z_a, z_b, temperature)
    b = z_a.shape[0]
    log_pos = (z[:b] * z[b:]).sum(dim=1) / temperature
    log_pos = torch.cat([log_pos, log_pos])
    tau = _tau_plus_per_anchor(tau_plus, 2 * b, log_pos)
    logits = _masked_logits(z, temperature)  # autograd through it: the weights carry gradients
    n_neg = 2 * b - 2
    # log(N * sum s^(1+beta) / sum s^beta); -inf entries stay -inf for beta > 0
    log_neg = torch.logsumexp((1 + beta) * logits, dim=1) - torch.logsumexp(beta * logits, dim=1) + math.log(n_neg)
    return _debiased_from_log_terms(log_pos, log_neg, n_neg, temperature, tau)
