"""benchmarks/estimate_k.py --real: its mixes and table, on hand-made rows and a generated pool;
no benchmark runs (the real one needs the frozen lab's feature cache)."""

import numpy as np
import torch

from benchmarks import estimate_k as bench


def test_the_bar_is_20_percent_or_one_cluster_at_small_k():
    assert [bench.within(k, 5) for k in (3, 4, 5, 6, 7)] == [False, True, True, True, False]
    assert [bench.within(k, 10) for k in (7, 8, 12, 13)] == [False, True, True, False]


def test_mix_sizes_are_the_documented_profiles():
    assert bench.mix_sizes(5, "balanced") == [1000] * 5 and bench.mix_sizes(10, "balanced") == [500] * 10
    assert bench.mix_sizes(5, "if10")[0] == 1500 and bench.mix_sizes(5, "if10")[-1] == 150
    assert bench.mix_sizes(10, "if100")[0] == 3000 and bench.mix_sizes(10, "if100")[-1] == 30
    assert len(bench.mixes()) == 12 and len(set(bench.mixes())) == 12


def test_a_mix_draws_distinct_rows_the_larger_counts_to_the_larger_classes():
    y = np.repeat(np.arange(10), [6000 - 400 * c for c in range(10)])
    x = torch.arange(len(y), dtype=torch.float32)[:, None]  # each row's own index
    features, labels = bench.draw_mix(x, y, 10, "if100", 0)
    assert np.bincount(labels).tolist() == bench.mix_sizes(10, "if100")  # class 0 is the largest pool
    assert len(torch.unique(features)) == len(labels) and np.array_equal(y[features[:, 0].long()], labels)
    five, labels5 = bench.draw_mix(x, y, 5, "balanced", 1)
    assert sorted(np.bincount(labels5)[np.unique(labels5)].tolist()) == [1000] * 5


def test_the_table_counts_the_hits_of_each_estimator_and_the_mean_time():
    def row(classes, ks, seconds):
        return {"classes": classes, "profile": "if10", "subsample": 0, "n": 100, "best_silhouette": 0.06,
                "k": dict(zip(bench.ESTIMATORS, ks, strict=True)),
                "seconds": dict(zip(bench.ESTIMATORS, seconds, strict=True))}
    rows = [row(5, (5, 3, 6, 20, 9), (1, 1, 4, 4, 2)), row(10, (8, 2, 13, 12, 10), (3, 3, 6, 6, 1))]
    lines = bench.real_table(rows)
    assert lines[2].endswith("| 5 ✓ | 3 | 6 ✓ | 20 | 9 |")
    assert lines[3].endswith("| 8 ✓ | 2 | 13 | 12 ✓ | 10 ✓ |")
    assert lines[-2].endswith("| **2/2** | **0/2** | **1/2** | **1/2** | **1/2** |")
    assert lines[-1].endswith("| 2.0 s | 2.0 s | 5.0 s | 5.0 s | 1.5 s |")
