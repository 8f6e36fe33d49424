"""Render benchmarks/results/{speed,quality,ablations}.json into docs/benchmarks.md and its plots.

    python -m benchmarks.write_docs     # rewrites the generated blocks of docs/benchmarks.md

Only the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` markers is replaced,
so the commentary around the tables stays as written.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path

from benchmarks.ablations import LATE_START_VARIANTS, PER_CLASS_VARIANTS
from benchmarks.doc_plots import METHOD_ORDER, _mean, plot_cluster_sizes, plot_per_class

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
QUEUE_PLAN = "cifar10_lt_80"  # the 80-epoch budget (benchmarks/plans/, run by benchmarks/jobqueue.py)
PRESETS_80 = ("simclr", "dcl", "cc", "sic", "dcl_cluster", "p2ot", "scan")


def _f(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def loss_table(rows):
    out = ["| B | contender | ms (median) | time / ours | peak memory (MiB) |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        mem = _f(r.get("peak_mib"), 0)
        out.append(f"| {r['B']} | {r['contender']} | {_f(r['ms'], 1)} | {_f(r['x_ours'], 2)} | {mem} |")
    return out


def kmeans_table(rows):
    out = ["| N x d | K | n_init | dcl_cluster (s) | scikit-learn (s) | speed-up | inertia ours / sklearn |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['N']} x {r['d']} | {r['K']} | {r['n_init']} | {_f(r['ours_s'], 2)} | "
                   f"{_f(r['sklearn_s'], 2)} | {_f(r['speedup'], 1)}x | {_f(r['inertia_ratio'], 4)} |")
    return out


def metrics_table(rows):
    out = ["| labels | classes | ClusteringMetrics (s) | scikit-learn NMI + ARI (s) | speed-up | max abs diff |",
           "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        diff = max(r["nmi_diff"], r["ari_diff"])
        out.append(f"| {r['N']:,} | {r['classes']} | {_f(r['ours_s'], 3)} | {_f(r['sklearn_nmi_ari_s'], 3)} | "
                   f"{_f(r['speedup'], 1)}x | {diff:.1e} |")
    return out


def throughput_table(rows):
    out = ["| backbone | batch | channels-last | bf16 | plain SimCLR loop (views/s) | module, 2 views (views/s) | "
           "ratio | module, + clean view (views/s) | ratio |", "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['backbone']} | {r['batch']} | {r['channels_last']} | {r['bf16']} | "
                   f"{_f(r['plain_simclr_img_s'], 0)} | {_f(r['module_2views_img_s'], 0)} | "
                   f"{_f(r['ratio_2views'], 2)} | {_f(r['module_3views_img_s'], 0)} | {_f(r['ratio_3views'], 2)} |")
    return out


def transport_table(rows):
    """P²OT's plan: ``partial_ot_targets`` against the paper's loop and the two-mat-vec floor."""
    out = ["| N x K | rho | iterations (paper's loop / ours) | ours (ms) | paper's loop (ms) | speed-up | floor (ms) "
           "| ours / floor | ours / floor at our iterations | plan difference (ours vs paper) "
           "| distance to the fixed point (ours / paper) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        its = f"{r['iterations']} / {r['ours_iterations']}" if "ours_iterations" in r else f"{r['iterations']}"
        at_ours = _f(r["ours_over_floor_at_ours"], 2) if "ours_over_floor_at_ours" in r else "-"
        fixed = (f"{r['ours_to_fixed_point']:.1e} / {r['paper_to_fixed_point']:.1e}"
                 if "ours_to_fixed_point" in r else "-")
        out.append(f"| {r['N']:,} x {r['K']} | {r['rho']} | {its} | {_f(1000 * r['ours_s'], 1)} | "
                   f"{_f(1000 * r['paper_s'], 1)} | {_f(r['speedup'], 2)} | {_f(1000 * r['floor_s'], 1)} | "
                   f"{_f(r['ours_over_floor'], 2)} | {at_ours} | {r['max_plan_diff']:.1e} | {fixed} |")
    return out


def _mean_std(values, sign="", digits=3):
    """``mean ± sample std`` to 3 decimals (``sign="+"`` for differences), ``-`` when empty."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:{sign}.{digits}f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:{sign}.{digits}f} ± {std:.{digits}f}"


def quality_table(rows, split, cost=True):
    """One row per (IF, method), mean ± std over seeds; ``cost=False`` leaves out wall time and
    memory (the queue's rows: a job's wall time is a share of a chain, beside other work)."""
    keys = ["nmi", "acc", "balanced_acc", "macro_f1", "ari", "head_acc", "medium_acc", "tail_acc"]
    out = ["| IF | method | clusters from | seeds | NMI | ACC | bal. ACC | macro F1 | ARI | head | medium | tail |"
           + (" wall (min) | peak RSS (GiB) |" if cost else ""), "|---:|---|---|---:|" + "---:|" * (10 if cost else 8)]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["imbalance_factor"], r["preset"]), []).append(r)
    rank = {name: i for i, name in enumerate(METHOD_ORDER)}
    for (imbalance, preset), runs in sorted(groups.items(), key=lambda kv: (-kv[0][0], rank.get(kv[0][1], 99))):
        cells = [_mean_std([r[split].get(k) for r in runs]) for k in keys]
        wall = _mean_std([r["wall_s"] / 60 for r in runs if "wall_s" in r]) if "wall_s" in runs[0] else "-"
        rss = _mean_std([r["peak_rss_mib"] / 1024 for r in runs if "peak_rss_mib" in r]) \
            if "peak_rss_mib" in runs[0] else "-"
        out.append(f"| {imbalance:g} | {preset} | {runs[0][split]['source']} | {len(runs)} | "
                   + " | ".join(cells) + (f" | {wall} | {rss} |" if cost else " |"))
    return out


def warmup_table(quality, late, ablations, factor=100.0):
    """Each clustering method with the clustering terms from half and from 3/4 of the epochs."""
    out = ["| method | warm-up (of 8 epochs) | seeds | NMI | bal. ACC | tail ACC | test NMI | test bal. ACC |",
           "|---|---:|---:|" + "---:|" * 5]
    groups: dict = {}
    for r in quality + late:
        if r["imbalance_factor"] == factor and r["preset"] in ("cc", "sic"):
            warmup = r.get("warmup_epochs", r["epochs"] // 2)  # rows before the field: the recipe's half
            groups.setdefault((r["preset"], warmup), []).append(r)
    for r in ablations:
        if r["imbalance_factor"] == factor and r["variant"] in LATE_START_VARIANTS:
            groups.setdefault(("dcl_cluster", r["settings"]["warmup_epochs"]), []).append(r)
    for (method, warmup), runs in sorted(groups.items()):
        cells = [_mean_std([r[split][k] for r in runs])
                 for split, k in (("train", "nmi"), ("train", "balanced_acc"), ("train", "tail_acc"),
                                  ("test", "nmi"), ("test", "balanced_acc"))]
        out.append(f"| {method} | {warmup} | {len(runs)} | " + " | ".join(cells) + " |")
    return out


def digits_table(rows):
    """The default digits run per objective: the cluster head's scores, mean ± std over seeds."""
    out = ["| objective | seeds | train NMI | train bal. ACC | train tail ACC | held-out NMI | held-out bal. ACC |",
           "|---|---:|" + "---:|" * 5]
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["objective"], []).append(r)
    for name, runs in groups.items():
        cells = [_mean_std([r["report"][split]["head"][k] for r in runs])
                 for split, k in (("train (LT)", "nmi"), ("train (LT)", "balanced_acc"), ("train (LT)", "tail_acc"),
                                  ("held-out", "nmi"), ("held-out", "balanced_acc"))]
        out.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")  # wall: ran beside other jobs
    return out


def _seed_diffs(runs, reference, split, key):
    """``run - reference`` on each seed both have."""
    by_seed = {r["seed"]: r[split][key] for r in reference}
    return [r[split][key] - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]


def _paired(runs, reference, split, key):
    """Mean ± std over seeds of ``run - reference`` on the same seed (same warm-up)."""
    return _mean_std(_seed_diffs(runs, reference, split, key), sign="+")


def _size_range(runs, split="train"):
    """Largest / smallest cluster, averaged over seeds (classes at IF 100: 5000 / 50)."""
    largest = _mean([max(r[split]["cluster_sizes"]) for r in runs])
    smallest = _mean([min(r[split]["cluster_sizes"]) for r in runs])
    return f"{largest:.0f} / {smallest:.0f}"


def ablation_table(rows, reference="reference"):
    out = ["| IF | variant | seeds | NMI | bal. ACC | tail ACC | Δ NMI | Δ bal. ACC | Δ tail ACC | test NMI | "
           "test bal. ACC | largest / smallest cluster |", "|---:|---|---:|" + "---:|" * 9]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["imbalance_factor"], r["epochs"], r["variant"]), []).append(r)
    for (imbalance, epochs, variant), runs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        ref = groups.get((imbalance, epochs, reference), [])
        cells = [_mean_std([r["train"][k] for r in runs]) for k in ("nmi", "balanced_acc", "tail_acc")]
        cells += ["" if variant == reference else _paired(runs, ref, "train", k)
                  for k in ("nmi", "balanced_acc", "tail_acc")]
        cells += [_mean_std([r["test"][k] for r in runs]) for k in ("nmi", "balanced_acc")]
        out.append(f"| {imbalance:g} | {variant} | {len(runs)} | " + " | ".join(cells) + f" | {_size_range(runs)} |")
    return out


#: settings of the budget (equal for every row) and dataset facts, not of the objective
BUDGET_KEYS = {"backbone", "projector", "in_channels", "input_size", "num_clusters", "backbone_width", "lr",
               "channels_last", "warmup_epochs"}


def shipped_preset_rows(ablations, warmup_fraction=None):
    """The ablation rows that ran exactly the shipped ``dcl_cluster`` objective (and the CPU
    recipe's warm-up for it): the ``dcl_cluster`` rows of the quality tables."""
    import inspect

    from benchmarks.legacy_settings import FLAT_DEFAULTS, flat_from_terms
    from benchmarks.quality import RECIPES, warmup_epochs
    from dcl_cluster import DebiasedClusterModule
    from dcl_cluster.presets import preset

    if warmup_fraction is None:
        warmup_fraction = RECIPES["cpu"]["warmup_fraction"]["dcl_cluster"]
    params = inspect.signature(DebiasedClusterModule.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    defaults.update(FLAT_DEFAULTS)  # rows hold the objective in the 0.1 flat form
    shipped = {**defaults, **flat_from_terms([t.config() for t in preset("dcl_cluster")["objectives"]])}

    def is_shipped(r):
        ran = {**defaults, **r["settings"]}
        unused = {"size_exponent"} if ran["dec_target"] == "prior" else set()  # the prior-matched target has none
        return (all(ran[k] == v for k, v in shipped.items() if k not in BUDGET_KEYS | unused)
                and ran["warmup_epochs"] == warmup_epochs(r["epochs"], warmup_fraction))

    # their wall time is a share of a chain of runs, not comparable with a standalone run: left out
    return [{k: v for k, v in r.items() if k not in ("wall_s", "variant")} for r in ablations if is_shipped(r)]


def new_objective_rows():
    """The quality rows of the objectives added in 0.2 (P²OT, SCAN), run apart from the others at
    the same budget (``quality_p2ot_scan_*.json``); their pixel floors repeat the table's."""
    rows = {}  # one row per (preset, IF, seed): a rerun in another file replaces, never doubles, a seed
    for path in sorted((HERE / "results").glob("quality_p2ot_scan_*.json")):
        for r in json.loads(path.read_text()):
            if r["preset"] != "k-means on PCA-50 pixels":
                rows[(r["preset"], r["imbalance_factor"], r["seed"])] = r
    return list(rows.values())


def paired_table(quality, reference="dcl", methods=("dcl_cluster", "p2ot", "scan", "scan_prior")):
    """Each clustering method minus ``reference`` on the same seed, per imbalance factor
    (training set, then test set), with the clusters' mean smallest .. largest size."""
    out = ["| IF | method | seeds | NMI | bal. ACC | tail ACC | test NMI | test bal. ACC | cluster sizes (train) |",
           "|---:|---|---:|" + "---:|" * 5 + "---|"]
    for factor in sorted({r["imbalance_factor"] for r in quality}, reverse=True):
        ref = [r for r in quality if r["preset"] == reference and r["imbalance_factor"] == factor]
        for method in methods:
            runs = [r for r in quality if r["preset"] == method and r["imbalance_factor"] == factor]
            seeds = {r["seed"] for r in ref}
            runs = [r for r in runs if r["seed"] in seeds]
            if not runs:
                continue
            cells = [_paired(runs, ref, split, k) for split, k in (("train", "nmi"), ("train", "balanced_acc"),
                                                                   ("train", "tail_acc"), ("test", "nmi"),
                                                                   ("test", "balanced_acc"))]
            sizes = (f"{_mean([min(r['train']['cluster_sizes']) for r in runs]):,.0f} .. "
                     f"{_mean([max(r['train']['cluster_sizes']) for r in runs]):,.0f}")
            out.append(f"| {factor:g} | `{method}` | {len(runs)} | " + " | ".join(cells) + f" | {sizes} |")
    return out


def budget_table(short, long, factor=100.0):
    """Each method of the long budget beside its short-budget rows: ``short -> long`` means and the
    paired change on the same seeds (the 8-epoch runs are from scratch; the 80-epoch ones share
    their warm-up within a seed, see the queue guide)."""
    keys = (("train", "nmi"), ("train", "balanced_acc"), ("train", "tail_acc"), ("test", "nmi"),
            ("test", "balanced_acc"))
    out = ["| method | seeds | NMI | bal. ACC | tail ACC | test NMI | test bal. ACC |", "|---|---:|" + "---:|" * 5]
    rank = {name: i for i, name in enumerate(PRESETS_80)}
    for method in sorted({r["preset"] for r in long if r["imbalance_factor"] == factor}, key=lambda m: rank.get(m, 99)):
        after = {r["seed"]: r for r in long if r["preset"] == method and r["imbalance_factor"] == factor}
        before = {r["seed"]: r for r in short if r["preset"] == method and r["imbalance_factor"] == factor}
        seeds = sorted(set(after) & set(before))
        if not seeds:
            continue
        cells = []
        for split, k in keys:
            was, now = _mean([before[s][split][k] for s in seeds]), _mean([after[s][split][k] for s in seeds])
            change = _paired([after[s] for s in seeds], [before[s] for s in seeds], split, k)
            cells.append(f"{was:.3f} → {now:.3f} ({change})")
        out.append(f"| {method} | {len(seeds)} | " + " | ".join(cells) + " |")
    return out


def queue_cost(queue=None):
    """What the queue's plan costs: epochs with and without shared warm-ups, the time measured so
    far, and the whole plan's time one job at a time, with where each epoch time comes from
    (measured in this plan, or the plan's default until a job of that kind has run)."""
    import statistics

    from benchmarks.jobqueue import Queue, estimates, load_plan

    queue = queue or Queue(load_plan(QUEUE_PLAN))
    est, threads = estimates(queue), queue.plan.get("threads") or 1
    jobs = est["jobs"]
    runs = [j for j in jobs if j["kind"] == "run"]
    spent, pooled = 0.0, {}
    for job in queue.jobs:
        times = (queue.progress(job) or {}).get("epoch_times_s", [])[job.start_epoch:]
        spent += sum(times)
        pooled.setdefault(job.views, []).extend(times)
    rates = ", ".join(f"{v} views {statistics.median(t):.1f} s" for v, t in sorted(pooled.items()) if t)
    guessed = [j for j in jobs if not j["source"].startswith("measured") and j["status"] != "done"]
    guessed_s = sum(j["left_s"] for j in guessed)
    score_s = (est["total_s"] - sum((j["stop"] - j["start_epoch"]) * j["s_per_epoch"] for j in jobs)) / len(runs)
    scratch_s = sum(j["stop"] * j["s_per_epoch"] + score_s for j in runs)
    finished = all(j["status"] == "done" for j in jobs)
    out = [f"- Plan `{queue.plan['name']}`: {len(jobs)} jobs ({len(runs)} results rows and {len(jobs) - len(runs)} "
           f"shared warm-ups), {sum(j['status'] == 'done' for j in jobs)} done. The plan trains "
           f"{sum(j['stop'] - j['start_epoch'] for j in jobs):,} epochs, against "
           f"{sum(j['stop'] for j in runs):,} if every row ran from scratch.",
           f"- Measured{'' if finished else ' so far'}: {spent / 3600:.1f} hours of training, one job at a time "
           f"on {threads} threads "
           f"(including epochs slowed by other work on the machine); median epoch: {rates or 'none yet'}.",
           f"- The whole plan: {est['total_s'] / 3600:.1f} hours on an idle machine at the median epoch times "
           f"({est['total_s'] * threads / 3600:.1f} CPU core-hours; every row from scratch: "
           f"{scratch_s / 3600:.1f} hours)" + ("." if finished else f"; {est['left_s'] / 3600:.1f} hours left.")]
    if guessed:
        kinds = sorted({f"{j['preset']} ({j['views']} views, {j['s_per_epoch']:.1f} s)" for j in guessed})
        out.append(f"- Not measured yet, from the plan's default epoch times: {', '.join(kinds)}; "
                   f"{guessed_s / 3600:.1f} of the hours left.")
    return out


def pretrained_table(rows, reference="scratch"):
    """Scratch or pretrained (``scratch_vs_pretrained.json``): each arm's scores, its paired
    difference against training from scratch on the same seed, wall time and estimated K."""
    out = ["| arm | seeds | train NMI | train bal. ACC | train tail ACC | held-out NMI | held-out bal. ACC | "
           "Δ train NMI vs scratch | Δ held-out NMI vs scratch | wall (s) | estimated K per seed |",
           "|---|---:|" + "---:|" * 8 + "---|"]
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["arm"], []).append(r)
    ref = groups.get(reference, [])
    for arm, runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        cells = [_mean_std([r[split][k] for r in runs]) for split, k in
                 (("train", "nmi"), ("train", "balanced_acc"), ("train", "tail_acc"), ("test", "nmi"),
                  ("test", "balanced_acc"))]
        cells += ["" if arm == reference else _paired(runs, ref, split, "nmi") for split in ("train", "test")]
        wall = _mean_std([r["wall_s"] for r in runs], digits=0)
        ready = [r["wall_s_cache_ready"] for r in runs if r.get("wall_s_cache_ready") is not None]
        if ready:
            wall += f" (cache ready: {_mean(ready):.1f})"
        ks = ", ".join(str(r["estimated_k"]) for r in runs)
        out.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + f" | {wall} | {ks} |")
    return out


def _by_preset_seed(rows, factor):
    """``{preset: {seed: row}}`` of the rows at imbalance factor ``factor``."""
    by = {}
    for r in rows:
        if r["imbalance_factor"] == factor:
            by.setdefault(r["preset"], {})[r["seed"]] = r
    return by


CLAIM_KEYS = (("train", "nmi", "NMI"), ("train", "balanced_acc", "bal. ACC"), ("train", "tail_acc", "tail ACC"),
              ("test", "nmi", "test NMI"), ("test", "balanced_acc", "test bal. ACC"))


def lead_table(rows, claimants=("dcl_cluster", "p2ot"), factor=100.0):
    """The claim, paired: each claimant minus every other method on the same seeds, and the
    scores on which its lead exceeds one standard deviation of the paired differences."""
    out = ["| claimant | minus | seeds | " + " | ".join(label for _, _, label in CLAIM_KEYS)
           + " | ahead beyond one std on |", "|---|---|---:|" + "---:|" * len(CLAIM_KEYS) + "---|"]
    by = _by_preset_seed(rows, factor)
    for claimant in claimants:
        for other in PRESETS_80:
            if other == claimant or claimant not in by or other not in by:
                continue
            seeds = sorted(set(by[claimant]) & set(by[other]))
            if not seeds:
                continue
            cells, ahead = [], []
            for split, key, label in CLAIM_KEYS:
                diffs = _seed_diffs([by[claimant][s] for s in seeds], [by[other][s] for s in seeds], split, key)
                cells.append(_mean_std(diffs, sign="+"))
                if len(diffs) > 1 and _mean(diffs) - statistics.stdev(diffs) > 0:
                    ahead.append(label)
            verdict = ", ".join(ahead) if len(seeds) > 1 else "(one seed)"
            out.append(f"| `{claimant}` | `{other}` | {len(seeds)} | " + " | ".join(cells)
                       + f" | {verdict or 'none'} |")
    return out


FEATURE_KEYS = (("nmi", "NMI"), ("balanced_acc", "bal. ACC"), ("tail_acc", "tail ACC"))


def _kmeans_scores(run, split):
    """k-means (fit on ``split``'s own features) on a run's backbone features: its main scores for
    a method without a head, else its ``*_k-means`` scores; ``None`` when the row has neither."""
    if f"{split}_k-means" in run:
        return run[f"{split}_k-means"]
    return run[split] if run[split].get("source", "k-means") == "k-means" else None


def features_table(rows, reference="dcl", factor=100.0):
    """Head or features: each clustering method's head minus k-means on its own features, and
    k-means on its features minus k-means on ``reference``'s, paired by seed, per split. k-means
    is fit on each split's features (transductive); the head was trained on the training set
    only and is applied as it is. A seed without the scores a column needs is left out of it."""
    labels = [f"{label} {kind}" for kind in ("head − k-means", "features − dcl's") for _, label in FEATURE_KEYS]
    out = ["| method | split | seeds | " + " | ".join(labels) + " |", "|---|---|---:|" + "---:|" * len(labels)]
    by = _by_preset_seed(rows, factor)
    for method in PRESETS_80:
        if method == reference or method not in by or reference not in by:
            continue
        seeds = sorted(set(by[method]) & set(by[reference]))
        if not seeds:
            continue
        for split in ("train", "test"):
            heads = [by[method][s] for s in seeds if f"{split}_k-means" in by[method][s]]
            pairs = [(_kmeans_scores(by[method][s], split), _kmeans_scores(by[reference][s], split)) for s in seeds]
            pairs = [(own, ref) for own, ref in pairs if own is not None and ref is not None]
            cells = [_mean_std([r[split][key] - r[f"{split}_k-means"][key] for r in heads], sign="+")
                     for key, _ in FEATURE_KEYS]
            cells += [_mean_std([own[key] - ref[key] for own, ref in pairs], sign="+") for key, _ in FEATURE_KEYS]
            out.append(f"| `{method}` | {split} | {len(seeds)} | " + " | ".join(cells) + " |")
    return out


def scan_confidence_table(rows, with_stage="cosine_scale 30", without="cosine_scale 30, no self-labelling"):
    """``scan_confidence.json``: per variant, the share of un-augmented training images above the
    threshold (eval mode) at the end of the neighbour stage and of the run, the share of the
    training batches the term itself found confident over the self-labelling epochs, the head's
    median largest probability and the scores; then the self-labelling stage's paired effect
    (``with_stage`` minus ``without`` on the same seeds)."""
    score_keys = (("train", "nmi"), ("train", "balanced_acc"), ("held-out", "nmi"), ("held-out", "balanced_acc"))
    threshold = rows[0]["threshold"] if rows else 0.99
    out = [f"| variant | seeds | above {threshold:g}, end of neighbour stage | confident in the self-labelling "
           f"batches | above {threshold:g}, last epoch | median largest probability, last epoch | NMI | bal. ACC "
           "| held-out NMI | held-out bal. ACC |", "|---|---:|" + "---:|" * 8]
    by = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    for variant, runs in by.items():
        stage_end = [next(p for p in r["curve"] if p["epoch"] == r["self_label_start"] - 1) for r in runs]
        in_stage = [[p for p in r["curve"] if p["epoch"] >= r["self_label_start"]] for r in runs]
        term_share = [sum(p["term_confident"] for p in ps) / max(1, sum(p["term_rows"] for p in ps)) for ps in in_stage]
        cells = [_mean_std([p["share_above"] for p in stage_end]), _mean_std(term_share),
                 _mean_std([r["curve"][-1]["share_above"] for r in runs]),
                 _mean_std([r["curve"][-1]["median"] for r in runs])]
        cells += [_mean_std([r[split][key] for r in runs]) for split, key in score_keys]
        out.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    if with_stage in by and without in by:
        cells = [_paired(by[with_stage], by[without], split, key) for split, key in score_keys]
        seeds = len({r["seed"] for r in by[with_stage]} & {r["seed"] for r in by[without]})
        out.append(f"| self-labelling's effect (paired: {with_stage} minus {without}) | {seeds} | - | - | - | - | "
                   + " | ".join(cells) + " |")
    return out


#: the frozen-feature lab (benchmarks/frozen_lab.py): its encoder, its methods in table order
#: (others follow in the order first seen) and the candidates whose goal ``frozen-goal`` states (at IF 100)
FROZEN_ENCODER = "efficientnet_lite0"
FROZEN_METHODS = ("kmeans", "gmm", "overcluster", "overcluster_avg", "dec", "dcl_cluster", "p2ot", "p2ot_plan", "scan",
                  "miniclustering")
FROZEN_GOAL_METHODS = ("p2ot_plan", "overcluster_avg", "overcluster", "miniclustering", "p2ot", "gmm")
FROZEN_FACTORS = (10.0, 50.0, 100.0)


def _frozen_runs(rows, factor):
    """``{method: {seed: row}}`` of the lab's rows at imbalance factor ``factor`` (its encoder
    only), methods in FROZEN_METHODS order, then the others as first seen."""
    by = {}
    for r in rows:
        if r.get("encoder", FROZEN_ENCODER) == FROZEN_ENCODER and float(r["imbalance_factor"]) == float(factor):
            by.setdefault(r["method"], {})[r["seed"]] = r
    rank = {name: i for i, name in enumerate(FROZEN_METHODS)}
    return dict(sorted(by.items(), key=lambda kv: rank.get(kv[0], len(rank))))  # stable: unknown ones as seen


def _empty_clusters(scores):
    """Empty clusters of one split's scores (counted from the sizes when the row lacks the field)."""
    if scores.get("empty_clusters") is not None:
        return scores["empty_clusters"]
    sizes = scores.get("cluster_sizes")
    return None if sizes is None else sum(s == 0 for s in sizes)


def _ratio_cell(runs, split):
    """Largest / smallest cluster, mean ± std over seeds; a ``None`` ratio (an empty cluster)
    is left out of the mean and counted: ``"10.0 ± 2.8 over 2, empty in 1 of 3 seeds (2 clusters)"``."""
    ratios = [r[split].get("largest_smallest") for r in runs]
    kept = [v for v in ratios if v is not None]
    empty = [r for r, v in zip(runs, ratios, strict=True) if v is None]
    if not empty:
        return _mean_std(kept, digits=1)
    counts = [_empty_clusters(r[split]) for r in empty]
    clusters = f" ({sum(counts)} clusters)" if None not in counts else ""
    part = f"{_mean_std(kept, digits=1)} over {len(kept)}, " if kept else ""
    return f"{part}empty in {len(empty)} of {len(runs)} seeds{clusters}"


def frozen_lab_table(rows, factor, split):
    """The frozen-feature lab at one imbalance factor: each method's scores on ``split``, mean ±
    std over seeds, its clusters' largest / smallest size and size-KL, and its mean wall time."""
    keys = ("nmi", "balanced_acc", "macro_f1", "head_acc", "medium_acc", "tail_acc")
    out = ["| method | seeds | NMI | bal. ACC | macro F1 | head ACC | medium ACC | tail ACC | largest / smallest "
           "| size-KL | wall (s) |", "|---|---:|" + "---:|" * 9]
    for method, by_seed in _frozen_runs(rows, factor).items():
        runs = [by_seed[s] for s in sorted(by_seed)]
        cells = [_mean_std([r[split].get(k) for r in runs]) for k in keys]
        cells += [_ratio_cell(runs, split), _mean_std([r[split].get("size_kl") for r in runs])]
        walls = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
        cells.append(_f(_mean(walls), 1) if walls else "-")
        out.append(f"| `{method}` | {len(runs)} | " + " | ".join(cells) + " |")
    return out


def _frozen_diffs(runs, reference, split, key):
    """``run - reference`` on each seed both have a value of ``key`` for (``_seed_diffs``
    without the ``None`` ones: size-KL is ``None`` where the sizes could not be compared)."""
    return _seed_diffs([r for r in runs if r[split].get(key) is not None],
                       [r for r in reference if r[split].get(key) is not None], split, key)


def _beyond_one_std(diffs):
    """Ahead by more than one (sample) standard deviation of the paired differences."""
    return len(diffs) > 1 and _mean(diffs) > 0 and _mean(diffs) > statistics.stdev(diffs)


FROZEN_PAIRED_KEYS = (("nmi", "NMI"), ("balanced_acc", "bal. ACC"), ("tail_acc", "tail ACC"), ("size_kl", "size-KL"))
FROZEN_AHEAD_KEYS = (("balanced_acc", "bal. ACC"), ("tail_acc", "tail ACC"))


def frozen_lab_paired(rows, factor, split="train", reference="kmeans"):
    """Each method of the lab minus ``reference`` on the same seeds (mean ± std of the paired
    differences), and the accuracies it improves by more than one std of them."""
    out = [f"| method − `{reference}` | seeds | " + " | ".join(label for _, label in FROZEN_PAIRED_KEYS)
           + " | beyond one std |", "|---|---:|" + "---:|" * len(FROZEN_PAIRED_KEYS) + "---|"]
    by = _frozen_runs(rows, factor)
    ref = by.get(reference, {})
    for method, by_seed in by.items():
        seeds = sorted(set(by_seed) & set(ref))
        if method == reference or not seeds:
            continue
        runs, base = [by_seed[s] for s in seeds], [ref[s] for s in seeds]
        cells = [_mean_std(_frozen_diffs(runs, base, split, key), sign="+") for key, _ in FROZEN_PAIRED_KEYS]
        ahead = [label for key, label in FROZEN_AHEAD_KEYS if _beyond_one_std(_frozen_diffs(runs, base, split, key))]
        verdict = (", ".join(ahead) or "none") if len(seeds) > 1 else "(one seed)"
        out.append(f"| `{method}` | {len(seeds)} | " + " | ".join(cells) + f" | {verdict} |")
    return out


def frozen_lab_goal(rows, method, factor=100.0, reference="kmeans"):
    """Whether ``method`` meets the issue's goal at ``factor`` on the training set: ahead of
    ``reference`` on balanced and tail ACC by more than one std of the paired differences, a
    mean largest / smallest cluster of at least 10 (an empty cluster fails) and a lower mean
    size-KL than ``reference``'s on the same seeds; each condition with its numbers."""
    by = _frozen_runs(rows, factor)
    own, ref = by.get(method, {}), by.get(reference, {})
    seeds = sorted(set(own) & set(ref))
    runs, base = [own[s] for s in seeds], [ref[s] for s in seeds]
    checks = []
    for key, label in FROZEN_AHEAD_KEYS:
        diffs = _frozen_diffs(runs, base, "train", key)
        checks.append((f"{label} ahead of `{reference}` beyond one std of the paired differences: "
                       f"{_mean_std(diffs, sign='+')}", _beyond_one_std(diffs)))
    all_runs = [own[s] for s in sorted(own)]
    ratios = [r["train"].get("largest_smallest") for r in all_runs]
    ratio_ok = bool(ratios) and None not in ratios and _mean(ratios) >= 10
    checks.append((f"mean largest / smallest cluster ≥ 10 (an empty cluster fails), over its {len(all_runs)} "
                   f"seeds: {_ratio_cell(all_runs, 'train') if all_runs else '-'}", ratio_ok))
    kl_seeds = [s for s in seeds if own[s]["train"].get("size_kl") is not None
                and ref[s]["train"].get("size_kl") is not None]
    kl_own = [own[s]["train"]["size_kl"] for s in kl_seeds]
    kl_ref = [ref[s]["train"]["size_kl"] for s in kl_seeds]
    kl_ok = bool(kl_seeds) and _mean(kl_own) < _mean(kl_ref)
    kl_text = f"{_mean(kl_own):.3f} vs {_mean(kl_ref):.3f}" if kl_seeds else "-"
    checks.append((f"mean size-KL below `{reference}`'s on the same seeds: {kl_text}", kl_ok))
    met = all(ok for _, ok in checks)
    return ([f"`{method}` at IF {factor:g}, training set, against `{reference}` on {len(seeds)} shared seeds:", ""]
            + [f"- {text}: {'yes' if ok else 'no'}" for text, ok in checks]
            + ["", f"**Goal {'met' if met else 'not met'}** ({sum(ok for _, ok in checks)} of {len(checks)} "
                   "conditions)."])


def _replace_if_marked(text, name, lines):
    """``replace_block`` where the page has the block's markers; the page unchanged where not."""
    return replace_block(text, name, lines) if f"<!-- {name}:start -->" in text else text


def frozen_section(text, rows):
    """The frozen-feature lab's blocks (``frozen-if{IF}-train/test/paired`` per imbalance factor
    present, and ``frozen-goal``), each only where the page has its markers."""
    present = {float(r["imbalance_factor"]) for r in rows if r.get("encoder", FROZEN_ENCODER) == FROZEN_ENCODER}
    for factor in FROZEN_FACTORS:
        if factor not in present:
            continue
        name = f"frozen-if{int(factor)}"
        text = _replace_if_marked(text, f"{name}-train", frozen_lab_table(rows, factor, "train"))
        text = _replace_if_marked(text, f"{name}-test", frozen_lab_table(rows, factor, "test"))
        text = _replace_if_marked(text, f"{name}-paired", frozen_lab_paired(rows, factor))
    goal = []
    for method in FROZEN_GOAL_METHODS:
        if _frozen_runs(rows, 100.0).get(method):
            goal += frozen_lab_goal(rows, method) + [""]
    return _replace_if_marked(text, "frozen-goal", goal[:-1])


CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def frozen_resolution_table(rows):
    """Lite0's input size and normalisation: k-means on the balanced test set's features
    (mean ± std over seeds) and the encoding rate."""
    out = ["| image size | normalisation | images / s (bf16, 2 cores) | NMI | ACC | bal. ACC |",
           "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r[k + '_mean']:.3f} ± {r[k + '_std']:.3f}" for k in ("nmi", "acc", "balanced_acc")]
        cells = [str(r["image_size"]), r["normalization"], f"{r['images_per_s']:.0f}", *cells]
        out.append("| " + " | ".join(cells) + " |")
    return out


def frozen_joint_cost_table(row, images=12_406, views=2):
    """Training Lite0's last block: views per second of each part and what one epoch of
    CIFAR-10-LT IF 100 (``images`` x ``views`` augmented views) would take with it."""
    out = [f"| part (batch {row['batch']}, {row['image_size']} px, bf16) | views / s | one epoch of IF 100, "
           f"{images:,} images x {views} views |", "|---|---:|---:|"]
    for label, key in (("whole encoder, forward + backward, last stage trainable", "views_per_s_full"),
                       ("frozen prefix, forward only (cacheable once per view)", "views_per_s_prefix_forward"),
                       ("trainable suffix on the cached prefix, forward + backward", "views_per_s_suffix")):
        out.append(f"| {label} | {row[key]:.0f} | {images * views / row[key] / 60:.1f} min |")
    return out


def frozen_tail_table(rows):
    """Is each class a cluster of the frozen features? Per class and imbalance factor: its images,
    the share of its 10 nearest neighbours in its class, and the share of its images in
    over-clusters (10 K) where it is the majority."""
    factors = [r["imbalance_factor"] for r in rows]
    head = " | ".join(f"IF {f:g}: images / 10-NN same class / in own-majority clusters (of {10 * 10})"
                      for f in factors)
    out = [f"| class | {head} |", "|---|" + "---:|" * len(rows)]
    for c, name in enumerate(CIFAR10_NAMES[: len(rows[0]["class_counts"])]):
        cells = [f"{r['class_counts'][c]} / {r['knn10_same_class'][c]:.2f} / {r['own_majority_share_100'][c]:.2f}"
                 f" ({r['own_majority_clusters_100'][c]})" for r in rows]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def budget_section(text, short, long):
    """The 80-epoch section: its tables, the change from 8 epochs, the paired differences
    against ``dcl`` and the plots, from the queue's rows."""
    budget = f"{long[0]['epochs']} epochs" if long else ""
    text = replace_block(text, "queue80-cost", queue_cost())
    text = replace_block(text, "quality80-train", quality_table(long, "train", cost=False))
    text = replace_block(text, "quality80-test", quality_table(long, "test", cost=False))
    text = replace_block(text, "budget80", budget_table(short, long))
    text = replace_block(text, "paired80", paired_table(long, methods=[p for p in PRESETS_80 if p != "dcl"]))
    text = replace_block(text, "lead80", lead_table(long))
    text = replace_block(text, "features80", features_table(long))
    for split in ("train", "test"):
        plot_per_class(long, split, DOC.parent / "assets" / f"queue80_per_class_{split}.png", budget)
    plot_cluster_sizes(long, DOC.parent / "assets" / "queue80_cluster_sizes.png", budget=budget)
    return text


def replace_block(text, name, lines):
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/benchmarks.md has no <!-- {name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + "\n".join(lines) + "\n" + m.group(2), text)


def main() -> None:
    text = DOC.read_text()
    speed_path, quality_path = HERE / "results" / "speed.json", HERE / "results" / "quality.json"
    if speed_path.exists():
        speed = json.loads(speed_path.read_text())
        for name, fn in (("loss", loss_table), ("kmeans", kmeans_table), ("metrics", metrics_table),
                         ("throughput", throughput_table), ("transport", transport_table)):
            if name in speed:
                text = _replace_if_marked(text, name, fn(speed[name]))
    ablations_path = HERE / "results" / "ablations.json"
    ablations = json.loads(ablations_path.read_text()) if ablations_path.exists() else []
    if ablations:
        text = replace_block(text, "ablations", ablation_table(ablations))
        plot_cluster_sizes(ablations, DOC.parent / "assets" / "ablation_cluster_sizes.png")
        plot_per_class([r for r in ablations if r["variant"] in PER_CLASS_VARIANTS], "train",
                       DOC.parent / "assets" / "ablation_per_class_train.png")
    digits_path = HERE / "results" / "digits_seeds.json"
    if digits_path.exists():
        text = replace_block(text, "digits", digits_table(json.loads(digits_path.read_text())))
    if quality_path.exists():
        # the dcl_cluster rows: ablation runs of exactly the shipped preset (same budget, seeds)
        quality = json.loads(quality_path.read_text()) + shipped_preset_rows(ablations) + new_objective_rows()
        text = replace_block(text, "quality-train", quality_table(quality, "train"))
        text = replace_block(text, "quality-test", quality_table(quality, "test"))
        text = replace_block(text, "paired", paired_table(quality))
        for split in ("train", "test"):
            plot_per_class(quality, split, DOC.parent / "assets" / f"quality_per_class_{split}.png")
        plot_cluster_sizes(quality, DOC.parent / "assets" / "quality_cluster_sizes.png")
        queue_path = HERE / "results" / f"queue_{QUEUE_PLAN}.json"
        if queue_path.exists():
            short = [r for r in quality if r.get("epochs") == 8]
            keys = [(r["preset"], r["imbalance_factor"], r["seed"]) for r in short]
            if len(keys) != len(set(keys)):
                raise SystemExit("two 8-epoch rows for one (preset, IF, seed): the 80-epoch section pairs one per seed")
            text = budget_section(text, short, json.loads(queue_path.read_text()))
        late_path = HERE / "results" / "quality_late_warmup.json"
        if late_path.exists():
            text = replace_block(text, "warmup", warmup_table(quality, json.loads(late_path.read_text()), ablations))
    scan_path = HERE / "results" / "scan_confidence.json"
    if scan_path.exists():
        text = replace_block(text, "scan-confidence", scan_confidence_table(json.loads(scan_path.read_text())))
    frozen_path = HERE / "results" / "frozen_lab.json"
    if frozen_path.exists():
        text = frozen_section(text, json.loads(frozen_path.read_text()))
    for name, table in (("frozen_lab_resolution", frozen_resolution_table), ("frozen_lab_tail", frozen_tail_table),
                        ("frozen_lab_joint_cost", frozen_joint_cost_table)):
        path = HERE / "results" / f"{name}.json"
        if path.exists():
            text = _replace_if_marked(text, name.replace("_", "-"), table(json.loads(path.read_text())))
    from benchmarks import frozen_path

    for name, table_fn in (("cache", frozen_path.table), ("head", frozen_path.head_table)):
        path = HERE / "results" / f"frozen_path_{name}.json"
        if path.exists():
            text = _replace_if_marked(text, f"frozen-path-{name}", table_fn(json.loads(path.read_text())))
    from benchmarks import folder_route, preset_epochs

    route_path = HERE / "results" / "folder_route.json"
    if route_path.exists():
        text = _replace_if_marked(text, "folder-route", folder_route.table(json.loads(route_path.read_text())))
    presets_path = HERE / "results" / "preset_epochs.json"
    if presets_path.exists():
        preset_rows = json.loads(presets_path.read_text())["rows"]
        text = _replace_if_marked(text, "preset-steps", preset_epochs.table(preset_rows))
    k_real_path = HERE / "results" / "estimate_k_real.json"
    if k_real_path.exists():
        from benchmarks.estimate_k import real_table as k_real_table

        text = _replace_if_marked(text, "estimate-k-real", k_real_table(json.loads(k_real_path.read_text())))
    DOC.write_text(text)
    print(f"wrote {DOC}", file=sys.stderr)
    pretrained_path = HERE / "results" / "scratch_vs_pretrained.json"
    if pretrained_path.exists():
        page = DOC.parent / "guides" / "scratch-or-pretrained.md"
        page.write_text(replace_block(page.read_text(), "pretrained",
                                      pretrained_table(json.loads(pretrained_path.read_text()))))
        print(f"wrote {page}", file=sys.stderr)


if __name__ == "__main__":
    main()
