"""Elastic resume under the real SLURM of slurm/local-cluster.sh: a job of 2 tasks (DDP through ``srun``) is preempted
with USR1 (checkpoint, requeue), comes back as 1 task (the requeued job cancelled, the same command resubmitted with
``trainer.devices=1``: SLURM 22.05 cannot change a pending job's ``--ntasks-per-node``), resumes with
accumulation 2 in place of 2 ranks, and ends with the losses of an uninterrupted run: every step once, each loss
within 1e-5 relative of a local one-process run of the same global batch (the token stream does not depend on
the world size; reduction order is the only difference)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewarm.training.metrics import read_metrics
from tests.slurm.helpers import (
    cancel_all,
    job,
    run_overrides,
    submit,
    tail,
    wait_done,
    wait_for_rows,
    wait_until,
)

pytestmark = pytest.mark.slurm
MAX_STEPS = 40


def _overrides(world: dict[str, Path], out_dir: Path, devices: int) -> list[str]:
    # 4 rows per optimizer step: 2 ranks x 2 rows, then 1 rank x 2 rows x accumulation 2
    return run_overrides(world, out_dir, trainer__strategy="ddp", trainer__devices=devices,
                         trainer__global_batch_size=4, trainer__max_steps=MAX_STEPS, trainer__val_every_steps=0)


def _in_queue(job_id: str, env: dict[str, str]) -> bool:
    return bool(subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True).stdout.strip())


def _losses(metrics: Path) -> dict[int, float]:
    rows = read_metrics(metrics)
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert len(steps) == len(set(steps)), f"a step written twice: {steps}"
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def test_two_task_job_preempted_comes_back_as_one_task(tiny_world, empty_yaml, slurm_env, tmp_path) -> None:
    # the uninterrupted run, locally in one process (accumulation 2), while the job runs
    ref_env = {k: v for k, v in slurm_env.items() if not k.startswith("SLURM_")}
    ref_log = tmp_path / "reference.log"
    reference = subprocess.Popen([sys.executable, "-m", "rewarm", "train", str(empty_yaml),
                                  *_overrides(tiny_world, tmp_path / "ref", 1)], env=ref_env, cwd=os.getcwd(),
                                 stdout=open(ref_log, "w"), stderr=subprocess.STDOUT)
    runs, jobs = tmp_path / "runs", []
    run_dir = runs / "t"
    try:
        first = submit([str(empty_yaml), *_overrides(tiny_world, runs, 2)], slurm_env)
        jobs.append(first)
        wait_for_rows(run_dir / "metrics.csv", 4, first, slurm_env)
        subprocess.run(["scancel", "--signal=USR1", "--batch", first], env=slurm_env, check=True)
        # requeued by rank 0: pending until its BeginTime; it comes back on another allocation instead
        wait_until(lambda: job(first, slurm_env)["Restarts"] != "0" or job(first, slurm_env)["JobState"] in
                   ("COMPLETED", "FAILED", "CANCELLED"), 120)
        subprocess.run(["scancel", first], env=slurm_env, check=True)
        wait_until(lambda: not _in_queue(first, slurm_env), 60)
        log = (run_dir / f"slurm-{first}.out").read_text()
        assert "1 node(s) x 2 task(s), restart 0" in log and f"requeueing SLURM job {first}" in log, log[-4000:]
        manifests = [json.loads(m.read_text()) for m in run_dir.glob("checkpoints/*/manifest.json")]
        assert [m["reason"] for m in manifests] == ["preemption"], manifests
        step = manifests[0]["step"]
        assert 3 <= step < MAX_STEPS

        second = submit([str(empty_yaml), *_overrides(tiny_world, runs, 1)], slurm_env)  # resume=auto
        jobs.append(second)
        info = wait_done(second, slurm_env)
        log = (run_dir / f"slurm-{second}.out").read_text()
        assert info["JobState"] == "COMPLETED" and info["NumTasks"] == "1", f"{info}\n{log[-4000:]}"
        assert reference.wait(timeout=300) == 0, tail(ref_log)
    finally:
        cancel_all(jobs, slurm_env)
        if reference.poll() is None:
            reference.kill()
    assert "1 node(s) x 1 task(s), restart 0" in log and f"resuming at step {step}" in log, log[-4000:]
    assert "elastic resume: 2 ranks -> 1 rank, accumulation 1 -> 2, streams 64 unchanged" in log, log[-4000:]
    got, want = _losses(run_dir / "metrics.csv"), _losses(tmp_path / "ref" / "t" / "metrics.csv")
    assert sorted(got) == sorted(want) == list(range(MAX_STEPS)), (sorted(got), sorted(want))  # each step once
    far = {s: (got[s], want[s]) for s in want if not math.isclose(got[s], want[s], rel_tol=1e-5)}
    assert not far, f"losses off by more than 1e-5 relative (resumed at step {step}): {far}"
    assert json.loads((run_dir / "summary.json").read_text())["step"] == MAX_STEPS
