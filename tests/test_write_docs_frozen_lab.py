"""benchmarks/write_docs.py's frozen-feature lab section, on hand-made rows with hand-computed
numbers (mean ± sample std, ddof=1 as ``_mean_std``); no benchmark runs."""

import copy

import numpy as np

from benchmarks import write_docs

KEYS = ("nmi", "balanced_acc", "macro_f1", "head_acc", "medium_acc", "tail_acc", "largest_smallest", "size_kl",
        "empty_clusters")

# per method and split: one tuple per key above, its values on seeds 0, 1, 2
VALUES = {
    ("kmeans", "train"): ((.40, .42, .44), (.50, .52, .54), (.45, .48, .51), (.70, .74, .78), (.50, .55, .60),
                          (.20, .26, .32), (20.0, 22.0, 24.0), (.50, .60, .70), (0, 0, 0)),
    ("kmeans", "test"): ((.30, .31, .32), (.35, .37, .39), (.33, .36, .39), (.80, .84, .88), (.40, .45, .50),
                         (.10, .16, .22), (2.0, 3.0, 4.0), (.05, .06, .07), (0, 0, 0)),
    ("zz_candidate", "train"): ((.41, .44, .47), (.60, .64, .68), (.55, .60, .65), (.60, .66, .72), (.52, .59, .66),
                             (.25, .46, .22), (8.0, None, 12.0), (.30, .30, .60), (0, 2, 0)),
    ("zz_candidate", "test"): ((.33, .35, .37), (.36, .38, .43), (.34, .38, .42), (.70, .75, .80), (.41, .47, .53),
                            (.11, .18, .25), (4.0, 5.0, 9.0), (.02, .03, .07), (0, 0, 0)),
}
WALL = {"kmeans": (3.0, 4.0, 5.0), "zz_candidate": (10.0, 20.0, 60.0)}


def row(method, seed, train, test, wall, factor=100.0, encoder="efficientnet_lite0"):
    return {"encoder": encoder, "image_size": 128, "method": method, "dataset": "cifar10",
            "imbalance_factor": factor, "seed": seed, "data_seed": 0, "epochs": None, "wall_s": wall,
            "train_class_counts": [5000, 50],
            "train": dict(zip(KEYS, train, strict=True)), "test": dict(zip(KEYS, test, strict=True))}


def make_rows():
    lone = (.9, .9, .9, .9, .9, .9, None, .9, 3)  # an unknown method, on a seed no other method has
    rows = [row("zz_new", 7, lone, lone, 1.0)]  # seen first, yet after the known kmeans
    for method in ("zz_candidate", "kmeans"):
        for seed in range(3):
            train, test = ([v[seed] for v in VALUES[(method, split)]] for split in ("train", "test"))
            rows.append(row(method, seed, train, test, WALL[method][seed]))
    other = (.1,) * 6 + (1.5, .1, 0)
    rows.append(row("kmeans", 0, other, other, 99.0, factor=10.0))  # another IF: never in IF 100's tables
    rows.append(row("kmeans", 5, other, other, 99.0, encoder="resnet18"))  # another encoder: left out
    return rows


def test_hand_numbers_use_the_sample_std_as_mean_std_does():
    # the paired train bal. ACC differences of zz_candidate - kmeans: .10, .12, .14
    diffs = np.array([.60, .64, .68]) - np.array([.50, .52, .54])
    assert f"{diffs.mean():+.3f} ± {np.std(diffs, ddof=1):.3f}" == write_docs._mean_std(list(diffs), sign="+")
    assert write_docs._mean_std(list(diffs), sign="+") == "+0.120 ± 0.020"


def test_table_per_split_with_empty_clusters_and_method_order():
    rows = make_rows()
    train = write_docs.frozen_lab_table(rows, 100, "train")
    assert train[0].startswith("| method | seeds | NMI | bal. ACC | macro F1 | head ACC | medium ACC | tail ACC |")
    assert [line.split(" | ")[0] for line in train[2:]] == ["| `kmeans`", "| `zz_new`", "| `zz_candidate`"]
    # kmeans: 20, 22, 24 -> 22.0 ± 2.0; KL .5, .6, .7 -> 0.600 ± 0.100; wall (3 + 4 + 5) / 3 = 4.0
    assert train[2] == ("| `kmeans` | 3 | 0.420 ± 0.020 | 0.520 ± 0.020 | 0.480 ± 0.030 | 0.740 ± 0.040 | "
                        "0.550 ± 0.050 | 0.260 ± 0.060 | 22.0 ± 2.0 | 0.600 ± 0.100 | 4.0 |")
    # only seed: no std; its ratio None with 3 empty clusters
    assert train[3] == ("| `zz_new` | 1 | 0.900 | 0.900 | 0.900 | 0.900 | 0.900 | 0.900 | "
                        "empty in 1 of 1 seeds (3 clusters) | 0.900 | 1.0 |")
    # tail .25, .46, .22: mean .31, deviations -.06, .15, -.09 -> sqrt(.0342 / 2) = 0.131
    # ratio 8, None, 12: 10.0 ± sqrt(8) = 2.8 over the 2 seeds, seed 1 had 2 empty clusters
    # KL .3, .3, .6: mean .4, deviations -.1, -.1, .2 -> sqrt(.06 / 2) = 0.173; wall (10 + 20 + 60) / 3 = 30.0
    assert train[4] == ("| `zz_candidate` | 3 | 0.440 ± 0.030 | 0.640 ± 0.040 | 0.600 ± 0.050 | 0.660 ± 0.060 | "
                        "0.590 ± 0.070 | 0.310 ± 0.131 | 10.0 ± 2.8 over 2, empty in 1 of 3 seeds (2 clusters) | "
                        "0.400 ± 0.173 | 30.0 |")
    test = write_docs.frozen_lab_table(rows, 100.0, "test")
    assert test[2] == ("| `kmeans` | 3 | 0.310 ± 0.010 | 0.370 ± 0.020 | 0.360 ± 0.030 | 0.840 ± 0.040 | "
                       "0.450 ± 0.050 | 0.160 ± 0.060 | 3.0 ± 1.0 | 0.060 ± 0.010 | 4.0 |")
    # bal. .36, .38, .43: mean .39, deviations -.03, -.01, .04 -> sqrt(.0026 / 2) = 0.036
    # ratio 4, 5, 9: mean 6, deviations -2, -1, 3 -> sqrt(14 / 2) = 2.6; KL .02, .03, .07 -> 0.040 ± 0.026
    assert test[4] == ("| `zz_candidate` | 3 | 0.350 ± 0.020 | 0.390 ± 0.036 | 0.380 ± 0.040 | 0.750 ± 0.050 | "
                       "0.470 ± 0.060 | 0.180 ± 0.070 | 6.0 ± 2.6 | 0.040 ± 0.026 | 30.0 |")
    assert write_docs.frozen_lab_table(rows, 10, "train")[2].startswith("| `kmeans` | 1 | 0.100 |")
    assert len(write_docs.frozen_lab_table(rows, 50, "train")) == 2


def test_paired_skips_a_method_without_a_shared_seed():
    rows = make_rows()
    train = write_docs.frozen_lab_paired(rows, 100)
    assert train[0] == "| method − `kmeans` | seeds | NMI | bal. ACC | tail ACC | size-KL | beyond one std |"
    # NMI diffs .01, .02, .03 -> +0.020 ± 0.010; bal. .10, .12, .14 -> +0.120 ± 0.020 (beyond one std)
    # tail .05, .20, -.10 -> +0.050 ± 0.150 (not beyond); KL -.2, -.3, -.1 -> -0.200 ± 0.100
    assert train[2:] == ["| `zz_candidate` | 3 | +0.020 ± 0.010 | +0.120 ± 0.020 | +0.050 ± 0.150 | "
                         "-0.200 ± 0.100 | bal. ACC |"]  # zz_new (seed 7 only) skipped
    test = write_docs.frozen_lab_paired(rows, 100, split="test")
    # NMI .03, .04, .05; bal. .01, .01, .04 -> +0.020 ± 0.017; tail .01, .02, .03; KL -.03, -.03, 0
    assert test[2:] == ["| `zz_candidate` | 3 | +0.040 ± 0.010 | +0.020 ± 0.017 | +0.020 ± 0.010 | "
                        "-0.020 ± 0.017 | bal. ACC, tail ACC |"]
    assert write_docs.frozen_lab_paired(rows, 10)[2:] == []  # kmeans alone at IF 10


def test_goal_not_met_then_met():
    rows = make_rows()
    lines = write_docs.frozen_lab_goal(rows, "zz_candidate")
    assert lines[0] == "`zz_candidate` at IF 100, training set, against `kmeans` on 3 shared seeds:"
    assert lines[2].endswith(": +0.120 ± 0.020: yes") and "bal. ACC" in lines[2]
    assert lines[3].endswith(": +0.050 ± 0.150: no") and "tail ACC" in lines[3]
    assert lines[4].endswith("10.0 ± 2.8 over 2, empty in 1 of 3 seeds (2 clusters): no")  # a None fails
    assert lines[5].endswith(": 0.400 vs 0.600: yes")
    assert lines[-1] == "**Goal not met** (2 of 4 conditions)."

    for r in rows:  # tail .30, .38, .46: diffs .10, .12, .14; no empty cluster: ratio 8, 10, 12 -> mean 10 >= 10
        if r["method"] == "zz_candidate" and r["imbalance_factor"] == 100:
            r["train"]["tail_acc"] = (.30, .38, .46)[r["seed"]]
            r["train"]["largest_smallest"], r["train"]["empty_clusters"] = (8.0, 10.0, 12.0)[r["seed"]], 0
    lines = write_docs.frozen_lab_goal(rows, "zz_candidate", factor=100)
    assert lines[3].endswith(": +0.120 ± 0.020: yes") and lines[4].endswith(": 10.0 ± 2.0: yes")
    assert lines[-1] == "**Goal met** (4 of 4 conditions)."

    worse = copy.deepcopy(rows)  # a higher size-KL than kmeans' alone fails the goal
    for r in worse:
        if r["method"] == "zz_candidate":
            r["train"]["size_kl"] = 1.0
    assert write_docs.frozen_lab_goal(worse, "zz_candidate")[-1] == "**Goal not met** (3 of 4 conditions)."
    missing = write_docs.frozen_lab_goal(rows, "no_such_method")
    assert missing[-1] == "**Goal not met** (0 of 4 conditions)."


def test_section_fills_only_the_marked_blocks(monkeypatch):
    monkeypatch.setattr(write_docs, "FROZEN_GOAL_METHODS", ("zz_candidate", "absent"))
    rows = make_rows()
    page = ("intro\n<!-- frozen-if100-train:start -->\nold\n<!-- frozen-if100-train:end -->\n"
            "<!-- frozen-goal:start -->\nold\n<!-- frozen-goal:end -->\n")
    out = write_docs.frozen_section(page, rows)
    assert "old" not in out and "| `zz_candidate` | 3 | 0.440 ± 0.030" in out and "**Goal not met**" in out
    assert write_docs.frozen_section("no markers\n", rows) == "no markers\n"


def test_resolution_and_tail_tables():
    from benchmarks.write_docs import frozen_resolution_table, frozen_tail_table

    res = frozen_resolution_table([{"image_size": 160, "normalization": "lite", "images_per_s": 95.4,
                                    "nmi_mean": 0.41, "nmi_std": 0.012, "acc_mean": 0.5, "acc_std": 0.02,
                                    "balanced_acc_mean": 0.49, "balanced_acc_std": 0.021}])
    assert res[2] == "| 160 | lite | 95 | 0.410 ± 0.012 | 0.500 ± 0.020 | 0.490 ± 0.021 |"
    row = {"imbalance_factor": 100.0, "class_counts": [5000, 50], "knn10_same_class": [0.881, 0.12],
           "own_majority_share_100": [0.9, 0.0], "own_majority_clusters_100": [40, 0]}
    tail = frozen_tail_table([row])
    assert tail[2] == "| airplane | 5000 / 0.88 / 0.90 (40) |" and tail[3] == "| automobile | 50 / 0.12 / 0.00 (0) |"


def test_joint_cost_table():
    from benchmarks.write_docs import frozen_joint_cost_table

    lines = frozen_joint_cost_table({"batch": 64, "image_size": 128, "views_per_s_full": 41.35,
                                     "views_per_s_prefix_forward": 124.0, "views_per_s_suffix": 620.3})
    # 12,406 x 2 views at 41.35 views/s = 600.05 s = 10.0 min; at 620.3: 40.0 s = 0.7 min
    assert lines[2] == "| whole encoder, forward + backward, last stage trainable | 41 | 10.0 min |"
    assert lines[4] == "| trainable suffix on the cached prefix, forward + backward | 620 | 0.7 min |"
