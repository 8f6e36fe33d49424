"""The clustering objectives against METHOD.md 2.1-2.3 written out in float64 numpy."""

import math

import numpy as np
import pytest
import torch

from dcl_cluster.losses import (
    DECClusteringLoss,
    anchor_loss,
    cluster_contrastive_loss,
    dec_clustering_loss,
    prior_matched_target,
    student_t_assignment,
    target_distribution,
)


def softmax_rows(b, k, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(b, k, generator=g, dtype=dtype), dim=1)


def reference_student_t(h, mu, alpha):
    q = np.zeros((len(h), len(mu)))
    for i in range(len(h)):
        for k in range(len(mu)):
            q[i, k] = (1 + np.sum((h[i] - mu[k]) ** 2) / alpha) ** (-(alpha + 1) / 2)
        q[i] /= q[i].sum()
    return q


def reference_target(q, size_exponent, f=None):
    f = q.sum(axis=0) if f is None else f
    p = q**2 / f**size_exponent
    return p / p.sum(axis=1, keepdims=True)


def reference_prior_matched(q, prior, iters):
    """Sinkhorn-Knopp in plain multiplicative form: p = diag(u) q^2 diag(v)."""
    r = q**2
    b, k = r.shape
    mass = b * prior / prior.sum()
    u, v = np.ones(b), np.ones(k)
    for _ in range(iters):
        for j in range(k):  # columns sum to B * prior
            v[j] = mass[j] / sum(u[i] * r[i, j] for i in range(b))
        for i in range(b):  # rows sum to 1
            u[i] = 1.0 / sum(r[i, j] * v[j] for j in range(k))
    return u[:, None] * r * v[None, :]


def reference_kl(p, q):
    return float(np.mean([sum(pi * math.log(pi / qi) for pi, qi in zip(pr, qr, strict=True) if pi > 0)
                          for pr, qr in zip(p, q, strict=True)]))


class TestStudentT:
    @pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
    @pytest.mark.parametrize("b,k,d", [(5, 2, 3), (12, 7, 16)])
    def test_matches_formula(self, alpha, b, k, d):
        g = torch.Generator().manual_seed(b * k)
        h = torch.randn(b, d, generator=g, dtype=torch.float64)
        mu = torch.randn(k, d, generator=g, dtype=torch.float64)
        q = student_t_assignment(h, mu, alpha)
        np.testing.assert_allclose(q.numpy(), reference_student_t(h.numpy(), mu.numpy(), alpha), rtol=1e-10)

    def test_far_points_stay_finite_in_float32(self):
        h = torch.randn(4, 8) * 1e4
        q = student_t_assignment(h, torch.randn(3, 8))
        assert torch.isfinite(q).all()
        torch.testing.assert_close(q.sum(1), torch.ones(4))

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(1)
        h = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
        mu = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b: student_t_assignment(a, b, 1.0), (h, mu))

    def test_errors(self):
        with pytest.raises(ValueError, match="alpha must be"):
            student_t_assignment(torch.randn(3, 2), torch.randn(2, 2), alpha=0)
        with pytest.raises(ValueError, match=r"\(3, 2\) and \(2, 5\)"):
            student_t_assignment(torch.randn(3, 2), torch.randn(2, 5))


class TestTargetDistribution:
    @pytest.mark.parametrize("size_exponent", [0.0, 0.5, 1.0])
    def test_matches_formula(self, size_exponent):
        q = softmax_rows(9, 4, seed=2)
        p = target_distribution(q, size_exponent)
        np.testing.assert_allclose(p.numpy(), reference_target(q.numpy(), size_exponent), rtol=1e-10)

    def test_has_no_gradient(self):
        q = softmax_rows(5, 3, seed=3).requires_grad_(True)
        assert not target_distribution(q).requires_grad

    def test_bad_size_exponent(self):
        with pytest.raises(ValueError, match="size_exponent must be a finite number >= 0, got -1"):
            target_distribution(softmax_rows(3, 2, seed=0), size_exponent=-1)


    def test_dataset_wide_sizes_replace_the_batch_sizes(self):
        q = softmax_rows(9, 4, seed=7)
        sizes = torch.tensor([500.0, 200.0, 50.0, 5.0], dtype=torch.float64)
        p = target_distribution(q, 0.5, cluster_sizes=sizes)
        expected = reference_target(q.numpy(), 0.5, f=sizes.numpy())
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-10)
        # only ratios matter: frequencies give the same target
        torch.testing.assert_close(target_distribution(q, 0.5, cluster_sizes=sizes / sizes.sum()), p)

    def test_an_empty_cluster_does_not_take_every_row(self):
        q = softmax_rows(6, 3, seed=15)
        p = target_distribution(q, 1.0, cluster_sizes=torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
        expected = reference_target(q.numpy(), 1.0, f=np.array([0.5, 0.5, 1e-8]))
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-9)
        assert (p.argmax(dim=1) == q.argmax(dim=1)).float().mean() > 0  # not all rows on cluster 2

    def test_bad_cluster_sizes(self):
        q = softmax_rows(4, 3, seed=0)
        with pytest.raises(ValueError, match=r"cluster_sizes must be 3 finite non-negative .*got \[1.0, -1.0, 1.0\]"):
            target_distribution(q, cluster_sizes=torch.tensor([1.0, -1.0, 1.0]))
        with pytest.raises(ValueError, match="cluster_sizes must be 3"):
            target_distribution(softmax_rows(4, 3, seed=0), cluster_sizes=torch.ones(2))


class TestPriorMatchedTarget:
    @pytest.mark.parametrize("iters", [1, 5])
    def test_matches_sinkhorn_formula(self, iters):
        q = softmax_rows(12, 4, seed=8)
        prior = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
        p = prior_matched_target(q, prior, num_iters=iters)
        expected = reference_prior_matched(q.numpy(), prior.numpy(), iters)
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-9)

    def test_converged_cluster_sizes_follow_the_prior(self):
        q = softmax_rows(200, 5, seed=9)
        prior = torch.tensor([0.6, 0.2, 0.1, 0.07, 0.03], dtype=torch.float64)
        p = prior_matched_target(q, 7 * prior, num_iters=200)  # scale of the prior is irrelevant
        torch.testing.assert_close(p.sum(dim=1), torch.ones(200, dtype=torch.float64))
        torch.testing.assert_close(p.sum(dim=0) / 200, prior, atol=1e-6, rtol=0)

    def test_imposes_the_long_tailed_prior_on_a_batch(self):
        g = torch.Generator().manual_seed(13)
        labels = torch.tensor([0] * 120 + [1] * 50 + [2] * 20 + [3] * 10)
        logits = torch.randn(200, 4, generator=g, dtype=torch.float64)
        logits[torch.arange(200), labels] += 4.0  # a batch about as long-tailed as its classes
        q = torch.softmax(logits, dim=1)
        prior = torch.tensor([0.6, 0.25, 0.1, 0.05], dtype=torch.float64)
        assert (q.mean(dim=0) - prior).abs().max() > 0.03  # q alone is flatter than the classes
        kept = prior_matched_target(q, labels.bincount().double(), num_iters=1000).mean(dim=0)
        torch.testing.assert_close(kept, prior, atol=1e-4, rtol=0)
        assert (target_distribution(q, 0.5).mean(dim=0) - prior).abs().max() > 0.01  # DEC's does not

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_half_precision_assignments_give_float32_targets(self, dtype):
        q = softmax_rows(16, 4, seed=14, dtype=torch.float32)
        prior = torch.tensor([0.4, 0.3, 0.2, 0.1])
        for p in (prior_matched_target(q.to(dtype), prior), target_distribution(q.to(dtype), 0.5, prior)):
            assert p.dtype == torch.float32 and torch.isfinite(p).all()
            torch.testing.assert_close(p.sum(dim=1), torch.ones(16))
        torch.testing.assert_close(prior_matched_target(q.to(dtype), prior), prior_matched_target(q, prior),
                                   atol=2e-2, rtol=0)

    def test_only_rescales_rows_and_columns_of_the_squared_q(self):
        # p_ik = q_ik^2 u_i v_k keeps every cross ratio of q^2: p_ik p_jl / (p_il p_jk)
        q = softmax_rows(30, 3, seed=10)
        p = prior_matched_target(q, torch.tensor([0.8, 0.15, 0.05], dtype=torch.float64))
        r = q**2
        for i, j, k, l in [(0, 1, 0, 1), (3, 17, 2, 0), (29, 5, 1, 2)]:
            got = p[i, k] * p[j, l] / (p[i, l] * p[j, k])
            assert got.item() == pytest.approx((r[i, k] * r[j, l] / (r[i, l] * r[j, k])).item(), rel=1e-9)

    def test_zero_prior_stays_finite_and_no_gradient(self):
        q = softmax_rows(8, 3, seed=11).requires_grad_(True)
        p = prior_matched_target(q, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
        assert torch.isfinite(p).all() and not p.requires_grad
        assert p[:, 2].sum() < 1e-6

    def test_errors(self):
        q = softmax_rows(4, 3, seed=0)
        with pytest.raises(ValueError, match=r"prior must be 3 finite non-negative .*got \[nan, 1.0, 1.0\]"):
            prior_matched_target(q, torch.tensor([float("nan"), 1.0, 1.0]))
        with pytest.raises(ValueError, match="num_iters must be an integer >= 1, got 0"):
            prior_matched_target(q, torch.ones(3), num_iters=0)


class TestDEC:
    @pytest.mark.parametrize("size_exponent", [0.0, 1.0])
    def test_matches_formula_with_computed_target(self, size_exponent):
        q = softmax_rows(10, 5, seed=4)
        expected = reference_kl(reference_target(q.numpy(), size_exponent), q.numpy())
        got = dec_clustering_loss(q, size_exponent=size_exponent).item()
        assert got == pytest.approx(expected, rel=1e-10)

    def test_matches_formula_with_given_target_including_zeros(self):
        q = softmax_rows(6, 3, seed=5)
        p = torch.zeros_like(q)
        p[:, 0] = 1.0
        assert dec_clustering_loss(q, p).item() == pytest.approx(reference_kl(p.numpy(), q.numpy()), rel=1e-10)

    def test_gradcheck(self):
        # p is a detached target, so the finite differences must hold it fixed too
        logits = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
        p = target_distribution(torch.softmax(logits, 1))
        assert torch.autograd.gradcheck(lambda x: dec_clustering_loss(torch.softmax(x, 1), p), (logits,))

    def test_gradient_only_through_q(self):
        logits = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
        q = torch.softmax(logits, 1)
        p = target_distribution(q).clone()
        # d/dq KL(p || q) = -p / q when p is constant
        (grad_q,) = torch.autograd.grad(dec_clustering_loss(q, p), q)
        torch.testing.assert_close(grad_q, -p / q / 5)

    def test_module(self):
        q = softmax_rows(8, 4, seed=6)
        expected = reference_kl(reference_target(q.numpy(), 0.5), q.numpy())
        assert DECClusteringLoss(size_exponent=0.5)(q).item() == pytest.approx(expected, rel=1e-10)

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="same shape"):
            dec_clustering_loss(softmax_rows(4, 3, 0), softmax_rows(4, 2, 0))

    def test_module_dataset_and_prior_targets(self):
        q = softmax_rows(10, 4, seed=12)
        prior = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
        got = DECClusteringLoss(0.5, target="dataset")(q, prior=prior).item()
        assert got == pytest.approx(reference_kl(reference_target(q.numpy(), 0.5, prior.numpy()), q.numpy()), rel=1e-10)
        got = DECClusteringLoss(target="prior")(q, prior=prior).item()
        expected = reference_kl(reference_prior_matched(q.numpy(), prior.numpy(), 20), q.numpy())
        assert got == pytest.approx(expected, rel=1e-8)

    @pytest.mark.parametrize("target", ["dataset", "prior"])
    def test_gradcheck_dataset_and_prior_targets(self, target):
        logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
        prior = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
        loss_fn = DECClusteringLoss(0.5, target=target)
        # the target is detached: the gradient is that of KL(p || q) with p held fixed
        p = (target_distribution(torch.softmax(logits, 1), 0.5, cluster_sizes=prior) if target == "dataset"
             else prior_matched_target(torch.softmax(logits, 1), prior))
        (grad,) = torch.autograd.grad(loss_fn(torch.softmax(logits, 1), prior=prior), logits)
        (expected,) = torch.autograd.grad(dec_clustering_loss(torch.softmax(logits, 1), p), logits)
        torch.testing.assert_close(grad, expected)
        assert torch.autograd.gradcheck(lambda x: dec_clustering_loss(torch.softmax(x, 1), p), (logits,))

    def test_module_target_errors(self):
        with pytest.raises(ValueError, match=r"target must be one of \('batch', 'dataset', 'prior'\), got 'global'"):
            DECClusteringLoss(target="global")
        with pytest.raises(ValueError, match="target='prior' needs the dataset-wide cluster prior"):
            DECClusteringLoss(target="prior")(softmax_rows(4, 3, 0))


class TestAnchor:
    def test_matches_formula(self):
        qc, qa, qb = softmax_rows(7, 4, 7), softmax_rows(7, 4, 8), softmax_rows(7, 4, 9)
        expected = reference_kl(qc.numpy(), qa.numpy()) + reference_kl(qc.numpy(), qb.numpy())
        assert anchor_loss(qc, qa, qb).item() == pytest.approx(expected, rel=1e-10)

    def test_no_gradient_into_clean_view(self):
        lc, la, lb = (torch.randn(5, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
        anchor_loss(torch.softmax(lc, 1), torch.softmax(la, 1), torch.softmax(lb, 1)).backward()
        assert lc.grad is None
        assert la.grad.abs().sum() > 0 and lb.grad.abs().sum() > 0

    def test_gradcheck(self):
        qc = softmax_rows(4, 3, 10)
        la, lb = (torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
        assert torch.autograd.gradcheck(
            lambda a, b: anchor_loss(qc, torch.softmax(a, 1), torch.softmax(b, 1)), (la, lb)
        )

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="same shape"):
            anchor_loss(softmax_rows(4, 3, 0), softmax_rows(4, 3, 1), softmax_rows(5, 3, 2))


def reference_cluster_contrastive(y_a, y_b, t):
    k = y_a.shape[1]
    c = np.concatenate([y_a.T, y_b.T])  # (2K, B) cluster vectors
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    total = 0.0
    for i in range(2 * k):
        j = (i + k) % (2 * k)
        denominator = sum(math.exp(c[i] @ c[m] / t) for m in range(2 * k) if m != i)
        total += -math.log(math.exp(c[i] @ c[j] / t) / denominator)
    loss = total / (2 * k)
    for y in (y_a, y_b):
        p = y.sum(0) / y.sum()
        loss += math.log(k) + float(np.sum(p * np.log(p)))
    return loss


class TestClusterContrastive:
    @pytest.mark.parametrize("t", [0.5, 1.0])
    @pytest.mark.parametrize("b,k", [(4, 2), (16, 5)])
    def test_matches_formula(self, t, b, k):
        y_a, y_b = softmax_rows(b, k, 11), softmax_rows(b, k, 12)
        expected = reference_cluster_contrastive(y_a.numpy(), y_b.numpy(), t)
        assert cluster_contrastive_loss(y_a, y_b, t).item() == pytest.approx(expected, rel=1e-10)

    def test_entropy_term_penalises_collapse(self):
        uniform = torch.full((8, 4), 0.25, dtype=torch.float64)
        collapsed = torch.zeros(8, 4, dtype=torch.float64)
        collapsed[:, 0] = 0.97
        collapsed[:, 1:] = 0.01
        # the entropy part alone: 0 for balanced use of clusters, up to 2 log K for collapse
        ref_u = reference_cluster_contrastive(uniform.numpy(), uniform.numpy(), 1.0)
        ref_c = reference_cluster_contrastive(collapsed.numpy(), collapsed.numpy(), 1.0)
        assert cluster_contrastive_loss(uniform, uniform).item() == pytest.approx(ref_u, rel=1e-10)
        assert cluster_contrastive_loss(collapsed, collapsed).item() == pytest.approx(ref_c, rel=1e-10)

    def test_gradcheck(self):
        la, lb = (torch.randn(6, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
        assert torch.autograd.gradcheck(
            lambda a, b: cluster_contrastive_loss(torch.softmax(a, 1), torch.softmax(b, 1), 1.0), (la, lb)
        )

    def test_bf16_autocast_finite(self):
        la = torch.randn(32, 10, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = cluster_contrastive_loss(torch.softmax(la, 1), torch.softmax(la * 2, 1))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(la.grad).all()

    def test_needs_two_clusters(self):
        with pytest.raises(ValueError, match="K >= 2"):
            cluster_contrastive_loss(torch.ones(4, 1), torch.ones(4, 1))
