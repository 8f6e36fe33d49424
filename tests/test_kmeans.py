"""torch KMeans against scikit-learn and direct computations."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

from dcl_cluster.cluster import KMeans


def _blobs(n=3000, d=16, k=8, seed=0, std=2.0):
    x, y = make_blobs(n, d, centers=k, cluster_std=std, random_state=seed)
    return x.astype(np.float32), y


@pytest.mark.parametrize("k,std", [(5, 1.0), (20, 3.0), (50, 6.0)])
def test_inertia_within_one_percent_of_scikit_learn(k, std):
    x, _ = _blobs(k=k, std=std, seed=k)
    ours = KMeans(k, n_init=3, seed=0).fit(x)
    ref = SKKMeans(k, n_init=3, random_state=0).fit(x)
    assert ours.inertia_ <= 1.01 * ref.inertia_
    # inertia_ is the true sum of squared distances to the assigned centres
    direct = ((x - ours.cluster_centers_.numpy()[ours.labels_.numpy()]) ** 2).sum()
    assert ours.inertia_ == pytest.approx(float(direct), rel=1e-5)


def test_same_initial_centres_give_scikit_learns_result():
    x, _ = _blobs(k=6, std=4.0, seed=1)
    init = x[:6].copy()
    ours = KMeans(6, init=init, max_iter=300).fit(x)
    ref = SKKMeans(6, init=init, n_init=1, max_iter=300).fit(x)
    np.testing.assert_allclose(ours.cluster_centers_.numpy(), ref.cluster_centers_, atol=1e-3)
    assert (ours.labels_.numpy() == ref.labels_).all()
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)


def test_predict_is_the_nearest_centre():
    x, _ = _blobs(seed=2)
    km = KMeans(8).fit(torch.from_numpy(x))
    assert torch.equal(km.predict(x), km.labels_)
    new = np.random.default_rng(0).normal(0, 10, (500, 16)).astype(np.float32)
    dists = ((new[:, None, :] - km.cluster_centers_.numpy()[None]) ** 2).sum(-1)
    assert (km.predict(new).numpy() == dists.argmin(1)).mean() > 0.995  # float ties aside
    assert torch.equal(KMeans(8).fit_predict(x), km.labels_)


def test_far_from_origin_data_keeps_accurate_inertia():
    x, _ = _blobs(k=4, seed=3)
    km = KMeans(4, seed=0).fit(x + 1000.0)
    ref = KMeans(4, seed=0).fit(x)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-4)


def test_cosine_mode_is_spherical_kmeans():
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(5, 10, generator=g), dim=1)
    x = (directions.repeat(100, 1) + 0.2 * torch.randn(500, 10, generator=g))
    x = x * torch.rand(500, 1, generator=g) * 10  # norms must not matter
    km = KMeans(5, metric="cosine").fit(x)
    unit = torch.nn.functional.normalize(x, dim=1)
    assert torch.allclose(km.cluster_centers_.norm(dim=1), torch.ones(5), atol=1e-5)
    cos = unit @ km.cluster_centers_.T
    assert torch.equal(km.labels_, cos.argmax(1))
    assert km.inertia_ == pytest.approx(float((1 - cos.max(1).values).sum()), rel=1e-4)
    # each centre is the normalised mean of its members (the spherical k-means fixpoint)
    for c in range(5):
        mean = torch.nn.functional.normalize(unit[km.labels_ == c].mean(0), dim=0)
        assert torch.allclose(mean, km.cluster_centers_[c], atol=1e-4)


def test_empty_clusters_move_to_the_farthest_points():
    x = torch.cat([torch.zeros(10, 2), torch.ones(10, 2), torch.tensor([[5.0, 5.0]])])
    init = torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0]])
    km = KMeans(3, init=init).fit(x)
    assert km.inertia_ == pytest.approx(0.0, abs=1e-5)
    assert sorted(km.cluster_centers_.sum(1).tolist()) == pytest.approx([0.0, 2.0, 10.0])


def test_float64_and_numpy_inputs_are_kept_in_float64():
    x, _ = _blobs(n=300, k=3)
    km = KMeans(3).fit(x.astype(np.float64))
    assert km.cluster_centers_.dtype == torch.float64


def test_clear_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"n_clusters=11 must be <= the number of samples, "
                                         r"got 10 samples"):
        KMeans(11).fit(x)
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 1, got 0"):
        KMeans(0)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf in 1 rows"):
        KMeans(2).fit(x)
    with pytest.raises(ValueError, match="metric must be one of"):
        KMeans(2, metric="manhattan")
    with pytest.raises(RuntimeError, match="before fit"):
        KMeans(2).predict(torch.randn(4, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_inertia():
    x, _ = _blobs(k=10, seed=4)
    cpu = KMeans(10).fit(x)
    gpu = KMeans(10).fit(torch.from_numpy(x).cuda())
    assert gpu.cluster_centers_.is_cuda and gpu.labels_.is_cuda
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-2)
