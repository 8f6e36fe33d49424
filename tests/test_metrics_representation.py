"""kNN, alignment, uniformity and RankMe against direct computations."""

import math

import numpy as np
import pytest
import torch

from dcl_cluster.metrics import alignment, knn_predict, rankme, uniformity


def _reference_knn(query, bank, labels, num_classes, k, t):
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    preds = []
    for row in q:
        sim = b @ row
        top = np.argsort(-sim, kind="stable")[:k]
        votes = np.zeros(num_classes)
        for j in top:
            votes[labels[j]] += math.exp(sim[j] / t)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


@pytest.mark.parametrize("k,t", [(1, 0.5), (7, 0.5), (25, 0.1), (500, 0.5)])
def test_weighted_knn_equals_reference(k, t):
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(300, 16, generator=g), torch.randn(90, 16, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    got = knn_predict(query, bank, labels, num_classes=5, k=k, temperature=t, chunk_size=32)
    ref = _reference_knn(query.double().numpy(), bank.double().numpy(), labels.numpy(), 5,
                         min(k, 300), t)
    assert (got.numpy() == ref).mean() >= 0.98  # float32 vs float64 near-ties aside


def test_knn_separates_clean_clusters():
    centres = torch.eye(4, 8) * 5
    y = torch.arange(400) % 4
    x = centres[y] + 0.3 * torch.randn(400, 8)
    assert (knn_predict(x[:100], x[100:], y[100:]) == y[:100]).all()


def test_alignment_and_uniformity_equal_wang_isola_formulas():
    z_a, z_b = torch.randn(200, 12), torch.randn(200, 12)
    na, nb = torch.nn.functional.normalize(z_a, dim=1), torch.nn.functional.normalize(z_b, dim=1)
    assert float(alignment(z_a, z_b)) == pytest.approx(
        float((na - nb).norm(dim=1).pow(2).mean()), rel=1e-5)
    expected = torch.pdist(na, p=2).pow(2).mul(-2).exp().mean().log()
    assert float(uniformity(z_a, chunk_size=33)) == pytest.approx(float(expected), abs=1e-5)


def test_rankme_from_known_singular_values():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((50, 6)))
    v, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    s = np.array([5.0, 3.0, 1.0, 0.5, 0.1, 0.0])
    z = torch.as_tensor(u @ np.diag(s) @ v.T)
    p = s / s.sum() + 1e-7
    assert float(rankme(z)) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-5)
    assert float(rankme(torch.ones(20, 4))) == pytest.approx(1.0, abs=1e-3)  # collapse
