"""A job whose time limit runs out gets the ``--signal=USR1@<lead>`` warning from the scheduler (slurmctld sends
it from its periodic time-limit check, up to 30 s early), checkpoints at a step boundary, requeues itself and
finishes. The time limit is cut to one minute (SLURM's smallest) once training runs, so the warning lands
mid-training whatever the machine's speed; once the job is requeued it gets its 10 minutes back, so the test
ends after one restart."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from rewarm.training.metrics import read_metrics
from tests.slurm.helpers import cancel_all, job, rewarm, run_overrides, submit, tail, wait_done, wait_for_rows

pytestmark = pytest.mark.slurm
LEAD_S = 50  # --signal-seconds: with a 60 s limit the warning comes at the first check after 10 s of run time
TRAIN_S = 45  # training long enough that the warning (<= 32 s after the cut) lands mid-run


def _steps_per_second(world: dict[str, Path], config: Path, env: dict[str, str], out: Path) -> float:
    """Optimizer steps per second of the tiny run here, from a short local run's perf/tokens_per_sec."""
    res = rewarm(["train", str(config), *run_overrides(world, out, trainer__max_steps=40, trainer__val_every_steps=0,
                                                       logging__wandb__mode="disabled")], env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = read_metrics(out / "t" / "metrics.csv")
    tps = sorted(float(r["perf/tokens_per_sec"]) for r in rows[10:] if r.get("perf/tokens_per_sec"))
    return tps[len(tps) // 2] / (2 * 16)  # micro-batch 2 x seq_len 16 tokens per step


def _set_time_limit(job_id: str, limit: str, env: dict[str, str]) -> None:
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={limit}"], env=env, check=True)


def test_time_limit_warning_checkpoints_requeues_and_finishes(tiny_world, empty_yaml, slurm_env, tmp_path) -> None:
    max_steps = max(300, int(_steps_per_second(tiny_world, empty_yaml, slurm_env, tmp_path / "calib") * TRAIN_S))
    runs = tmp_path / "runs"
    args = [str(empty_yaml), *run_overrides(tiny_world, runs, trainer__max_steps=max_steps, trainer__val_every_steps=0),
            "--signal-seconds", str(LEAD_S)]
    job_id = submit(args, slurm_env)
    run_dir = runs / "t"
    try:
        wait_for_rows(run_dir / "metrics.csv", 3, job_id, slurm_env)
        _set_time_limit(job_id, "1", slurm_env)  # 1 minute from the job's start
        deadline = time.monotonic() + 120
        while job(job_id, slurm_env)["Restarts"] == "0" and time.monotonic() < deadline:
            time.sleep(0.1)
        _set_time_limit(job_id, "10", slurm_env)  # the restarted job may run to the end
        info = wait_done(job_id, slurm_env)
    finally:
        cancel_all([job_id], slurm_env)
    log = (run_dir / f"slurm-{job_id}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{tail(run_dir / f'slurm-{job_id}.out')}"
    assert log.count("received signal SIGUSR1") == 1 and f"requeueing SLURM job {job_id}" in log
    assert "restart 1" in log and "DUE TO TIME LIMIT" not in log
    step = int(log.split("resuming at step ")[1].split()[0].rstrip(":,"))
    assert 3 <= step < max_steps
    steps = [int(r["step"]) for r in read_metrics(run_dir / "metrics.csv")]
    assert steps == list(range(max_steps + 1))  # each step once, none lost
    assert json.loads((run_dir / "summary.json").read_text())["step"] == max_steps
