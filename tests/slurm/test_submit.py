"""``rewarm slurm CONFIG --submit`` under a real SLURM: a job runs to completion and its metrics equal a local
``rewarm train``; ``scancel --signal=USR1 --batch`` makes it checkpoint, requeue itself and continue as the same
run; ``scancel`` (SIGTERM to every process of the job, wandb's service included) makes it checkpoint after the
current step, and a resubmission continues from there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rewarm.checkpoints.store import find_latest_valid
from rewarm.training.metrics import read_metrics
from tests.resume.resume_helpers import comparable_rows
from tests.slurm.helpers import (
    cancel_all,
    job,
    rewarm,
    run_overrides,
    submit,
    tail,
    wait_done,
    wait_for_rows,
    wait_until,
)

pytestmark = pytest.mark.slurm
MAX_STEPS = 100  # a few seconds of training: long enough to signal it mid-run


def _overrides(world: dict[str, Path], out_dir: Path, **extra: object) -> list[str]:
    return run_overrides(world, out_dir, trainer__max_steps=MAX_STEPS, trainer__val_every_steps=50, **extra)


@pytest.fixture(scope="module")
def reference(tiny_world, empty_yaml: Path, slurm_env: dict[str, str], tmp_path_factory) -> Path:
    """metrics.csv of the uninterrupted local `rewarm train` of the run every test here submits."""
    out = tmp_path_factory.mktemp("local")
    res = rewarm(["train", str(empty_yaml), *_overrides(tiny_world, out)], slurm_env, out / "train.log")
    assert res.returncode == 0, tail(out / "train.log")
    return out / "t" / "metrics.csv"


@pytest.fixture()
def jobs(slurm_env: dict[str, str]):
    submitted: list[str] = []
    yield submitted
    cancel_all(submitted, slurm_env)


def _in_queue(job_id: str, env: dict[str, str]) -> bool:
    """Still listed by squeue (pending, running or completing)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True).stdout
    return bool(out.strip())


def _log(run_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(run_dir.glob("slurm-*.out")))


def _check_same_run(run_dir: Path, reference: Path) -> None:
    assert comparable_rows(run_dir / "metrics.csv") == comparable_rows(reference)
    steps = [int(r["step"]) for r in read_metrics(run_dir / "metrics.csv")]
    assert steps == sorted(set(steps)) and steps[-1] == MAX_STEPS  # no step written twice
    assert json.loads((run_dir / "summary.json").read_text())["step"] == MAX_STEPS


def test_submit_runs_to_completion(tiny_world, empty_yaml, slurm_env, reference, tmp_path, jobs) -> None:
    # Submitted from a process that uses wandb itself (a notebook): sbatch exports its WANDB_SERVICE, a service
    # the job cannot reach (on a cluster: another host). The job must start its own and keep logging to wandb.
    submitter_env = {**slurm_env, "WANDB_SERVICE": "3-1-unix-/nonexistent/wandb-core.sock"}
    job_id = submit([str(empty_yaml), *_overrides(tiny_world, tmp_path)], submitter_env)
    jobs.append(job_id)
    run_dir = tmp_path / "t"
    info = wait_done(job_id, slurm_env)
    assert info["JobState"] == "COMPLETED", f"{info}\n{tail(run_dir / f'slurm-{job_id}.out')}"
    for name in ("config.yaml", "metrics.csv", "summary.json", "wandb_id", "hf/config.json", "slurm/train.sbatch",
                 f"slurm-{job_id}.out"):
        assert (run_dir / name).is_file(), f"{name} missing from the run directory"
    assert json.loads((find_latest_valid(run_dir / "checkpoints") / "manifest.json").read_text())["reason"] == "end"
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert "wandb stopped working" not in (run_dir / f"slurm-{job_id}.out").read_text()
    _check_same_run(run_dir, reference)


def test_usr1_to_the_batch_shell_checkpoints_requeues_and_resumes(tiny_world, empty_yaml, slurm_env, reference,
                                                                  tmp_path, jobs) -> None:
    job_id = submit([str(empty_yaml), *_overrides(tiny_world, tmp_path)], slurm_env)
    jobs.append(job_id)
    run_dir = tmp_path / "t"
    wait_for_rows(run_dir / "metrics.csv", 4, job_id, slurm_env)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm_env, check=True)
    info = wait_done(job_id, slurm_env)
    log = _log(run_dir)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{log[-4000:]}"
    assert f"job {job_id}: 1 node(s) x 1 task(s), restart 0" in log
    assert f"job {job_id}: 1 node(s) x 1 task(s), restart 1" in log  # SLURM_RESTART_COUNT=1
    assert "received signal SIGUSR1" in log and f"requeueing SLURM job {job_id}" in log
    step = int(log.split("resuming at step ")[1].split()[0].rstrip(":,"))
    assert 3 <= step < MAX_STEPS
    manifests = [json.loads(m.read_text()) for m in run_dir.glob("checkpoints/*/manifest.json")]
    assert sorted((m["step"], m["reason"]) for m in manifests) == [(step, "preemption"), (MAX_STEPS, "end")]
    run_id = (run_dir / "wandb_id").read_text().strip()
    runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.endswith(f"-{run_id}") for r in runs), runs  # one wandb run, continued
    _check_same_run(run_dir, reference)


def test_cancel_then_resubmit_continues(tiny_world, empty_yaml, slurm_env, reference, tmp_path, jobs) -> None:
    args = [str(empty_yaml), *_overrides(tiny_world, tmp_path, checkpoint__every_steps=20)]
    first = submit(args, slurm_env)
    jobs.append(first)
    run_dir = tmp_path / "t"
    wait_for_rows(run_dir / "metrics.csv", 30, first, slurm_env)
    subprocess.run(["scancel", first], env=slurm_env, check=True)
    assert wait_done(first, slurm_env)["JobState"] == "CANCELLED"
    wait_until(lambda: not _in_queue(first, slurm_env), 60)  # every process of the job has ended
    info = job(first, slurm_env)
    assert (info["JobState"], info["Restarts"]) == ("CANCELLED", "0"), info  # a cancelled job stays cancelled
    assert "requeueing" not in (run_dir / f"slurm-{first}.out").read_text()
    last = find_latest_valid(run_dir / "checkpoints")
    assert last is not None and not (run_dir / "summary.json").exists()
    manifest = json.loads((last / "manifest.json").read_text())
    step = manifest["step"]
    # SIGTERM reached every process, wandb-core too: the run still checkpointed after its current step (not at 20).
    # A signal that lands on a periodic step (40, 60, ...) finds that step saved already: no second copy is written.
    signalled = manifest["reason"] == "preemption" or (manifest["reason"] == "periodic" and step % 20 == 0)
    assert signalled and step >= 30, (manifest, tail(run_dir / f"slurm-{first}.out"))
    assert int(read_metrics(run_dir / "metrics.csv")[-1]["step"]) == step  # no row after the checkpoint
    log = (run_dir / f"slurm-{first}.out").read_text()
    assert "received signal SIGTERM" in log and "Exited with exit code 3" in log, log[-4000:]

    second = submit(args, slurm_env)  # resume=auto (the default)
    jobs.append(second)
    info = wait_done(second, slurm_env)
    log = (run_dir / f"slurm-{second}.out").read_text()
    assert info["JobState"] == "COMPLETED", f"{info}\n{log[-4000:]}"
    assert f"resuming at step {step}" in log
    _check_same_run(run_dir, reference)
