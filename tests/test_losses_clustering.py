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


def reference_target(q, size_exponent):
    f = q.sum(axis=0)
    p = q**2 / f**size_exponent
    return p / p.sum(axis=1, keepdims=True)


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
