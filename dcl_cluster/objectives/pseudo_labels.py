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

    def __init__(self, weight: float = 1.0, rho_0: float = 0.1, epsilon: float = 0.1, lam: float = 1.0,
                 bank_batches: int = 10, max_iters: int = 1000, tol: float = 1e-6) -> None:
        super().__init__(weight)
        self.rho_0 = rho_0
        self.epsilon = epsilon
        self.lam = lam
        self.bank_batches = bank_batches
        self.max_iters = max_iters
        self.tol = tol
        self.register_buffer("bank", torch.empty(0, 0))
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

    def needs(self) -> Needs:
        return Needs(head=("cosine", "softmax"), clustering=True, num_clusters=True)

    def build(self, num_clusters: int | None) -> None:
        if self.bank.shape[1] != num_clusters:
            self.bank = torch.empty(0, num_clusters, device=self.bank.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # the bank grows: take the saved size
        for name in ("bank", "log_b"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
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
        targets, log_b = partial_ot_targets(rows, rho, self.epsilon, self.lam, self.max_iters, self.tol,
                                            init_log_b=init, return_log_b=True, prior=self.size_target(k))
        with torch.no_grad():
            self.observe_plan(targets)
            self.log_b = log_b.detach().to(self.log_b.device)
            if self.bank_batches > 0:
                self.bank = torch.cat([la.detach().float(), self.bank])[: self.bank_batches * n]
        t_a, t_b = targets[:n], targets[n: 2 * n]
        self._last = {"p2ot_rho": rho, "p2ot_trusted": t_a.sum(dim=1).mean()}
        return p2ot_loss(la, lb, t_a, t_b)

    def size_target(self, num_clusters: int) -> Tensor | None:
        """The cluster-size shares the KL relaxation pulls toward (``partial_ot_targets``'s
        ``prior``): ``None``, P²OT's uniform ``rho / K``. A subclass may return its own ``(K,)``
        shares (and update them in :meth:`observe_plan`); it must say which sizes it assumes."""
        return None

    def observe_plan(self, targets: Tensor) -> None:
        """Called with each step's pseudo-labels ``(2B + M, K)`` (no gradient); nothing here."""

    def logs(self) -> dict[str, float | Tensor]:
        return dict(self._last)
