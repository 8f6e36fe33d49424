"""The transport section of benchmarks/speed.py: the paper's loop as described (checked against
the package's solver here, not timed) and the table write_docs makes of its rows."""

import torch

from benchmarks.speed import bench_transport, p2ot_paper_loop
from benchmarks.write_docs import transport_table
from dcl_cluster.losses import partial_ot_targets


def test_the_papers_loop_and_ours_give_the_same_plan():
    logits = torch.nn.functional.normalize(torch.randn(300, 7, generator=torch.Generator().manual_seed(0)), dim=1) * 10
    for rho in (0.1, 0.5, 1.0):
        theirs, iters = p2ot_paper_loop(logits, rho)
        assert 1 < iters <= 1000
        torch.testing.assert_close(partial_ot_targets(logits, rho).double(), theirs, atol=1e-4, rtol=0)
        assert abs(float(theirs.sum()) - rho * 300) < 1e-3


def test_a_transport_row_and_its_table():
    (row,) = bench_transport([(128, 5, 0.5)], repeats=1)
    assert row["max_plan_diff"] < 1e-4 and row["iterations"] > 1
    assert row["ours_to_fixed_point"] < 1e-6 and row["paper_to_fixed_point"] < 1e-4
    # the mat-vecs counted are the solver's iterations: a check every 16, so a multiple of 16 here
    assert row["ours_iterations"] % 16 == 0 and 16 <= row["ours_iterations"] <= 1000
    assert row["speedup"] == row["paper_s"] / row["ours_s"] and row["ours_over_floor"] == row["ours_s"] / row["floor_s"]
    lines = transport_table([{"N": 20000, "K": 100, "rho": 0.1, "iterations": 412, "ours_iterations": 96,
                              "ours_s": 0.5, "paper_s": 2.0, "speedup": 4.0, "floor_s": 0.25, "ours_over_floor": 2.0,
                              "ours_over_floor_at_ours": 8.58, "max_plan_diff": 3.2e-07,
                              "ours_to_fixed_point": 1e-8, "paper_to_fixed_point": 6e-4}])
    assert lines[2] == ("| 20,000 x 100 | 0.1 | 412 / 96 | 500.0 | 2000.0 | 4.00 | 250.0 | 2.00 | 8.58 | 3.2e-07 "
                        "| 1.0e-08 / 6.0e-04 |")
