"""SCAN's losses (METHOD.md 2.6) against the formulas written out in float64, sample by sample."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcl_cluster.losses import confident_self_label_loss, scan_loss, tensor_value_checks


def logits_of(b, k, seed, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, k, generator=g, dtype=dtype)


def softmax_list(row):
    z = [math.exp(v - max(row)) for v in row]
    return [v / sum(z) for v in z]


def reference_scan(anchor, neighbor, w, prior=None):
    anchor, neighbor = np.asarray(anchor, np.float64), np.asarray(neighbor, np.float64)
    b, k = anchor.shape
    pa = [softmax_list(r) for r in anchor]
    pn = [softmax_list(r) for r in neighbor]
    consistency = -sum(math.log(sum(pa[i][j] * pn[i][j] for j in range(k))) for i in range(b)) / b
    mean = [sum(pa[i][j] for i in range(b)) / b for j in range(k)]
    if prior is None:
        entropy = -sum(m * math.log(m) for m in mean if m > 0)
        return consistency - w * entropy
    kl = sum(m * math.log(m / float(p)) for m, p in zip(mean, prior, strict=True) if m > 0)
    return consistency + w * kl


def reference_self_label(weak, strong, threshold, class_balance):
    weak, strong = np.asarray(weak, np.float64), np.asarray(strong, np.float64)
    rows = []  # (target, cross-entropy) of the confident rows
    for w_row, s_row in zip(weak, strong, strict=True):
        p = softmax_list(w_row)
        if max(p) > threshold:
            target = int(np.argmax(w_row))
            log_z = math.log(sum(math.exp(v) for v in s_row))
            rows.append((target, log_z - s_row[target]))
    if not rows:
        return 0.0
    counts = {c: sum(1 for t, _ in rows if t == c) for c, _ in rows}
    weight = {c: len(rows) / n for c, n in counts.items()} if class_balance else dict.fromkeys(counts, 1.0)
    return sum(weight[t] * ce for t, ce in rows) / sum(weight[t] for t, _ in rows)


class TestScanLoss:
    @pytest.mark.parametrize("w", [0.0, 1.0, 5.0])
    @pytest.mark.parametrize("b,k", [(4, 2), (16, 5), (33, 10)])
    def test_matches_formula(self, w, b, k):
        a, n = logits_of(b, k, seed=b + k), logits_of(b, k, seed=b * k)
        assert scan_loss(a, n, w).item() == pytest.approx(reference_scan(a.numpy(), n.numpy(), w), rel=1e-10)

    @pytest.mark.parametrize("w", [0.5, 5.0])
    @pytest.mark.parametrize("b,k", [(8, 3), (20, 6)])
    def test_kl_to_prior_matches_formula(self, w, b, k):
        a, n = logits_of(b, k, seed=b), logits_of(b, k, seed=k)
        prior = torch.softmax(torch.arange(k, dtype=torch.float64) * -0.7, dim=0)  # long-tailed
        expected = reference_scan(a.numpy(), n.numpy(), w, prior.numpy())
        assert scan_loss(a, n, w, prior=prior).item() == pytest.approx(expected, rel=1e-10)

    @pytest.mark.parametrize("k", [2, 7])
    def test_uniform_prior_is_the_entropy_form_plus_w_log_k(self, k):
        a, n = logits_of(12, k, seed=3), logits_of(12, k, seed=4)
        uniform = torch.full((k,), 1 / k, dtype=torch.float64)
        with_prior = scan_loss(a, n, 5.0, prior=uniform).item()
        assert with_prior == pytest.approx(scan_loss(a, n, 5.0).item() + 5.0 * math.log(k), rel=1e-12)

    def test_long_tailed_prior_prefers_long_tailed_cluster_sizes(self):
        # 6 samples on cluster 0, 2 on cluster 1: the entropy form wants 4/4, a 3:1 prior does not
        a = torch.tensor([[4.0, 0.0]] * 6 + [[0.0, 4.0]] * 2, dtype=torch.float64)
        balanced = torch.tensor([[4.0, 0.0]] * 4 + [[0.0, 4.0]] * 4, dtype=torch.float64)
        prior = torch.tensor([0.75, 0.25], dtype=torch.float64)
        assert scan_loss(a, a, 5.0) > scan_loss(balanced, balanced, 5.0)
        assert scan_loss(a, a, 5.0, prior=prior) < scan_loss(balanced, balanced, 5.0, prior=prior)

    @pytest.mark.parametrize("use_prior", [False, True])
    def test_gradcheck(self, use_prior):
        a, n = (logits_of(5, 3, seed=s).requires_grad_(True) for s in (5, 6))
        prior = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64) if use_prior else None
        assert torch.autograd.gradcheck(lambda x, y: scan_loss(x, y, 2.0, prior=prior), (a, n))

    def test_anchor_and_neighbour_both_get_gradients(self):
        a, n = (logits_of(8, 4, seed=s).requires_grad_(True) for s in (7, 8))
        scan_loss(a, n, entropy_weight=0.0).backward()
        assert a.grad.abs().sum() > 1e-3 and n.grad.abs().sum() > 1e-3

    def test_confident_disagreement_stays_finite_with_gradient(self):
        a = torch.tensor([[100.0, -100.0, 0.0], [0.0, 100.0, -100.0]], requires_grad=True)
        n = torch.tensor([[-100.0, 100.0, 0.0], [100.0, 0.0, -100.0]], requires_grad=True)
        loss = scan_loss(a, n)
        loss.backward()
        assert torch.isfinite(loss) and loss > 50
        assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0.5

    def test_bf16_autocast_matches_float32(self):
        a, n = (logits_of(32, 10, seed=s, dtype=torch.float32).requires_grad_(True) for s in (9, 10))
        prior = torch.softmax(-0.3 * torch.arange(10.0), dim=0)
        for p in (None, prior):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = scan_loss(a.bfloat16(), n.bfloat16(), prior=p)
            loss.backward()
            assert loss.dtype == torch.float32 and torch.isfinite(a.grad).all()
            assert loss.item() == pytest.approx(scan_loss(a, n, prior=p).item(), rel=3e-2, abs=3e-2)

    def test_errors(self):
        a = logits_of(4, 3, seed=0)
        with pytest.raises(ValueError, match="entropy_weight must be a finite number >= 0, got -1"):
            scan_loss(a, a, entropy_weight=-1)
        with pytest.raises(ValueError, match=r"same shape \(B, K\) .*got \(4, 3\) and \(5, 3\)"):
            scan_loss(a, logits_of(5, 3, seed=0))
        with pytest.raises(ValueError, match=r"K >= 2"):
            scan_loss(a[:, :1], a[:, :1])
        for bad in (torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.4, 0.3]), torch.tensor([1.0, 0.5, -0.5])):
            with pytest.raises(ValueError, match="prior must be a probability vector of 3 positive numbers"):
                scan_loss(a, a, prior=bad)

    def test_prior_values_are_not_read_when_value_checks_are_off(self):
        a = logits_of(4, 3, seed=0)
        unnormalised = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
        with tensor_value_checks(False):
            got = scan_loss(a, a, 1.0, prior=unnormalised)  # no host sync: the prior is normalised, not checked
            with pytest.raises(ValueError, match="prior must be a probability vector of 3"):
                scan_loss(a, a, prior=torch.ones(2))  # shapes are always checked
        assert got.item() == pytest.approx(scan_loss(a, a, 1.0, prior=unnormalised / 4).item(), rel=1e-12)


class TestConfidentSelfLabel:
    @pytest.mark.parametrize("class_balance", [True, False])
    @pytest.mark.parametrize("threshold", [0.5, 0.9, 0.99])
    @pytest.mark.parametrize("b,k", [(16, 3), (64, 10)])
    def test_matches_formula(self, class_balance, threshold, b, k):
        weak, strong = logits_of(b, k, seed=b, scale=4.0), logits_of(b, k, seed=k)
        expected = reference_self_label(weak.numpy(), strong.numpy(), threshold, class_balance)
        assert expected != 0.0  # some confident rows in every case
        got = confident_self_label_loss(weak, strong, threshold, class_balance).item()
        assert got == pytest.approx(expected, rel=1e-10)

    def test_equals_torch_weighted_cross_entropy_on_the_confident_rows(self):
        weak, strong = logits_of(40, 5, seed=11, scale=4.0), logits_of(40, 5, seed=12)
        confidence, target = torch.softmax(weak, 1).max(1)
        mask = confidence > 0.9
        share = torch.bincount(target[mask], minlength=5).double() / mask.sum()
        weight = torch.where(share > 0, 1 / share, torch.zeros_like(share))
        expected = F.cross_entropy(strong[mask], target[mask], weight=weight)
        torch.testing.assert_close(confident_self_label_loss(weak, strong, 0.9), expected)

    def test_class_weights_by_hand(self):
        # three confident rows of class 0 and one of class 1: w = (4/3, 4), so each class counts half
        weak = torch.tensor([[9.0, 0.0]] * 3 + [[0.0, 9.0], [0.1, 0.0]], dtype=torch.float64)
        strong = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0], [3.0, 0.0], [9.0, 0.0]], dtype=torch.float64)
        ce = [math.log(1 + math.exp(-1.0)), math.log(2.0), math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(3.0))]
        balanced = (4 / 3 * (ce[0] + ce[1] + ce[2]) + 4 * ce[3]) / (4 / 3 * 3 + 4)
        assert balanced == pytest.approx(0.5 * (ce[0] + ce[1] + ce[2]) / 3 + 0.5 * ce[3])
        assert confident_self_label_loss(weak, strong, 0.99).item() == pytest.approx(balanced, rel=1e-12)
        plain = sum(ce) / 4
        assert confident_self_label_loss(weak, strong, 0.99, class_balance=False).item() == pytest.approx(plain)

    def test_no_confident_row_gives_a_zero_connected_to_strong_logits(self):
        weak = torch.zeros(6, 4)
        strong = logits_of(6, 4, seed=13, dtype=torch.float32).requires_grad_(True)
        loss = confident_self_label_loss(weak, strong)
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        torch.testing.assert_close(strong.grad, torch.zeros(6, 4))

    def test_gradient_reaches_only_the_strong_view(self):
        weak = logits_of(10, 3, seed=14, scale=6.0).requires_grad_(True)
        strong = logits_of(10, 3, seed=15).requires_grad_(True)
        confident_self_label_loss(weak, strong, 0.9).backward()
        assert weak.grad is None and strong.grad.abs().sum() > 0

    def test_bf16_autocast_matches_float32(self):
        weak = logits_of(64, 10, seed=16, scale=1.0, dtype=torch.float32)
        weak[torch.arange(64), torch.arange(64) % 10] += 12.0 * (torch.arange(64) % 2)  # half clearly confident
        strong = logits_of(64, 10, seed=17, dtype=torch.float32).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = confident_self_label_loss(weak.bfloat16(), strong.bfloat16())
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(strong.grad).all()
        assert loss.item() == pytest.approx(confident_self_label_loss(weak, strong).item(), rel=3e-2)

    def test_errors(self):
        x = logits_of(4, 3, seed=0)
        for bad in (0.0, 1.0, 1.5):
            with pytest.raises(ValueError, match=rf"threshold must be a number in \(0, 1\), got {bad}"):
                confident_self_label_loss(x, x, threshold=bad)
        with pytest.raises(ValueError, match=r"weak_logits and strong_logits must have the same shape"):
            confident_self_label_loss(x, logits_of(4, 2, seed=0))
