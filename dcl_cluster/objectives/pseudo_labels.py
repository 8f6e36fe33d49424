"""P²OT's progressive partial optimal-transport pseudo-labels as a term (METHOD.md 2.5), over
:func:`~dcl_cluster.losses.partial_ot_targets` and :func:`~dcl_cluster.losses.p2ot_loss`."""

from __future__ import annotations

import torch
from torch import Tensor

from dcl_cluster.losses.checks import check_positive
from dcl_cluster.losses.pseudo_labels import p2ot_loss, p2ot_rho, partial_ot_targets
from dcl_cluster.objectives.base import Needs, Objective
from dcl_cluster.objectives.step import StepOutputs

__all__ = ["P2OTPseudoLabels"]


class P2OTPseudoLabels(Objective):
    """Cross-view cross-entropy toward P²OT's pseudo-labels (Zhang, Ren, He, ICLR 2024).

    Each step solves one transport plan over both views' logits of the (global) batch and a
    memory bank of recent detached logits, with a virtual cluster that takes the ``1 - rho``
    share of the mass not yet trusted, and a KL relaxation that lets cluster sizes follow the
    data's imbalance; ``rho`` ramps from ``rho_0`` to 1 over the clustering phase. Then
    ``L = CE(l^a, T^b) + CE(l^b, T^a)``. The bank (the first views' logits of the last
    ``bank_batches`` batches) and the scaling vector that warm-starts the next plan are
    buffers, so a resumed run continues exactly.

    Args:
        weight: Weight in the sum.
        rho_0: The trusted share at the start of the clustering phase, in ``(0, 1]``.
        epsilon: Entropic regularisation ``> 0``.
        lam: Weight of the KL relaxation of the cluster sizes ``> 0`` (``inf``: sizes fixed
            at ``rho / K``, SeLa's balanced plan when ``rho = 1``).
        bank_batches: Batches of logits kept in the memory bank (``>= 1``; 0: no bank).
        max_iters: Scaling iterations per plan.
        tol: Stop when the scaling vector moves less than this.
        sizes: ``"uniform"``: the KL relaxation pulls every cluster toward ``rho / K`` (P²OT);
            ``"plan"``: toward ``rho * pi``, where the size prior ``pi`` (a buffer, uniform at
            the start) follows the plans' own column sums (an EMA with ``size_momentum``),
            floored at ``size_floor / K`` so no cluster is starved (METHOD.md 2.8).
        size_momentum: EMA momentum of ``pi`` per step (``sizes="plan"``), in ``[0, 1)``.
        size_floor: ``pi_k >= size_floor / K`` (``sizes="plan"``), in ``(0, 1]``.

    Examples:
        >>> import torch
        >>> from dcl_cluster.objectives import StepOutputs
        >>> term = P2OTPseudoLabels(bank_batches=2)
        >>> term.build(3)
        >>> la, lb = torch.randn(8, 3), torch.randn(8, 3)
        >>> step = StepOutputs(torch.randn(8, 4), torch.randn(8, 4), logits={"a": la, "b": lb}, progress=0.5)
        >>> bool(term(step) > 0), tuple(term.bank.shape)
        (True, (8, 3))
    """

    name = "pseudo_labels"
    SIZES = ("uniform", "plan")

    def __init__(self, weight: float = 1.0, rho_0: float = 0.1, epsilon: float = 0.1, lam: float = 1.0,
                 bank_batches: int = 10, max_iters: int = 1000, tol: float = 1e-6, sizes: str = "uniform",
                 size_momentum: float = 0.99, size_floor: float = 0.1) -> None:
        super().__init__(weight)
        self.rho_0 = rho_0
        self.epsilon = epsilon
        self.lam = lam
        self.bank_batches = bank_batches
        self.max_iters = max_iters
        self.tol = tol
        self.sizes = sizes
        self.size_momentum = size_momentum
        self.size_floor = size_floor
        self.register_buffer("bank", torch.empty(0, 0))
        self.register_buffer("size_prior", torch.empty(0, dtype=torch.float64))
        self.register_buffer("log_b", torch.empty(0, dtype=torch.float64))
        self._last: dict[str, float | Tensor] = {}

    def check(self) -> None:
        super().check()
        if not isinstance(self.rho_0, (int, float)) or not 0 < self.rho_0 <= 1:
            raise ValueError(f"rho_0 must be in (0, 1], got {self.rho_0!r}")
        check_positive("epsilon", self.epsilon)
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam > 0:
            raise ValueError(f"lam must be a number > 0 (or inf), got {self.lam!r}")
        if isinstance(self.bank_batches, bool) or not isinstance(self.bank_batches, int) or self.bank_batches < 0:
            raise ValueError(f"bank_batches must be an integer >= 0, got {self.bank_batches!r}")
        if not isinstance(self.max_iters, int) or self.max_iters < 1:
            raise ValueError(f"max_iters must be an integer >= 1, got {self.max_iters!r}")
        check_positive("tol", self.tol)
        if self.sizes not in self.SIZES:
            raise ValueError(f"sizes must be one of {self.SIZES}, got {self.sizes!r}")
        if not isinstance(self.size_momentum, (int, float)) or not 0 <= self.size_momentum < 1:
            raise ValueError(f"size_momentum must be in [0, 1), got {self.size_momentum!r}")
        if not isinstance(self.size_floor, (int, float)) or not 0 < self.size_floor <= 1:
            raise ValueError(f"size_floor must be in (0, 1], got {self.size_floor!r}")

    def needs(self) -> Needs:
        return Needs(head=("cosine", "softmax"), clustering=True, num_clusters=True)

    def build(self, num_clusters: int | None) -> None:
        if self.bank.shape[1] != num_clusters:
            self.bank = torch.empty(0, num_clusters, device=self.bank.device)
        if self.size_prior.numel() != num_clusters:
            self.size_prior = torch.full((num_clusters,), 1.0 / num_clusters, dtype=torch.float64,
                                         device=self.size_prior.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # the bank grows: take the saved size
        for name in ("bank", "log_b", "size_prior"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        if prefix + "size_prior" not in state_dict and prefix + "bank" in state_dict:  # a 0.2 checkpoint
            state_dict[prefix + "size_prior"] = self.size_prior.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, step: StepOutputs) -> Tensor:
        la, lb = step.logits["a"], step.logits["b"]  # (B, K) each, the global batch
        n, k = la.shape
        if self.bank.shape[1] != k:
            raise ValueError(f"the memory bank holds logits of {self.bank.shape[1]} clusters, the head gives {k}")
        capacity = self.bank_batches * n
        if (capacity and capacity < k) or 2 * n + capacity < k:
            raise ValueError(f"the transport plan spreads {2 * n} batch rows and a bank of {capacity} rows "
                             f"({self.bank_batches} batches of {n}) over K={k} clusters: the bank must hold at least "
                             "K rows; use more bank_batches, a larger batch or fewer clusters")
        rho = p2ot_rho(step.progress, self.rho_0)
        rows = torch.cat([la.detach().float(), lb.detach().float(), self.bank])  # (2B + M, K)
        init = self.log_b if self.log_b.numel() == k + 1 else None
        prior = self.size_prior if self.sizes == "plan" else None
        targets, log_b = partial_ot_targets(rows, rho, self.epsilon, self.lam, self.max_iters, self.tol,
                                            init_log_b=init, return_log_b=True, prior=prior)
        with torch.no_grad():
            if self.sizes == "plan":  # the prior follows the plan's sizes, never below the floor
                plan = targets.sum(dim=0).to(torch.float64)
                pi = self.size_momentum * self.size_prior + (1 - self.size_momentum) * plan / plan.sum()
                pi = pi.clamp_min(self.size_floor / k)
                self.size_prior = pi / pi.sum()
            self.log_b = log_b.detach().to(self.log_b.device)
            if self.bank_batches > 0:
                self.bank = torch.cat([la.detach().float(), self.bank])[: self.bank_batches * n]
        t_a, t_b = targets[:n], targets[n: 2 * n]
        self._last = {"p2ot_rho": rho, "p2ot_trusted": t_a.sum(dim=1).mean()}
        if self.sizes == "plan":
            self._last["p2ot_size_prior_max_min"] = self.size_prior.max() / self.size_prior.min()
        return p2ot_loss(la, lb, t_a, t_b)

    def logs(self) -> dict[str, float | Tensor]:
        return dict(self._last)
