"""The benchmark scripts still run (tiny sizes); their numbers live in docs/benchmarks.md."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_speed_benchmark_smoke():
    import speed

    results = speed.main(["--smoke"])
    assert {"loss", "kmeans", "metrics", "throughput"} <= set(results)
    assert results["metrics"][0]["nmi_diff"] < 1e-6 and results["metrics"][0]["ari_diff"] < 1e-6
    assert 0.99 < results["kmeans"][0]["inertia_ratio"] < 1.1
    assert all(row["module_2views_img_s"] > 0 for row in results["throughput"])


def test_loader_throughput_smoke():
    import loader_throughput

    loader_throughput.main(["--smoke"])


def test_quality_benchmark_smoke():
    import quality

    rows = quality.main(["--smoke"])
    floor, run = rows
    assert floor["preset"].startswith("k-means") and run["preset"] == "dcl_cluster"
    for split in ("train", "test"):
        assert 0 <= run[split]["nmi"] <= 1 and len(run[split]["per_class_recall"]) == 10
