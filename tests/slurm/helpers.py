"""Submitting to the local SLURM cluster and waiting on its jobs (``scontrol show job``)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import tiny_overrides

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}
JOB_TIMEOUT_S = 420


def run_overrides(world: dict[str, Path], out_dir: Path, **extra: object) -> list[str]:
    """The tiny CPU run of the slurm tests: deterministic, wandb offline, periodic checkpoints off."""
    base: dict[str, object] = {"trainer__accelerator": "cpu", "run__deterministic": "true",
                               "logging__wandb__mode": "offline"}
    base.update(extra)
    return tiny_overrides(world, out_dir, **base)


def rewarm(args: list[str], env: dict[str, str], log: Path | None = None,
           timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python -m rewarm ARGS`` (output kept; also written to ``log`` when given)."""
    res = subprocess.run([sys.executable, "-m", "rewarm", *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if log is not None:
        log.write_text(res.stdout + res.stderr)
    return res


def submit(args: list[str], env: dict[str, str]) -> str:
    """``rewarm slurm ARGS --submit --cpus-per-task 1 --time 10:00``; returns the job id."""
    res = rewarm(["slurm", *args, "--submit", "--cpus-per-task", "1", *(["--time", "10:00"] if "--time" not in args else [])],
                 env, timeout=120)
    m = re.search(r"Submitted batch job (\d+)", res.stdout)
    assert res.returncode == 0 and m, f"rewarm slurm --submit failed:\n{res.stdout}\n{res.stderr}"
    return m.group(1)


def job_tasks(job_id: str, env: dict[str, str]) -> list[dict[str, str]]:
    """``scontrol show job -o JOB`` as key=value pairs, one dict per line (an array job: one per task)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out if line.strip()]


def job(job_id: str, env: dict[str, str]) -> dict[str, str]:
    return job_tasks(job_id, env)[0]


def wait_for(job_id: str, env: dict[str, str], states: set[str], timeout_s: float = JOB_TIMEOUT_S,
             ) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = job(job_id, env)
        if info["JobState"] in states:
            return info
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not in {states} after {timeout_s} s: {job(job_id, env)}")


def wait_done(job_id: str, env: dict[str, str], timeout_s: float = JOB_TIMEOUT_S) -> dict[str, str]:
    return wait_for(job_id, env, FINAL_STATES, timeout_s)


def wait_array_done(job_id: str, env: dict[str, str], size: int, timeout_s: float = JOB_TIMEOUT_S,
                    ) -> list[dict[str, str]]:
    """Until all ``size`` tasks of array job ``job_id`` have ended; their records, by task id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tasks = [t for t in job_tasks(job_id, env) if t.get("ArrayTaskId", "").isdigit()]
        if len(tasks) == size and all(t["JobState"] in FINAL_STATES for t in tasks):
            return sorted(tasks, key=lambda t: int(t["ArrayTaskId"]))
        time.sleep(0.5)
    raise AssertionError(f"array job {job_id} not done after {timeout_s} s: {job_tasks(job_id, env)}")


def wait_for_rows(metrics: Path, rows: int, job_id: str, env: dict[str, str], timeout_s: float = 240) -> None:
    """Until ``metrics.csv`` holds ``rows`` complete rows (the job must keep running meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text().count("\n") > rows:
            return
        state = job(job_id, env)["JobState"]
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"job {job_id} is {state} before row {rows}"
        time.sleep(0.05)
    raise AssertionError(f"{metrics} has fewer than {rows} rows after {timeout_s} s")


def wait_until(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s"
        time.sleep(0.1)


def tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.is_file() else f"(no {path})"


def cancel_all(job_ids: list[str], env: dict[str, str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], env=env, capture_output=True, check=False)
