"""The README's default run over seeds, with the shipped ``dcl_cluster`` objective and the 0.1.0 one.

Runs ``dcl-cluster fit --config examples/configs/digits_lt.yaml`` as a user would (one
process per run), seeding both the long-tailed draw and the training with each seed, and
records the closing report (``final_metrics.json``): does the objective chosen on
CIFAR-10-LT also hold on the embedded digits?

    python -m benchmarks.digits_seeds --seeds 0 1 2

Writes ``benchmarks/results/digits_seeds.json`` after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "examples" / "configs" / "digits_lt.yaml"

#: name -> command-line overrides of the default config
OBJECTIVES = {
    "shipped": [],
    "0.1.0 (per-batch targets, size_exponent 0.5, no anchor loss)": [
        "--model.objectives", json.dumps([
            {"class_path": "dcl_cluster.objectives.DebiasedContrastive", "init_args": {"tau_plus": "cluster_prior"}},
            {"class_path": "dcl_cluster.objectives.DECClustering",
             "init_args": {"target": "batch", "size_exponent": 0.5}}])],
    # the objectives added in 0.2, each a method config after the default one (same budget)
    **{name: ["--config", str(HERE.parent / "examples" / "configs" / "method" / f"{name}.yaml")]
       for name in ("p2ot", "scan", "scan_prior")},
}


#: --smoke runs these: the default config, the 0.1.0 objective by term list, a 0.2 method config
SMOKE_OBJECTIVES = [*list(OBJECTIVES)[:2], "scan"]

#: --smoke: two epochs (one of warm-up), for CI
SMOKE = ["--trainer.max_epochs", "2", "--model.warmup_epochs", "1", "--trainer.check_val_every_n_epoch", "1",
         "--evaluator.every_n_epochs", "1"]


def run(seed: int, overrides: list[str], threads: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        cmd = [sys.executable, "-m", "dcl_cluster.cli", "fit", "--config", str(CONFIG),
               "--seed_everything", str(seed), "--data.seed", str(seed), "--trainer.default_root_dir", root,
               "--trainer.logger.init_args.save_dir", root, *overrides]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"seed {seed} {overrides} failed:\n{out.stderr[-4000:]}")
        report = json.loads(next(Path(root).rglob("final_metrics.json")).read_text())
    return {"seed": seed, "wall_s": wall, "report": report}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "digits_seeds.json")
    parser.add_argument("--smoke", action="store_true", help="one seed, two epochs, results not written: for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.out, args.objectives = [0], None, SMOKE_OBJECTIVES
    # rows of other objectives or seeds already measured are kept; a rerun replaces its own
    rows = json.loads(args.out.read_text()) if args.out is not None and args.out.exists() else []
    for seed in args.seeds:
        for name in args.objectives:
            overrides = OBJECTIVES[name] + (SMOKE if args.smoke else [])
            rows = [r for r in rows if (r["objective"], r["seed"]) != (name, seed)]
            rows.append({"objective": name, **run(seed, overrides, args.threads)})
            train = rows[-1]["report"]["train (LT)"]["head"]
            print(name, seed, f"train NMI {train['nmi']:.3f}", f"{rows[-1]['wall_s']:.0f} s", flush=True)
            if args.out is not None:  # after every run, so an interrupted sweep keeps what it has
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
