"""The benchmark scripts still run (tiny sizes); their numbers live in docs/benchmarks.md."""



def test_speed_benchmark_smoke():
    from benchmarks import speed

    results = speed.main(["--smoke"])
    assert {"loss", "kmeans", "metrics", "throughput"} <= set(results)
    assert results["metrics"][0]["nmi_diff"] < 1e-6 and results["metrics"][0]["ari_diff"] < 1e-6
    assert 0.99 < results["kmeans"][0]["inertia_ratio"] < 1.1
    assert all(row["module_2views_img_s"] > 0 for row in results["throughput"])


def test_loader_throughput_smoke():
    from benchmarks import loader_throughput

    loader_throughput.main(["--smoke"])


def test_quality_benchmark_smoke():
    from benchmarks import quality

    rows = quality.main(["--smoke"])
    floor, run = rows
    assert floor["preset"].startswith("k-means") and run["preset"] == "dcl_cluster"
    for split in ("train", "test"):
        assert 0 <= run[split]["nmi"] <= 1 and len(run[split]["per_class_recall"]) == 10


def test_ablations_smoke_rows_equal_runs_from_scratch():
    # Variants resume from a shared warm-up checkpoint trained with another warmup_epochs:
    # each row must be exactly the run the variant makes from scratch.
    import lightning.pytorch as pl

    from benchmarks import ablations, quality
    from benchmarks.legacy_settings import split_overrides, terms_from_flat
    from dcl_cluster import DebiasedClusterModule, LongTailDataModule

    rows = ablations.main(["--smoke"])
    assert [r["variant"] for r in rows] == ["reference", "warm-up 1/4"]
    for row in rows:
        pl.seed_everything(0)
        dm = LongTailDataModule("digits", imbalance_factor=10.0, batch_size=64, seed=0, clean_view=True)
        objective, module_args = split_overrides(row["overrides"])
        module = DebiasedClusterModule(objectives=terms_from_flat({**ablations.REFERENCE, **objective}),
                                       **{"backbone_width": 8, "lr": 1e-3, "channels_last": True, **module_args})
        pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, limit_val_batches=0).fit(module, datamodule=dm)
        scratch = quality.score(module, dm, 0)
        for split in ("train", "test", "train_k-means"):
            assert row[split]["cluster_sizes"] == scratch[split]["cluster_sizes"], (row["variant"], split)
            assert row[split]["nmi"] == scratch[split]["nmi"], (row["variant"], split)


def test_digits_seeds_smoke_runs_the_default_config_per_objective():
    from benchmarks import digits_seeds, write_docs

    rows = digits_seeds.main(["--smoke"])
    assert [r["objective"] for r in rows] == digits_seeds.SMOKE_OBJECTIVES
    for row in rows:
        assert 0 <= row["report"]["train (LT)"]["head"]["nmi"] <= 1
    table = write_docs.digits_table(rows)
    assert len(table) == 2 + len(digits_seeds.SMOKE_OBJECTIVES) and table[2].startswith("| shipped | 1 |")


def test_quality_tables_take_only_the_runs_of_the_shipped_preset():
    from benchmarks import write_docs
    from benchmarks.legacy_settings import flat_from_terms
    from dcl_cluster.presets import preset

    shipped = flat_from_terms([t.config() for t in preset("dcl_cluster")["objectives"]])

    def row(seed, epochs=8, **settings):  # the CPU recipe starts dcl_cluster's clustering at 3/4: 6 of 8 epochs
        return {"variant": "v", "epochs": epochs, "wall_s": 1.0, "seed": seed,
                "settings": {**shipped, "warmup_epochs": 6, "backbone_width": 32, **settings}}

    assert shipped["dec_target"] == "prior" and shipped["delta"] == 1.0
    rows = [row(0), row(1, size_exponent=0.25),  # the prior-matched target has no size exponent: both shipped
            row(2, prior_momentum=1.0), row(3, dec_target="batch"), row(4, delta=0.0), row(5, warmup_epochs=4),
            row(6, epochs=10), row(7, detach_cluster_input=True)]
    picked = write_docs.shipped_preset_rows(rows)
    assert [r["seed"] for r in picked] == [0, 1] and picked[0]["settings"]["backbone_width"] == 32
    assert "wall_s" not in picked[0] and "variant" not in picked[0]


def test_estimate_k_benchmark_smoke():
    from benchmarks import estimate_k

    estimate_k.main(["--smoke"])


def test_scan_confidence_records_the_head_from_the_clustering_phase_on():
    from benchmarks import scan_confidence

    row = scan_confidence.run("cosine_scale 30, no self-labelling", seed=0, epochs=4, warmup=2)
    assert [point["epoch"] for point in row["curve"]] == [2, 3]  # no head in the warm-up
    for point in row["curve"]:
        assert 0 <= point["share_above"] <= 1 and 1 / 10 <= point["median"] <= point["p90"] <= point["max"] <= 1
    assert sum(row["train"]["cluster_sizes"]) == sum(row["train_class_counts"])  # every training image scored
    assert 0 <= row["held-out"]["nmi"] <= 1


def test_scan_confidence_table_reads_the_stage_end_and_pairs_the_self_labelling():
    from benchmarks import write_docs

    def row(variant, seed, nmi, shares, confident):
        curve = [{"epoch": 4 + i, "share_above": share, "median": 0.5 + share / 2, "p90": 0.9, "max": 1.0,
                  "term_confident": found, "term_rows": 100}  # epochs 4..7: neighbours 4-5, self-labels 6-7
                 for i, (share, found) in enumerate(zip(shares, confident, strict=True))]
        return {"variant": variant, "seed": seed, "epochs": 8, "warmup_epochs": 4, "self_label_start": 6,
                "threshold": 0.99, "curve": curve, "train": {"nmi": nmi, "balanced_acc": nmi / 2},
                "held-out": {"nmi": nmi - 0.1, "balanced_acc": nmi / 5}}

    rows = [row("on", 1, 0.60, [0.0, 0.4, 0.5, 0.6], [0, 0, 30, 50]),
            row("off", 0, 0.40, [0.0, 0.2, 0.2, 0.2], [0] * 4),
            row("on", 0, 0.50, [0.0, 0.2, 0.3, 0.4], [0, 0, 10, 10]),
            row("off", 1, 0.56, [0.0, 0.1, 0.1, 0.1], [0] * 4)]
    table = write_docs.scan_confidence_table(rows, with_stage="on", without="off")
    assert "above 0.99, end of neighbour stage" in table[0]
    on, off, effect = (line.split(" | ") for line in table[2:])
    # epoch 5 (before self_label_start 6): 0.4, 0.2; the term's share over epochs 6-7: 80/200, 20/200
    assert on[2:4] == ["0.300 ± 0.141", "0.250 ± 0.212"]
    assert on[4:6] == ["0.500 ± 0.141", "0.750 ± 0.071"]  # epoch 7: 0.6, 0.4
    assert off[2] == "0.150 ± 0.071" and off[3] == "0.000 ± 0.000" and on[6] == "0.550 ± 0.071"
    assert effect[0].startswith("| self-labelling's effect") and effect[1] == "2"
    # paired by seed, not by position: NMI +0.10 (seed 0), +0.04 (seed 1); held-out balanced ACC a fifth
    assert effect[6:8] == ["+0.070 ± 0.042", "+0.035 ± 0.021"]
    assert effect[8] == "+0.070 ± 0.042" and effect[9] == "+0.014 ± 0.008 |"


def test_scan_confidence_variants_differ_only_by_scale_and_the_stage():
    from benchmarks import scan_confidence
    from dcl_cluster.objectives import ConfidentSelfLabel

    modules = {name: scan_confidence.build(name, warmup=50) for name in scan_confidence.VARIANTS}
    terms = {name: scan_confidence.self_label_term(m) for name, m in modules.items()}
    assert [m.hparams.cosine_scale for m in modules.values()] == [10.0, 30.0, 30.0]
    assert [t.weight for t in terms.values()] == [1.0, 1.0, 0.0]
    configs = [[t.config() for t in m.objectives if not isinstance(t, ConfidentSelfLabel)] for m in modules.values()]
    assert configs[0] == configs[1] == configs[2]


def test_budget_table_pairs_the_two_budgets_on_the_same_seeds():
    from benchmarks import write_docs

    def row(preset, seed, epochs, nmi):
        split = {"nmi": nmi, "balanced_acc": 0.2, "tail_acc": 0.1}
        return {"preset": preset, "seed": seed, "epochs": epochs, "imbalance_factor": 100, "train": split,
                "test": split}

    short = [row("dcl", 0, 8, 0.10), row("dcl", 1, 8, 0.20), row("dcl", 2, 8, 0.30), row("cc", 0, 8, 0.1)]
    long = [row("dcl", 0, 80, 0.20), row("dcl", 1, 80, 0.40)]  # seed 2 not run yet: left out of both means
    table = write_docs.budget_table(short, long)
    assert len(table) == 3  # cc has no 80-epoch row
    cells = table[2].split(" | ")
    assert cells[0] == "| dcl" and cells[1] == "2"
    assert cells[2] == "0.150 → 0.300 (+0.150 ± 0.071)"  # (0.1 + 0.2) / 2 -> (0.2 + 0.4) / 2, changes 0.1, 0.2
    assert cells[3] == "0.200 → 0.200 (+0.000 ± 0.000)"


def _claim_row(preset, seed, nmi, tail=0.1):
    split = {"nmi": nmi, "balanced_acc": 0.2, "tail_acc": tail, "acc": 0.3, "macro_f1": 0.2, "ari": 0.1,
             "head_acc": 0.3, "medium_acc": 0.2, "source": "head"}
    return {"preset": preset, "seed": seed, "epochs": 80, "imbalance_factor": 100, "train": split, "test": split}


def test_lead_table_names_only_leads_beyond_one_std_of_the_paired_differences():
    from benchmarks import write_docs

    rows = [_claim_row("dcl_cluster", s, nmi) for s, nmi in enumerate([0.30, 0.31, 0.32])]
    rows += [_claim_row("dcl", s, nmi) for s, nmi in enumerate([0.20, 0.21, 0.22])]  # behind by 0.1 on each seed
    rows += [_claim_row("cc", s, nmi, tail) for s, (nmi, tail) in enumerate([(0.20, 0.0), (0.40, 0.2), (0.30, 0.1)])]
    table = write_docs.lead_table(rows, claimants=("dcl_cluster",))
    assert len(table) == 4  # header, rule, dcl, cc (no p2ot rows: no p2ot line)
    dcl, cc = (line.split(" | ") for line in table[2:])
    assert dcl[1] == "`dcl`" and dcl[3] == "+0.100 ± 0.000" and dcl[-1] == "NMI, test NMI |"
    # against cc: +0.10, -0.09, +0.02 on NMI (mean 0.01 < std); tail +0.1, -0.1, 0.0: no lead anywhere
    assert cc[3] == "+0.010 ± 0.095" and cc[-1] == "none |"
    one_seed = write_docs.lead_table(rows[:1] + rows[3:4], claimants=("dcl_cluster",))
    assert one_seed[2].endswith("| (one seed) |")


def test_features_table_splits_a_methods_gap_into_head_and_features():
    from benchmarks import write_docs

    def scores(nmi, bal, tail, source):
        return {"nmi": nmi, "balanced_acc": bal, "tail_acc": tail, "source": source}

    def row(preset, seed, train, test, train_km=None, test_km=None):
        r = {"preset": preset, "seed": seed, "imbalance_factor": 100,
             "train": scores(*train, "head" if train_km else "k-means"),
             "test": scores(*test, "head" if test_km else "k-means")}
        if train_km:  # a method with a head also has k-means on its own features
            r["train_k-means"], r["test_k-means"] = scores(*train_km, "k-means"), scores(*test_km, "k-means")
        return r

    rows = [row("dcl", 0, (0.20, 0.30, 0.10), (0.50, 0.60, 0.70)),
            row("dcl", 1, (0.22, 0.34, 0.12), (0.52, 0.66, 0.72)),
            row("dcl_cluster", 0, (0.25, 0.20, 0.40), (0.45, 0.50, 0.80), (0.21, 0.30, 0.10), (0.50, 0.60, 0.60)),
            row("dcl_cluster", 1, (0.27, 0.26, 0.44), (0.47, 0.56, 0.82), (0.25, 0.36, 0.20), (0.56, 0.62, 0.66)),
            row("dcl_cluster", 2, (0.9, 0.9, 0.9), (0.9, 0.9, 0.9), (0.9, 0.9, 0.9), (0.9, 0.9, 0.9)),  # no dcl seed 2
            row("simclr", 0, (0.10, 0.10, 0.10), (0.40, 0.40, 0.40)),
            row("sic", 5, (0.1, 0.1, 0.1), (0.1, 0.1, 0.1), (0.1, 0.1, 0.1), (0.1, 0.1, 0.1))]  # no seed in common
    table = write_docs.features_table(rows)
    assert len(table) == 2 + 4  # simclr and dcl_cluster, train and test each; sic shares no seed with dcl
    simclr, train, test = (table[i].split(" | ") for i in (2, 4, 5))
    assert simclr[:3] == ["| `simclr`", "train", "1"] and simclr[3:6] == ["-"] * 3  # no head
    assert simclr[6] == "-0.100"  # one shared seed: no std
    assert train[:3] == ["| `dcl_cluster`", "train", "2"] and test[:3] == ["| `dcl_cluster`", "test", "2"]
    # head - own k-means, train: NMI +0.04, +0.02; bal. ACC -0.10, -0.10; tail +0.30, +0.24
    assert train[3:6] == ["+0.030 ± 0.014", "-0.100 ± 0.000", "+0.270 ± 0.042"]
    # own k-means - dcl's (dcl's main scores), train: NMI +0.01, +0.03; bal. ACC 0, +0.02; tail 0, +0.08
    assert train[6:8] == ["+0.020 ± 0.014", "+0.010 ± 0.014"] and train[8] == "+0.040 ± 0.057 |"
    # the test split's own numbers: head - k-means NMI -0.05, -0.09; features - dcl's tail -0.10, -0.06
    assert test[3] == "-0.070 ± 0.028" and test[8] == "-0.080 ± 0.028 |"


def test_quality_table_without_cost_and_the_queue_cost_of_a_fresh_plan(tmp_path):
    from benchmarks import jobqueue, write_docs

    rows = [_claim_row("dcl", 0, 0.2)]
    with_cost, without = write_docs.quality_table(rows, "train"), write_docs.quality_table(rows, "train", cost=False)
    for table, columns in ((with_cost, 14), (without, 12)):
        assert all(line.count("|") == columns + 1 for line in table)
    queue = jobqueue.Queue(jobqueue.load_plan("smoke_digits"), state_dir=tmp_path, results_dir=tmp_path)
    lines = write_docs.queue_cost(queue)
    assert "0 done" in lines[0] and "0.0 hours of training" in lines[1] and "none yet" in lines[1]
    assert "so far" in lines[1] and lines[2].endswith("hours left.")  # unfinished: says what is left
    assert lines[-1].startswith("- Not measured yet")  # nothing has run: every epoch time is the plan's default
    done = write_docs.queue_cost()  # the committed cifar10_lt_80 state: every job done
    assert "30 done" in done[0] and done[1].startswith("- Measured: ") and done[2].endswith("hours).")


def test_preset_epochs_times_each_phase_with_the_views_its_running_terms_read():
    from benchmarks import preset_epochs

    rows = preset_epochs.checks(preset_epochs.run_with(None, ["dcl", "dcl_cluster"], 1, True), [])
    assert [(r["preset"], r["phase"]) for r in rows] == [(p, ph) for p in ("dcl", "dcl_cluster")
                                                         for ph in preset_epochs.PHASES]
    cluster = {r["phase"]: r for r in rows if r["preset"] == "dcl_cluster"}
    assert cluster["warm-up"]["served"] == ["a", "b", "clean"]  # served, but read by no warm-up term
    assert cluster["warm-up"]["forwarded"] == cluster["warm-up"]["read"] == ["a", "b"]
    assert cluster["clustering 1"]["forwarded"] == cluster["clustering 1"]["read"] == ["a", "b", "clean"]
    assert all(r["trainer_s"] > 0 and r["bare_s"] > 0 and r["before_s"] is None for r in rows)
    assert len(preset_epochs.table(rows)) == 2 + len(rows)


def test_folder_route_times_the_cli_run_and_the_model_alone(tmp_path):
    import json

    from benchmarks import folder_route

    out = tmp_path / "route.json"
    row = folder_route.main(["--epochs", "2", "--set", "data.image_size=16", "model.backbone_width=8",
                             "--out", str(out)])
    assert [e["epoch"] for e in row["epochs"]] == [0, 1, 2] and row["views_forwarded"] == 2  # a, b in warm-up
    assert row["route_img_s"] > 0 and row["model_only_img_s"] > 0 and row["settings"][0] == "data.image_size=16"
    assert json.loads(out.read_text()) == [json.loads(json.dumps(row))]
    assert len(folder_route.table([row])) == 3
