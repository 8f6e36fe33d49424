"""The contrastive losses against METHOD.md 1.1-1.4 written out as plain float64 loops."""

import math

import numpy as np
import pytest
import torch

from dcl_cluster.losses import (
    DebiasedContrastiveLoss,
    HardNegativeLoss,
    InfoNCELoss,
    debiased_contrastive_loss,
    hard_negative_loss,
    info_nce_loss,
)


def reference_loss(z_a, z_b, t, tau_plus=0.0, beta=0.0):
    """mean_i -log(s_ij / (s_ij + Ng_i)) with one explicit loop per anchor and negative.

    Returns the loss and, per anchor, whether the clamp N exp(-1/t) decided Ng_i.
    """
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    b = n // 2
    n_neg = n - 2
    losses, clamped = [], []
    for i in range(n):
        j = (i + b) % n
        tau = float(tau_plus[i]) if np.ndim(tau_plus) else float(tau_plus)
        pos = math.exp(z[i] @ z[j] / t)
        negs = [math.exp(z[i] @ z[k] / t) for k in range(n) if k not in (i, j)]
        if beta:
            weights = [s**beta for s in negs]
            mean_w = sum(weights) / len(weights)
            neg = sum(w / mean_w * s for w, s in zip(weights, negs, strict=True))
        else:
            neg = sum(negs)
        unclamped = (neg - tau * n_neg * pos) / (1 - tau)
        floor = n_neg * math.exp(-1 / t)
        ng = max(unclamped, floor)
        clamped.append(unclamped < floor)
        losses.append(-math.log(pos / (pos + ng)))
    return sum(losses) / n, np.array(clamped)


def random_views(b, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)


class TestInfoNCE:
    @pytest.mark.parametrize("b", [2, 5, 16])
    @pytest.mark.parametrize("d", [3, 32])
    @pytest.mark.parametrize("t", [0.05, 0.2, 0.5, 1.0])
    def test_matches_formula(self, b, d, t):
        z_a, z_b = random_views(b, d, seed=b * d)
        expected, _ = reference_loss(z_a.numpy(), z_b.numpy(), t)
        assert info_nce_loss(z_a, z_b, t).item() == pytest.approx(expected, rel=1e-10)

    def test_float32_matches_float64_formula(self):
        z_a, z_b = random_views(64, 16, dtype=torch.float32)
        expected, _ = reference_loss(z_a.numpy(), z_b.numpy(), 0.1)
        assert info_nce_loss(z_a, z_b, 0.1).item() == pytest.approx(expected, rel=1e-5)

    def test_gradcheck(self):
        z_a, z_b = random_views(4, 5)
        z_a.requires_grad_(True)
        z_b.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a, b: info_nce_loss(a, b, 0.3), (z_a, z_b))

    def test_module_equals_function(self):
        z_a, z_b = random_views(6, 4)
        expected, _ = reference_loss(z_a.numpy(), z_b.numpy(), 0.2)
        assert InfoNCELoss(temperature=0.2)(z_a, z_b).item() == pytest.approx(expected, rel=1e-10)


class TestDebiased:
    @pytest.mark.parametrize("b", [2, 5, 16])
    @pytest.mark.parametrize("d", [3, 32])
    @pytest.mark.parametrize("t", [0.05, 0.2, 0.5])
    @pytest.mark.parametrize("tau", [0.0, 0.01, 0.1, 0.3])
    def test_matches_formula(self, b, d, t, tau):
        z_a, z_b = random_views(b, d, seed=b + d)
        expected, _ = reference_loss(z_a.numpy(), z_b.numpy(), t, tau)
        got = debiased_contrastive_loss(z_a, z_b, t, tau).item()
        assert got == pytest.approx(expected, rel=1e-9)

    def test_clamp_engaged_on_easy_positives(self):
        # Identical views make s_ij = exp(1/t) large, so neg - tau N s_ij < 0 for many anchors.
        z_a, _ = random_views(8, 16, seed=3)
        z_b = z_a + 0.01 * random_views(8, 16, seed=4)[0]
        expected, clamped = reference_loss(z_a.numpy(), z_b.numpy(), 0.5, 0.3)
        assert clamped.any(), "the fixture must engage the clamp for this test to mean anything"
        assert debiased_contrastive_loss(z_a, z_b, 0.5, 0.3).item() == pytest.approx(expected, rel=1e-9)

    def test_clamp_not_engaged_on_random_views(self):
        z_a, z_b = random_views(8, 16, seed=5)
        expected, clamped = reference_loss(z_a.numpy(), z_b.numpy(), 0.5, 0.1)
        assert not clamped.any()
        assert debiased_contrastive_loss(z_a, z_b, 0.5, 0.1).item() == pytest.approx(expected, rel=1e-9)

    @pytest.mark.parametrize("t", [0.1, 0.5])
    def test_per_anchor_tau_plus(self, t):
        z_a, z_b = random_views(6, 8, seed=7)
        tau = torch.linspace(0.0, 0.6, 12, dtype=torch.float64)
        expected, _ = reference_loss(z_a.numpy(), z_b.numpy(), t, tau.numpy())
        got = debiased_contrastive_loss(z_a, z_b, t, tau).item()
        assert got == pytest.approx(expected, rel=1e-9)

    def test_tau_zero_is_info_nce(self):
        z_a, z_b = random_views(16, 8, seed=11)
        _, clamped = reference_loss(z_a.numpy(), z_b.numpy(), 0.5, 0.0)
        assert not clamped.any()
        torch.testing.assert_close(
            debiased_contrastive_loss(z_a, z_b, 0.5, 0.0), info_nce_loss(z_a, z_b, 0.5)
        )

    def test_swapping_views_leaves_loss_unchanged(self):
        z_a, z_b = random_views(10, 8, seed=12)
        torch.testing.assert_close(
            debiased_contrastive_loss(z_a, z_b, 0.2, 0.1), debiased_contrastive_loss(z_b, z_a, 0.2, 0.1)
        )

    def test_scale_invariant_inputs(self):
        z_a, z_b = random_views(5, 8, seed=13)
        torch.testing.assert_close(
            debiased_contrastive_loss(z_a, z_b), debiased_contrastive_loss(3 * z_a, 0.5 * z_b)
        )

    @pytest.mark.parametrize("tau", [0.1, torch.full((8,), 0.2, dtype=torch.float64)])
    def test_gradcheck(self, tau):
        z_a, z_b = random_views(4, 5, seed=14)
        z_a.requires_grad_(True)
        z_b.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda a, b: debiased_contrastive_loss(a, b, 0.3, tau), (z_a, z_b)
        )

    def test_gradcheck_with_clamp_engaged(self):
        z_a, z_b = random_views(4, 6, seed=3)
        z_b[:2] = z_a[:2] + 0.05 * z_b[:2]  # two easy pairs (clamped), two hard ones (not)
        _, clamped = reference_loss(z_a.numpy(), z_b.numpy(), 0.5, 0.4)
        assert clamped.any() and not clamped.all()
        z_a.requires_grad_(True)
        z_b.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda a, b: debiased_contrastive_loss(a, b, 0.5, 0.4), (z_a, z_b)
        )

    @pytest.mark.parametrize("loss", ["info_nce", "debiased", "hard"])
    def test_bf16_autocast_at_low_temperature_is_finite(self, loss):
        z_a, z_b = random_views(64, 32, seed=15, dtype=torch.float32)
        z_b = z_a + 0.01 * z_b  # near-identical views: the most extreme logits at t = 0.05
        z_a.requires_grad_(True)
        z_b.requires_grad_(True)
        fn = {
            "info_nce": lambda a, b: info_nce_loss(a, b, 0.05),
            "debiased": lambda a, b: debiased_contrastive_loss(a, b, 0.05, 0.1),
            "hard": lambda a, b: hard_negative_loss(a, b, 0.05, 0.1, 1.0),
        }[loss]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = fn(z_a.bfloat16(), z_b.bfloat16())
        value.backward()
        assert torch.isfinite(value)
        assert torch.isfinite(z_a.grad).all() and torch.isfinite(z_b.grad).all()

    def test_float32_low_temperature_matches_float64(self):
        z_a, z_b = random_views(32, 16, seed=16, dtype=torch.float32)
        expected, _ = reference_loss(z_a.numpy(), z_b.numpy(), 0.05, 0.1)
        assert debiased_contrastive_loss(z_a, z_b, 0.05, 0.1).item() == pytest.approx(expected, rel=1e-5)


class TestHardNegative:
    @pytest.mark.parametrize("b", [2, 7])
    @pytest.mark.parametrize("t", [0.1, 0.5])
    @pytest.mark.parametrize("tau", [0.0, 0.1])
    @pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
    def test_matches_formula(self, b, t, tau, beta):
        z_a, z_b = random_views(b, 6, seed=b)
        expected, _ = reference_loss(z_a.numpy(), z_b.numpy(), t, tau, beta)
        got = hard_negative_loss(z_a, z_b, t, tau, beta).item()
        assert got == pytest.approx(expected, rel=1e-9)

    def test_beta_zero_is_debiased(self):
        z_a, z_b = random_views(9, 6, seed=21)
        torch.testing.assert_close(
            hard_negative_loss(z_a, z_b, 0.5, 0.1, beta=0.0),
            debiased_contrastive_loss(z_a, z_b, 0.5, 0.1),
        )

    def test_gradcheck(self):
        z_a, z_b = random_views(4, 5, seed=22)
        z_a.requires_grad_(True)
        z_b.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda a, b: hard_negative_loss(a, b, 0.4, 0.1, 1.0), (z_a, z_b)
        )

    def test_module_with_per_anchor_tau(self):
        z_a, z_b = random_views(3, 4, seed=23)
        tau = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.1, 0.0], dtype=torch.float64)
        expected, _ = reference_loss(z_a.numpy(), z_b.numpy(), 0.5, tau.numpy(), 1.5)
        got = HardNegativeLoss(0.5, 0.1, beta=1.5)(z_a, z_b, tau).item()
        assert got == pytest.approx(expected, rel=1e-9)


class TestErrors:
    @pytest.mark.parametrize("t", [0, -0.5, float("nan"), float("inf")])
    def test_bad_temperature(self, t):
        with pytest.raises(ValueError, match="temperature must be"):
            DebiasedContrastiveLoss(temperature=t)
        with pytest.raises(ValueError, match="temperature must be"):
            info_nce_loss(torch.randn(4, 3), torch.randn(4, 3), temperature=t)

    @pytest.mark.parametrize("tau", [-0.1, 1.0, 1.2])
    def test_bad_tau_plus(self, tau):
        with pytest.raises(ValueError, match=r"tau_plus must be in \[0, 1\), got"):
            DebiasedContrastiveLoss(tau_plus=tau)
        with pytest.raises(ValueError, match=r"tau_plus must be in \[0, 1\)"):
            debiased_contrastive_loss(torch.randn(4, 3), torch.randn(4, 3), tau_plus=tau)

    def test_bad_per_anchor_tau_plus(self):
        z = torch.randn(4, 3)
        with pytest.raises(ValueError, match=r"tau_plus must be in \[0, 1\), got 1.5"):
            debiased_contrastive_loss(z, z, tau_plus=torch.tensor([0.1] * 7 + [1.5]))
        with pytest.raises(ValueError, match=r"shape \(2B,\) = \(8,\)"):
            debiased_contrastive_loss(z, z, tau_plus=torch.full((4,), 0.1))

    @pytest.mark.parametrize("beta", [-1.0, float("nan")])
    def test_bad_beta(self, beta):
        with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
            HardNegativeLoss(beta=beta)

    def test_mismatched_shapes(self):
        with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
            info_nce_loss(torch.randn(4, 3), torch.randn(5, 3))

    def test_batch_of_one(self):
        with pytest.raises(ValueError, match="B=1"):
            debiased_contrastive_loss(torch.randn(1, 3), torch.randn(1, 3))


def test_second_backward_with_retained_graph_gives_the_same_gradients():
    # the fused backward turns its saved logit buffer into the softmax in place; a second
    # backward must rebuild it rather than reuse it
    z_a, z_b = random_views(5, 4, seed=31)
    z_a.requires_grad_(True)
    loss = debiased_contrastive_loss(z_a, z_b, 0.2, 0.1)
    (first,) = torch.autograd.grad(loss, z_a, retain_graph=True)
    (second,) = torch.autograd.grad(loss, z_a)
    torch.testing.assert_close(first, second)
