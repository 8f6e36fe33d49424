"""P²OT's pseudo-labels and losses (METHOD.md 2.5) against the formulas written out in float64."""

import math
import re

import numpy as np
import pytest
import torch

from dcl_cluster.losses import p2ot_loss, p2ot_rho, partial_ot_targets, soft_cross_entropy


def logits_of(n, k, seed, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, k, generator=g, dtype=dtype)


def reference_partial_ot(logits, rho, eps=0.1, lam=1.0, max_iters=1000, tol=1e-6, prior=None):
    """The scaling iterations in plain linear float64: a = (1/N) / (G b), b = c / (G^T a), b_k^(lam/(lam+eps));
    with a prior, c_k = rho * pi_k (pi normalised)."""
    logits = np.asarray(logits, dtype=np.float64)
    n, k = logits.shape
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = p ** (1 / eps)  # exp(-C / eps) with C = -log P
    c = [rho / k] * k if prior is None else [rho * v / sum(prior) for v in prior]
    if rho < 1:  # the zero-cost virtual column, G = exp(0) = 1
        g = np.concatenate([g, np.ones((n, 1))], axis=1)
        c.append(1 - rho)
    cols = g.shape[1]
    power = 1.0 if math.isinf(lam) else lam / (lam + eps)
    b = [1 / (k + 1)] * cols
    for _ in range(max_iters):
        a = [(1 / n) / sum(g[i, j] * b[j] for j in range(cols)) for i in range(n)]
        b_prev = b
        b = [c[j] / sum(g[i, j] * a[i] for i in range(n)) for j in range(cols)]
        b = [b[j] ** power if j < k else b[j] for j in range(cols)]
        if math.sqrt(sum((x - y) ** 2 for x, y in zip(b, b_prev, strict=True))) < tol:
            break
    a = [(1 / n) / sum(g[i, j] * b[j] for j in range(cols)) for i in range(n)]
    return np.array([[n * a[i] * g[i, j] * b[j] for j in range(k)] for i in range(n)])


def reference_soft_ce(logits, targets):
    total = 0.0
    for row, t in zip(np.asarray(logits, np.float64), np.asarray(targets, np.float64), strict=True):
        log_z = math.log(sum(math.exp(v) for v in row))
        total -= sum(t[k] * (row[k] - log_z) for k in range(len(row)))
    return total / len(logits)


class TestPartialOTTargets:
    @pytest.mark.parametrize("rho", [0.1, 0.5, 1.0])
    @pytest.mark.parametrize("lam", [0.5, 1.0, math.inf])
    @pytest.mark.parametrize("n,k", [(12, 4), (9, 2)])
    def test_matches_linear_scaling_iterations(self, rho, lam, n, k):
        logits = logits_of(n, k, seed=n * k)
        # both run to the fixed point: at the default tol the solver's extrapolation stops nearer it
        # than the loop does (test_the_default_stop_is_no_farther_from_the_fixed_point_than_the_loops)
        expected = reference_partial_ot(logits.numpy(), rho, 0.1, lam, max_iters=20000, tol=1e-13)
        got = partial_ot_targets(logits, rho, lam=lam, max_iters=20000, tol=1e-12)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-9, rtol=0)

    @pytest.mark.parametrize("rho", [0.1, 0.5, 1.0])
    @pytest.mark.parametrize("lam", [1.0, math.inf])
    def test_the_default_stop_is_no_farther_from_the_fixed_point_than_the_loops(self, rho, lam):
        logits = logits_of(30, 5, seed=21)
        fixed_point = reference_partial_ot(logits.numpy(), rho, 0.1, lam, max_iters=20000, tol=1e-13)
        loop_error = np.abs(reference_partial_ot(logits.numpy(), rho, 0.1, lam) - fixed_point).max()
        error = np.abs(partial_ot_targets(logits, rho, lam=lam).numpy() - fixed_point).max()
        # (where the loop contracts fast it stops within 1e-12; the solver's stop after a jump is
        # then as near as the rule tol = 1e-6 resolves, ~1e-8 here)
        assert error <= max(loop_error, 1e-7)

    @pytest.mark.parametrize("rho", [0.1, 1.0])
    def test_without_extrapolation_the_iterations_are_the_loops(self, rho, monkeypatch):
        from dcl_cluster.losses import pseudo_labels

        monkeypatch.setattr(pseudo_labels, "EXTRAPOLATE_LAST", 0)
        logits = logits_of(12, 4, seed=3)
        for iters in (40, 1000):  # mid-way (past two checks) and at the default stop
            got = partial_ot_targets(logits, rho, max_iters=iters, tol=0.0 if iters == 40 else 1e-6)
            expected = reference_partial_ot(logits.numpy(), rho, 0.1, 1.0, max_iters=iters,
                                            tol=0.0 if iters == 40 else 1e-6)
            # the solver stops at a check (every 16 iterations), at most 15 past the loop: 1e-6
            np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10 if iters == 40 else 1e-6)

    def test_extrapolation_reaches_the_same_plan_in_a_fraction_of_the_iterations(self, monkeypatch):
        from dcl_cluster.losses import pseudo_labels

        logits = torch.nn.functional.normalize(logits_of(120, 6, seed=4), dim=1) * 10  # a cosine head
        fixed_point = reference_partial_ot(logits.numpy(), 0.1, max_iters=20000, tol=1e-12)
        mat_vecs = []  # the iterations: one scaling step (G^T (1 / (G b))) each
        real_step = pseudo_labels._scaling_step
        monkeypatch.setattr(pseudo_labels, "_scaling_step", lambda *a: mat_vecs.append(1) or real_step(*a))
        counts, shipped = {}, pseudo_labels.EXTRAPOLATE_LAST
        for depth in (shipped, 0):
            monkeypatch.setattr(pseudo_labels, "EXTRAPOLATE_LAST", depth)
            mat_vecs.clear()
            t = partial_ot_targets(logits, 0.1, max_iters=5000)
            counts[depth] = len(mat_vecs)
            np.testing.assert_allclose(t.numpy(), fixed_point, atol=1e-4 if depth else 2e-3, rtol=0)
        assert counts[0] > 300 and counts[shipped] < counts[0] / 4

    def test_failed_jumps_stop_the_extrapolation_and_the_plan_is_unchanged(self, monkeypatch):
        from dcl_cluster.losses import pseudo_labels

        logits = logits_of(60, 5, seed=9)
        fixed_point = reference_partial_ot(logits.numpy(), 0.3, max_iters=20000, tol=1e-13)
        jumps = []
        # every jump lands far off (b multiplied by e^3 on one column): each one fails
        monkeypatch.setattr(pseudo_labels, "_extrapolate",
                            lambda h: jumps.append(1) or h[-1] + torch.eye(1, h.shape[1], dtype=h.dtype)[0] * 3)
        t = partial_ot_targets(logits, 0.3, max_iters=5000, tol=1e-10)
        assert len(jumps) == pseudo_labels.FAILED_JUMPS_ALLOWED
        np.testing.assert_allclose(t.numpy(), fixed_point, atol=1e-7, rtol=0)

    @pytest.mark.parametrize("rho", [0.2, 1.0])
    def test_block_by_block_mat_vecs_are_the_loops_iterations(self, rho, monkeypatch):
        from dcl_cluster.losses import pseudo_labels

        monkeypatch.setattr(pseudo_labels, "FUSED_BLOCK_ROWS", 7)  # 40 rows: blocks of 7, the last of 5
        steps = []
        real = pseudo_labels._scaling_step
        monkeypatch.setattr(pseudo_labels, "_scaling_step",
                            lambda g, blocks, b: steps.append(blocks) or real(g, blocks, b))
        logits = logits_of(40, 4, seed=15)
        got = partial_ot_targets(logits, rho, max_iters=7, tol=0.0)  # before any jump: the plain iterations
        assert [len(blocks) for blocks in steps] == [6] * 7
        expected = reference_partial_ot(logits.numpy(), rho, 0.1, 1.0, max_iters=7, tol=0.0)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
        fixed_point = reference_partial_ot(logits.numpy(), rho, max_iters=20000, tol=1e-13)
        np.testing.assert_allclose(partial_ot_targets(logits, rho, max_iters=20000, tol=1e-12).numpy(), fixed_point,
                                   atol=1e-9, rtol=0)

    def test_extrapolation_of_geometric_iterates_is_their_limit(self):
        from dcl_cluster.losses.pseudo_labels import _extrapolate

        # x_{t+1} = A x_t + c with two modes (0.99 and 0.5): 5 steps determine the limit (I - A)^-1 c
        rng = np.random.default_rng(0)
        basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
        a = basis @ np.diag([0.99, 0.5, 0, 0, 0, 0]) @ basis.T
        c = rng.normal(size=6)
        xs = [rng.normal(size=6)]
        for _ in range(5):
            xs.append(a @ xs[-1] + c)
        limit = np.linalg.solve(np.eye(6) - a, c)
        # (the ridge of 1e-12 x the trace that keeps nearly parallel steps solvable costs ~1e-6 here)
        np.testing.assert_allclose(_extrapolate(torch.tensor(np.array(xs))).numpy(), limit, rtol=1e-5)

    @pytest.mark.parametrize("rho", [0.3, 1.0])
    @pytest.mark.parametrize("lam", [1.0, math.inf])
    def test_a_size_prior_matches_the_loop_and_moves_the_sizes(self, rho, lam):
        logits = logits_of(40, 4, seed=11, scale=0.5)
        prior = [4.0, 2.0, 1.0, 1.0]  # normalised inside: 0.5, 0.25, 0.125, 0.125
        got = partial_ot_targets(logits, rho, lam=lam, prior=torch.tensor(prior), max_iters=20000, tol=1e-12)
        expected = reference_partial_ot(logits.numpy(), rho, 0.1, lam, prior=prior, max_iters=20000, tol=1e-13)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-9, rtol=0)  # both at the fixed point
        uniform = partial_ot_targets(logits, rho, lam=lam)
        assert got.sum(0)[0] > uniform.sum(0)[0] and got.sum(0)[3] < uniform.sum(0)[3]
        if math.isinf(lam):  # fixed sizes: exactly rho * N * pi
            np.testing.assert_allclose(got.sum(0).numpy(), rho * 40 * np.array(prior) / 8, rtol=1e-5)
        np.testing.assert_allclose(partial_ot_targets(logits, rho, lam=lam, prior=torch.full((4,), 0.25)).numpy(),
                                   uniform.numpy(), atol=1e-12)

    def test_a_bad_prior_is_named(self):
        with pytest.raises(ValueError, match=r"prior must have shape \(3,\) with finite entries > 0, got shape "
                                             r"\(3,\) and values \[0.5, 0.0, 0.5\]"):
            partial_ot_targets(logits_of(6, 3, seed=0), 0.5, prior=torch.tensor([0.5, 0.0, 0.5]))

    @pytest.mark.parametrize("iters", [1, 2, 7])
    @pytest.mark.parametrize("eps", [0.1, 0.5])
    def test_each_iteration_matches_before_convergence(self, iters, eps):
        logits = logits_of(12, 4, seed=3)
        got = partial_ot_targets(logits, 0.3, epsilon=eps, max_iters=iters, tol=0.0)
        expected = reference_partial_ot(logits.numpy(), 0.3, eps, 1.0, max_iters=iters, tol=0.0)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)

    @pytest.mark.parametrize("rho", [0.1, 0.37, 0.8, 1.0])
    @pytest.mark.parametrize("n,k", [(64, 5), (200, 10)])
    def test_rows_at_most_one_and_total_mass_rho_n(self, rho, n, k):
        logits = logits_of(n, k, seed=k, scale=3.0)
        t = partial_ot_targets(logits, rho, tol=1e-10, max_iters=5000)
        assert (t >= 0).all()
        assert (t.sum(dim=1) <= 1 + 1e-6).all()
        assert t.sum().item() == pytest.approx(rho * n, rel=1e-6)

    def test_untrusted_mass_leaves_the_least_confident_samples(self):
        logits = logits_of(100, 4, seed=5, scale=1.0)
        logits[:50] *= 8  # half the samples confident, half nearly uniform
        t = partial_ot_targets(logits, 0.5)
        assert t[:50].sum(dim=1).mean() > 2 * t[50:].sum(dim=1).mean()

    def test_huge_lam_with_rho_one_is_balanced_sinkhorn(self):
        logits = logits_of(60, 3, seed=6)
        logits[:, 0] += 2.0  # the head prefers cluster 0, the plan must not
        for lam in (1e6, math.inf):
            t = partial_ot_targets(logits, 1.0, lam=lam, tol=1e-12, max_iters=20000)
            torch.testing.assert_close(t.sum(dim=0), torch.full((3,), 20.0, dtype=torch.float64), atol=1e-3, rtol=0)
            torch.testing.assert_close(t.sum(dim=1), torch.ones(60, dtype=torch.float64))

    def test_lam_one_lets_cluster_sizes_follow_an_imbalance(self):
        labels = torch.tensor([0] * 90 + [1] * 10)
        logits = logits_of(100, 2, seed=7, scale=0.5)
        logits[torch.arange(100), labels] += 5.0  # confident, 90/10 split
        sizes = partial_ot_targets(logits, 1.0, lam=1.0).sum(dim=0)
        balanced = partial_ot_targets(logits, 1.0, lam=math.inf, max_iters=5000).sum(dim=0)
        assert abs(sizes[0].item() - 90) < abs(sizes[0].item() - 50)  # nearer 90/10 than 50/50
        assert sizes[0] > 80
        torch.testing.assert_close(balanced, torch.full((2,), 50.0, dtype=torch.float64), atol=1e-3, rtol=0)

    @pytest.mark.parametrize("rho", [0.2, 1.0])
    @pytest.mark.parametrize("scale", [10.0, 100.0, 1000.0])
    def test_sharp_logits_stay_finite(self, rho, scale):
        logits = torch.nn.functional.normalize(torch.randn(256, 10), dim=1) * scale  # a cosine head x scale
        t = partial_ot_targets(logits, rho)
        assert torch.isfinite(t).all() and (t >= 0).all()
        assert (t.sum(dim=1) <= 1 + 1e-5).all()
        t_sharper = partial_ot_targets(logits_of(256, 10, seed=1, dtype=torch.float32) * scale, rho)
        assert torch.isfinite(t_sharper).all()

    @pytest.mark.parametrize("rho", [0.2, 1.0])
    def test_linear_and_log_space_iterations_agree_and_the_fallback_is_taken(self, rho, monkeypatch):
        from dcl_cluster.losses import pseudo_labels

        logits = logits_of(200, 6, seed=12, scale=3.0)
        linear = partial_ot_targets(logits, rho, tol=1e-10, max_iters=5000)
        monkeypatch.setattr(pseudo_labels, "_scale_linear", lambda *a: None)  # force the log-space path
        logspace = partial_ot_targets(logits, rho, tol=1e-10, max_iters=5000)
        torch.testing.assert_close(linear, logspace, rtol=1e-7, atol=1e-9)
        monkeypatch.undo()
        # a cluster every sample rejects by e^-4000 (logits 400 apart at eps 0.1): its column of the
        # rescaled kernel is all zeros in float64, the linear iterations fail and log space answers
        calls = []
        real = pseudo_labels._scale_log
        monkeypatch.setattr(pseudo_labels, "_scale_log", lambda *a: calls.append(1) or real(*a))
        harsh = logits_of(64, 4, seed=13)
        harsh[:, 3] -= 400.0
        t = partial_ot_targets(harsh, rho)
        assert calls and torch.isfinite(t).all() and (t.sum(dim=1) <= 1 + 1e-6).all()
        assert t.sum().item() == pytest.approx(rho * 64, rel=1e-5)
        monkeypatch.setattr(pseudo_labels, "_scale_linear", lambda *a: None)  # the log-space path from the start
        torch.testing.assert_close(t, partial_ot_targets(harsh, rho), rtol=0, atol=0)

    def test_no_gradient_and_output_dtype(self):
        logits = logits_of(8, 3, seed=8, dtype=torch.float32).requires_grad_(True)
        t = partial_ot_targets(logits, 0.5)
        assert not t.requires_grad and t.dtype == torch.float32
        assert partial_ot_targets(logits.detach().double(), 0.5).dtype == torch.float64
        assert partial_ot_targets(logits.detach().bfloat16(), 0.5).dtype == torch.float32

    def test_bf16_autocast_matches_float32(self):
        logits = logits_of(64, 6, seed=9, dtype=torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t_bf16 = partial_ot_targets(logits.bfloat16(), 0.4)
        assert t_bf16.dtype == torch.float32
        torch.testing.assert_close(t_bf16, partial_ot_targets(logits.bfloat16().float(), 0.4), atol=1e-6, rtol=0)
        torch.testing.assert_close(t_bf16, partial_ot_targets(logits, 0.4), atol=0.05, rtol=0)

    def test_bf16_logits_that_require_grad_take_the_extrapolated_path_to_the_loops_fixed_point(self, monkeypatch):
        from dcl_cluster.losses import pseudo_labels

        jumps = []
        real = pseudo_labels._extrapolate
        monkeypatch.setattr(pseudo_labels, "_extrapolate", lambda h: jumps.append(1) or real(h))
        cosine = torch.nn.functional.normalize(logits_of(80, 5, seed=14, dtype=torch.float32), dim=1) * 10
        logits = cosine.bfloat16().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t = partial_ot_targets(logits, 0.1)
        assert jumps and t.dtype == torch.float32 and not t.requires_grad and logits.grad is None
        fixed_point = reference_partial_ot(logits.detach().double().numpy(), 0.1, max_iters=20000, tol=1e-12)
        np.testing.assert_allclose(t.double().numpy(), fixed_point, atol=1e-6, rtol=0)

    def test_warm_start_from_the_converged_b(self):
        logits = logits_of(40, 5, seed=10)
        t, log_b = partial_ot_targets(logits, 0.6, tol=1e-12, return_log_b=True)
        assert log_b.shape == (6,) and log_b.dtype == torch.float64
        warm = partial_ot_targets(logits, 0.6, max_iters=1, init_log_b=log_b)
        cold = partial_ot_targets(logits, 0.6, max_iters=1)
        torch.testing.assert_close(warm, t, atol=1e-8, rtol=0)
        assert (cold - t).abs().max() > 1e-3  # one iteration from scratch is far off

    def test_rho_one_log_b_has_an_empty_virtual_column_and_warm_starts_later_calls(self):
        logits = logits_of(30, 4, seed=11)
        t, log_b = partial_ot_targets(logits, 1.0, return_log_b=True)
        assert log_b[-1] == -math.inf and torch.isfinite(log_b[:4]).all()
        torch.testing.assert_close(t, partial_ot_targets(logits, 1.0, init_log_b=log_b), atol=1e-6, rtol=0)
        again = partial_ot_targets(logits, 0.5, init_log_b=log_b)
        torch.testing.assert_close(again, partial_ot_targets(logits, 0.5), atol=1e-5, rtol=0)

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            ({"rho": 0.0}, r"rho must be a number in \(0, 1\], got 0.0"),
            ({"rho": 1.5}, r"rho must be a number in \(0, 1\], got 1.5"),
            ({"rho": float("nan")}, r"rho must be a number in \(0, 1\], got nan"),
            ({"rho": 0.5, "epsilon": 0.0}, r"epsilon must be a finite number > 0, got 0.0"),
            ({"rho": 0.5, "epsilon": -1.0}, r"epsilon must be a finite number > 0, got -1.0"),
            ({"rho": 0.5, "lam": 0.0}, r"lam must be a number > 0 .*got 0.0"),
            ({"rho": 0.5, "lam": -2.0}, r"lam must be a number > 0 .*got -2.0"),
            ({"rho": 0.5, "max_iters": 0}, r"max_iters must be an integer >= 1, got 0"),
            ({"rho": 0.5, "tol": -1.0}, r"tol must be a number >= 0, got -1.0"),
            ({"rho": 0.5, "init_log_b": torch.zeros(3)}, r"init_log_b must have shape \(5,\).*got shape \(3,\)"),
        ],
    )
    def test_bad_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            partial_ot_targets(logits_of(6, 4, seed=0), **kwargs)

    @pytest.mark.parametrize("shape", [(6,), (6, 1), (2, 3, 4)])
    def test_bad_logits_shape(self, shape):
        match = r"logits must have shape \(N, K\) .*K >= 2 .*got " + re.escape(str(tuple(shape)))
        with pytest.raises(ValueError, match=match):
            partial_ot_targets(torch.zeros(shape), 0.5)


class TestRhoSchedule:
    @pytest.mark.parametrize("progress", [0.0, 0.25, 0.5, 0.9, 1.0])
    @pytest.mark.parametrize("rho_0", [0.1, 0.3])
    def test_matches_formula(self, progress, rho_0):
        expected = rho_0 + (1 - rho_0) * math.exp(-5 * (1 - progress) ** 2)
        assert p2ot_rho(progress, rho_0) == pytest.approx(expected, rel=1e-12)

    def test_clips_progress_and_ends_at_one(self):
        assert p2ot_rho(-0.5) == p2ot_rho(0.0)
        assert p2ot_rho(1.7) == p2ot_rho(1.0) == 1.0
        assert p2ot_rho(0.3) < p2ot_rho(0.6)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"rho_0 must be a number in \(0, 1\], got 0"):
            p2ot_rho(0.5, rho_0=0)
        with pytest.raises(ValueError, match="progress must be a number"):
            p2ot_rho(float("nan"))


class TestSoftCrossEntropy:
    @pytest.mark.parametrize("b,k", [(4, 2), (16, 5), (33, 10)])
    def test_matches_formula(self, b, k):
        logits = logits_of(b, k, seed=b + k)
        targets = partial_ot_targets(logits_of(b, k, seed=b * k + 1), 0.5)  # partial rows
        expected = reference_soft_ce(logits.numpy(), targets.numpy())
        assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-10)

    def test_gradcheck(self):
        logits = logits_of(5, 3, seed=12).requires_grad_(True)
        targets = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(soft_cross_entropy, (logits, targets))

    def test_bf16_autocast_matches_float32(self):
        logits = logits_of(32, 10, seed=13, dtype=torch.float32).requires_grad_(True)
        targets = partial_ot_targets(logits, 0.7)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = soft_cross_entropy(logits.bfloat16(), targets.bfloat16())
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(logits.grad).all()
        assert loss.item() == pytest.approx(soft_cross_entropy(logits, targets).item(), rel=2e-2)

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match=r"logits and targets must have the same shape .*\(4, 3\) and \(4, 2\)"):
            soft_cross_entropy(torch.zeros(4, 3), torch.zeros(4, 2))


class TestP2OTLoss:
    @pytest.mark.parametrize("b,k", [(8, 3), (20, 6)])
    def test_is_cross_view_soft_cross_entropy(self, b, k):
        la, lb = logits_of(b, k, seed=14), logits_of(b, k, seed=15)
        ta, tb = partial_ot_targets(la, 0.4), partial_ot_targets(lb, 0.4)
        expected = reference_soft_ce(la.numpy(), tb.numpy()) + reference_soft_ce(lb.numpy(), ta.numpy())
        assert p2ot_loss(la, lb, ta, tb).item() == pytest.approx(expected, rel=1e-10)

    def test_gradient_reaches_logits_not_targets(self):
        la, lb = (logits_of(6, 3, seed=s).requires_grad_(True) for s in (16, 17))
        ta, tb = (torch.rand(6, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
        p2ot_loss(la, lb, ta, tb).backward()
        assert la.grad.abs().sum() > 0 and lb.grad.abs().sum() > 0
        assert ta.grad is None and tb.grad is None

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="logits_a and logits_b must have the same shape"):
            p2ot_loss(torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4, 3), torch.zeros(5, 3))


def test_a_subclass_sets_the_terms_size_target_and_sees_every_plan():
    from dcl_cluster.objectives import P2OTPseudoLabels, StepOutputs

    seen = []

    class Skewed(P2OTPseudoLabels):
        def size_target(self, num_clusters):
            return torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)

        def observe_plan(self, targets):
            seen.append(targets.clone())

    term = Skewed(lam=math.inf, bank_batches=1, tol=1e-10, max_iters=5000)
    term.build(3)
    la, lb = logits_of(20, 3, seed=4, dtype=torch.float32, scale=0.3), logits_of(20, 3, seed=5, dtype=torch.float32,
                                                                                 scale=0.3)
    term(StepOutputs(la, lb, logits={"a": la, "b": lb}, progress=1.0))  # rho = 1: all mass trusted
    assert len(seen) == 1 and seen[0].shape == (40, 3)  # both views; the bank was empty
    np.testing.assert_allclose(seen[0].sum(0).numpy(), [28.0, 8.0, 4.0], rtol=1e-4)
    assert P2OTPseudoLabels().size_target(3) is None
