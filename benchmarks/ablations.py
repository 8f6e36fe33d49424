"""Ablations of the ``dcl_cluster`` objective on CIFAR-10-LT under the quality benchmark's budget.

Each variant changes one setting of :data:`REFERENCE`, the ``dcl_cluster`` preset as it
stood before these ablations (issue 8): ``tau+`` constant / uniform /
cluster prior, DEC ``size_exponent``, warm-up length, ``gamma``, the prior from the head
or from k-means only, the anchor loss, per-batch / dataset-wide / prior-matched targets,
and a cluster head on detached features; then combinations of the changes that helped.

The variants share the contrastive warm-up, which does not depend on any of these
settings: per (imbalance factor, seed) it is trained once and checkpointed at the end of
every warm-up length in use, and each variant resumes from its checkpoint. Resuming is an
exact continuation (``tests/test_module.py::test_resume_*``), so each row is the run the
variant would make from scratch, at a fraction of the time. All variants run in this
process; ``wall_s`` is the warm-up's share plus the variant's own epochs.

    python -m benchmarks.ablations --seeds 0 1 2 --imbalance-factors 100 --epochs 8
    python -m benchmarks.ablations --smoke     # CI: digits, 2 epochs, two variants

Writes ``benchmarks/results/ablations.json`` after every variant.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl

from benchmarks.legacy_settings import flat_from_terms, split_overrides, terms_from_flat
from benchmarks.quality import RECIPES, export_shared_cifar10, score, warmup_epochs

HERE = Path(__file__).resolve().parent

#: The dcl_cluster preset the ablations started from (0.1.0 before issue 8), written out so
#: that the rows keep their meaning whatever the preset becomes; warm-up: half the epochs.
REFERENCE: dict = {"contrastive": "debiased", "tau_plus": "cluster_prior", "clustering": "dec", "gamma": 1.0,
                   "delta": 0.0, "size_exponent": 0.5, "dec_target": "batch", "dec_input": "clean"}
REFERENCE_WARMUP = 0.5

#: name -> overrides of REFERENCE; ``warmup_epochs`` as a fraction of the epochs
VARIANTS: dict[str, dict] = {
    "reference": {},
    "tau+ 0.1 (= uniform 1/K, K = 10)": {"tau_plus": 0.1},
    "size_exponent 1": {"size_exponent": 1.0},
    "size_exponent 0": {"size_exponent": 0.0},
    "warm-up 1/4": {"warmup_epochs": 0.25},
    "warm-up 3/4": {"warmup_epochs": 0.75},
    "gamma 0.3": {"gamma": 0.3},
    "gamma 3": {"gamma": 3.0},
    "prior from k-means only": {"prior_momentum": 1.0},
    "anchor loss on": {"delta": 1.0},
    "dataset-wide targets": {"dec_target": "dataset"},
    "prior-matched targets": {"dec_target": "prior"},
    "prior-matched, k-means prior": {"dec_target": "prior", "prior_momentum": 1.0},
    # combinations of the single changes that helped
    "prior-matched + anchor": {"dec_target": "prior", "delta": 1.0},
    "prior-matched + warm-up 3/4": {"dec_target": "prior", "warmup_epochs": 0.75},
    "prior-matched + anchor + warm-up 3/4": {"dec_target": "prior", "delta": 1.0, "warmup_epochs": 0.75},
    # the clustering terms train the head only; the encoder learns from the contrastive loss alone
    "detached head": {"detach_cluster_input": True},
    "detached head + prior-matched": {"detach_cluster_input": True, "dec_target": "prior"},
    "detached head + prior-matched + anchor": {"detach_cluster_input": True, "dec_target": "prior", "delta": 1.0},
}

#: the variants drawn in docs/benchmarks.md's per-class plot (all of them would be unreadable)
PER_CLASS_VARIANTS = ("reference", "warm-up 3/4", "anchor loss on", "prior-matched targets", "detached head",
                      "prior-matched + anchor + warm-up 3/4")

#: the variants that run the shipped dcl_cluster objective, at half and at 3/4 warm-up (the
#: dcl_cluster rows of docs/benchmarks.md's warm-up table)
LATE_START_VARIANTS = ("prior-matched + anchor", "prior-matched + anchor + warm-up 3/4")

_unknown = sorted(set(PER_CLASS_VARIANTS + LATE_START_VARIANTS) - set(VARIANTS))
if _unknown:
    raise ValueError(f"not ablation variants: {_unknown}; the names are the keys of VARIANTS")


def run_chain(args, seed: int, imbalance_factor: float, names: list[str]):
    """Train the shared warm-up once, then every variant from its checkpoint; yields rows."""
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dcl_cluster import DebiasedClusterModule, LongTailDataModule

    torch.set_num_threads(args.threads)
    recipe = RECIPES["cpu"]

    def datamodule():
        return LongTailDataModule(args.dataset, args.data_dir, imbalance_factor=imbalance_factor,
                                  batch_size=args.batch_size or recipe["batch_size"], seed=seed, clean_view=True)

    def module(**overrides):
        objective, module_args = split_overrides(overrides)
        return DebiasedClusterModule(objectives=terms_from_flat({**REFERENCE, **objective}),
                                     **{"backbone_width": args.width, "lr": recipe["lr"], "channels_last": True,
                                        **module_args})

    def trainer(**kwargs):
        return pl.Trainer(max_epochs=args.epochs, logger=False, enable_progress_bar=False,
                          enable_model_summary=False, limit_val_batches=0, precision=args.precision, **kwargs)

    warmups = {name: warmup_epochs(args.epochs, VARIANTS[name].get("warmup_epochs", REFERENCE_WARMUP))
               for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        pl.seed_everything(seed)
        saver = ModelCheckpoint(tmp, filename="warmup-{epoch}", every_n_epochs=1, save_top_k=-1)
        last = max(warmups.values())
        start = time.perf_counter()
        shared = trainer(callbacks=[saver, StopAfter(last)], enable_checkpointing=True)
        shared.fit(module(warmup_epochs=last), datamodule=datamodule())
        warmup_wall = (time.perf_counter() - start) / last  # per epoch
        for name in names:
            overrides = {**VARIANTS[name], "warmup_epochs": warmups[name]}
            pl.seed_everything(seed)
            model, dm = module(**overrides), datamodule()
            start = time.perf_counter()
            trainer(enable_checkpointing=False).fit(model, datamodule=dm,
                                                    ckpt_path=Path(tmp) / f"warmup-epoch={warmups[name] - 1}.ckpt")
            wall = time.perf_counter() - start + warmup_wall * warmups[name]
            # what the row ran, whatever the preset becomes (in the 0.1 flat form of every row)
            settings = {**{k: v for k, v in model.hparams.items() if k != "objectives"},
                        **flat_from_terms(model.hparams.objectives)}
            yield {"preset": "dcl_cluster", "variant": name, "settings": settings, "overrides": overrides, "seed": seed,
                   "imbalance_factor": imbalance_factor, "epochs": args.epochs, "precision": args.precision,
                   "width": args.width, "wall_s": wall, **score(model, dm, seed)}


class StopAfter(pl.Callback):
    """Stop training after ``epochs`` epochs (the end of the shared warm-up)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--imbalance-factors", nargs="+", type=float, default=[100.0, 10.0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--dataset", default="npz")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ablations.json")
    parser.add_argument("--smoke", action="store_true", help="digits, 2 epochs, two variants: for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.dataset, args.data_dir, args.epochs, args.width, args.precision = "digits", None, 3, 8, "32-true"
        args.variants, args.seeds, args.imbalance_factors, args.batch_size = (
            ["reference", "warm-up 1/4"], [0], [10.0], 64)
    elif args.dataset == "npz" and args.data_dir is None:
        args.data_dir = export_shared_cifar10()
    rows = json.loads(args.out.read_text()) if args.out.exists() and not args.smoke else []
    for imbalance_factor in args.imbalance_factors:
        for seed in args.seeds:
            for row in run_chain(args, seed, imbalance_factor, args.variants):
                rows = [r for r in rows if (r["variant"], r["seed"], r["imbalance_factor"], r["epochs"])
                        != (row["variant"], seed, imbalance_factor, args.epochs)] + [row]
                print(json.dumps({k: row[k] for k in ("variant", "seed", "imbalance_factor", "wall_s")}),
                      f"NMI {row['train']['nmi']:.3f}", flush=True)
                if not args.smoke:  # after every variant, so an interrupted run keeps what it has
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
