"""The benchmark queue (benchmarks/jobqueue.py): a queue killed mid-job and resumed writes the
rows of an uninterrupted one; the plans expand as the docs say; the GPU evidence script's smoke
mode runs."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import jobqueue  # noqa: E402

PLAN = "smoke_digits"
WARMUP, DCL, DCL_CLUSTER = "warmup-debiased-if10-s0-e4-w2", "dcl-if10-s0-e4", "dcl_cluster-if10-s0-e4"


def dirs(root: Path) -> list[str]:
    return ["--state-dir", str(root / "state"), "--results-dir", str(root / "results")]


def killed_run(root: Path, at: str) -> subprocess.CompletedProcess:
    """``run`` in a new process that SIGKILLs itself at ``job:epoch:batch``."""
    env = {**os.environ, jobqueue.KILL_ENV: at, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "benchmarks.jobqueue", "run", PLAN, *dirs(root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def rows(root: Path) -> dict[str, dict]:
    data = json.loads((root / "results" / f"queue_{PLAN}.json").read_text())
    return {row["job"]: row for row in data}


def test_a_killed_queue_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path):
    jobqueue.main(["run", PLAN, *dirs(tmp_path / "full")])
    full = rows(tmp_path / "full")
    assert set(full) == {DCL, DCL_CLUSTER}

    part = tmp_path / "part"
    # 1. killed in the shared warm-up's second epoch: it resumes from its first epoch's checkpoint
    out = killed_run(part, f"{WARMUP}:1:3")
    assert out.returncode == -signal.SIGKILL, out.stdout[-2000:] + out.stderr[-2000:]
    status = jobqueue.main(["status", PLAN, *dirs(part)])
    assert f"{WARMUP}" in status.split("partial:")[1] and "epoch 1/2" in status
    assert (part / "state" / PLAN / WARMUP / "last.ckpt").exists()
    # 2. killed in dcl_cluster's second epoch after the warm-up (its clustering started at epoch 2)
    out = killed_run(part, f"{DCL_CLUSTER}:3:2")
    assert out.returncode == -signal.SIGKILL, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"resuming {WARMUP} from its last checkpoint (epoch 1 of 2)" in out.stdout
    status = jobqueue.main(["status", PLAN, *dirs(part)])
    assert "2 done, 1 partial" in status and "epoch 3/4 (from 2)" in status
    assert set(rows(part)) == {DCL}
    # a new machine gets the repository: the committed state and results, not the local files
    # that benchmarks/queue_state/.gitignore keeps out (the running job's last.ckpt among them)
    fresh = tmp_path / "fresh"
    shutil.copytree(part, fresh)
    ignored = [line for line in (REPO / "benchmarks" / "queue_state" / ".gitignore").read_text().splitlines()
               if line and not line.startswith(("#", "!"))]
    dropped = [p for pattern in ignored for p in (fresh / "state").rglob(pattern)]
    assert fresh / "state" / PLAN / DCL_CLUSTER / "last.ckpt" in dropped
    for path in dropped:
        path.unlink()
    assert (fresh / "state" / PLAN / WARMUP / "final.ckpt").exists()  # committed: the tail restarts from it
    # 3. resumed here, in another process than the ones that started the jobs, and on the "new machine"
    jobqueue.main(["run", PLAN, *dirs(part)])
    jobqueue.main(["run", PLAN, *dirs(fresh)])
    resumed, elsewhere = rows(part), rows(fresh)
    assert resumed[DCL_CLUSTER]["resumes"] == 1 and full[DCL_CLUSTER]["resumes"] == 0
    for job, row in full.items():
        for key, value in row.items():
            if key not in jobqueue._TIMING_KEYS:
                assert resumed[job][key] == value, (job, key)
                assert elsewhere[job][key] == value, (job, key)
        assert len(resumed[job]["epoch_times_s"]) == 4
    assert full[DCL_CLUSTER]["train"]["source"] == "head" and full[DCL]["train"]["source"] == "k-means"
    assert full[DCL]["epoch_loss"][:2] == full[DCL_CLUSTER]["epoch_loss"][:2]  # the shared warm-up
    status = jobqueue.main(["status", PLAN, *dirs(part)])
    assert status.splitlines()[0].endswith("3 jobs: 3 done") and "time left: 0 s of" in status
    # the warm-up's checkpoint is dropped once every run that needs it is done
    assert not list((part / "state" / PLAN).glob("*/*.ckpt"))


def test_the_contrastive_preset_resumed_from_its_warm_up_is_its_run_from_scratch(tmp_path):
    import lightning.pytorch as pl
    import torch

    from benchmarks import quality
    from dcl_cluster import DebiasedClusterModule, LongTailDataModule

    jobqueue.main(["run", PLAN, *dirs(tmp_path), "--only", "warmup", "dcl-"])
    row = rows(tmp_path)[DCL]
    assert row["started_from"] == WARMUP
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the plan: float sums depend on the thread count
    try:
        pl.seed_everything(0)
        dm = LongTailDataModule("digits", imbalance_factor=10, batch_size=64, seed=0)
        module = DebiasedClusterModule.from_preset("dcl", backbone_width=8, lr=1e-3, channels_last=True)
        pl.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, limit_val_batches=0).fit(module, datamodule=dm)
        scratch = quality.score(module, dm, 0)
    finally:
        torch.set_num_threads(threads)
    for split in ("train", "test"):
        assert row[split]["cluster_sizes"] == scratch[split]["cluster_sizes"]
        assert row[split]["nmi"] == scratch[split]["nmi"]


def test_a_second_runner_of_the_same_plan_exits(tmp_path):
    queue = jobqueue.Queue(jobqueue.load_plan(PLAN), tmp_path / "state", tmp_path / "results")
    with queue.lock():
        assert "pid" in queue.holder()
        with pytest.raises(SystemExit, match="already being run"):
            jobqueue.main(["run", PLAN, *dirs(tmp_path)])
    assert queue.holder() is None


def test_the_80_epoch_plan_shares_two_warm_ups_per_seed():
    from benchmarks.quality import RECIPES

    plan = jobqueue.load_plan("cifar10_lt_80")
    assert plan["presets"] == ["simclr", "dcl", "cc", "sic", "dcl_cluster", "p2ot", "scan"]
    for preset, fraction in RECIPES["cpu"]["warmup_fraction"].items():
        if preset in plan["presets"]:
            assert plan["warmup_fraction"][preset] == fraction, preset
    jobs = {job.id: job for job in jobqueue.expand(plan)}
    assert len(jobs) == 3 * (7 + 3)
    seed0 = {job.preset if job.kind == "run" else job.id: job for job in jobs.values() if job.seed == 0}
    w40, w60 = seed0["warmup-info_nce-if100-s0-e80-w40"], seed0["warmup-info_nce-if100-s0-e80-w60"]
    dw60 = seed0["warmup-debiased-if100-s0-e80-w60"]
    assert (w40.preset, w60.preset, dw60.preset) == ("simclr", "simclr", "dcl")
    assert w60.start_from == w40.id and (w60.start_epoch, w60.stop) == (40, 60)
    assert {p: (seed0[p].start_from, seed0[p].start_epoch) for p in plan["presets"]} == {
        "simclr": (w60.id, 60), "cc": (w40.id, 40), "sic": (w40.id, 40), "scan": (w60.id, 60),
        "dcl": (dw60.id, 60), "dcl_cluster": (dw60.id, 60), "p2ot": (dw60.id, 60)}
    assert all(job.epochs == 80 for job in jobs.values())  # one learning-rate schedule for all
    est = jobqueue.estimates(jobqueue.Queue(plan, Path("/nonexistent"), Path("/nonexistent")))
    assert est["holder"] is None and 4 * 3600 < est["total_s"] < 8 * 3600


def test_gpu_evidence_smoke(tmp_path):
    from benchmarks import gpu_evidence

    out = tmp_path / "gpu_evidence.json"
    result = gpu_evidence.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text())["presets"].keys() == result["presets"].keys()
    assert {r["views"] for r in result["loader"]} == {2, 3}
    assert all(r["images_per_s"] > 0 and r["epochs"] == 1 and r["batches"] >= 1 for r in result["loader"])
    for preset in ("dcl", "dcl_cluster", "p2ot"):
        row = result["presets"][preset]
        assert row["epochs_run"] >= 1 and row["contrastive"]["images_per_s"] > 0
    assert "clustering" in result["presets"]["dcl_cluster"]
