"""wandb's service killed mid-run (SLURM signals every process of a job, wandb-core among them): the run still
writes its SIGTERM checkpoint and exits for a restart, which continues the run and the same wandb run; in one
process, the broken wandb is set aside with one warning and the next run starts a working one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE, find_latest_valid
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides
from tests.faults.conftest import REPO, TIMEOUT_S
from tests.resume.resume_helpers import last_row_step

MAX_STEPS = 300  # a tiny step takes milliseconds to tens of them: the signal lands mid-run
SIGNAL_AFTER_STEP = 20


def _tree(pid: int) -> list[tuple[psutil.Process, str]]:
    """(process, name) of the live descendants of ``pid``, zombies aside: what slurmstepd signals (the job's
    processes, whatever their session)."""
    found = []
    for p in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # ended meanwhile
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append((p, p.name()))
    return found


def _wandb_cores(pid: int) -> list[psutil.Process]:
    cores = [p for p, name in _tree(pid) if name.startswith("wandb-core")]
    assert cores, f"no wandb-core process under {pid}: {_tree(pid)}"
    return cores


def _env() -> dict[str, str]:
    """Offline wandb with a service of the run's own: WANDB_SERVICE, left in this process's environment by a test
    that used wandb in-process, would make the run use this process's service instead of starting its own."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _train(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "a") as fh:
        return subprocess.Popen([sys.executable, "-m", "rewarm", "train", *args], cwd=REPO, env=_env(), stdout=fh,
                                stderr=subprocess.STDOUT)


def test_sigterm_to_every_process_of_the_job_checkpoints_and_resumes_the_same_wandb_run(
        tiny_world, empty_yaml, tmp_path) -> None:
    args = [str(empty_yaml), *tiny_overrides(tiny_world, tmp_path, trainer__max_steps=MAX_STEPS,
                                             trainer__val_every_steps=0, trainer__accelerator="cpu",
                                             checkpoint__every_steps=100, logging__wandb__mode="offline")]
    log, run_dir = tmp_path / "train.log", tmp_path / "t"
    proc = _train(args, log)
    deadline = time.monotonic() + TIMEOUT_S
    while last_row_step(run_dir / "metrics.csv") < SIGNAL_AFTER_STEP and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, log.read_text()[-3000:]
    _wandb_cores(proc.pid)  # wandb's service runs, and gets the SIGTERM too
    for pid in [proc.pid, *(p.pid for p, _ in _tree(proc.pid))]:  # as scancel does: SIGTERM to all at once
        os.kill(pid, signal.SIGTERM)
    assert proc.wait(TIMEOUT_S) == PREEMPTED_EXIT_CODE, log.read_text()[-3000:]
    out = log.read_text()
    assert "Traceback" not in out and "anonymous setting" not in out, out[-3000:]
    assert out.count("wandb stopped working") <= 1  # wandb-core may also have flushed the last row before dying
    last = find_latest_valid(run_dir / "checkpoints")
    manifest = json.loads((last / "manifest.json").read_text())
    rows = read_metrics(run_dir / "metrics.csv")  # row s: the model after s updates, as checkpoint s holds it
    assert manifest["reason"] == "preemption" and manifest["step"] == int(rows[-1]["step"]), (manifest, out)
    assert SIGNAL_AFTER_STEP <= manifest["step"] < MAX_STEPS

    proc = _train(args, log)  # the restart: resume=auto (the default)
    assert proc.wait(TIMEOUT_S) == 0, log.read_text()[-3000:]
    assert f"resuming at step {manifest['step']}" in log.read_text()
    assert [int(r["step"]) for r in read_metrics(run_dir / "metrics.csv")] == list(range(MAX_STEPS + 1))
    run_id = (run_dir / "wandb_id").read_text().strip()
    runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.endswith(f"-{run_id}") for r in runs), runs


def test_a_killed_wandb_is_set_aside_once_and_the_next_run_gets_a_working_one(tmp_path, monkeypatch, caplog) -> None:
    import wandb  # a core dependency: never skipped

    from rewarm.faults.wandb_guard import GuardedWandbLogger, finish_wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    first = GuardedWandbLogger(save_dir=str(tmp_path / "a"), project="p", mode="offline", id="first0000000")
    first.log_metrics({"x": 1.0}, step=0)
    cores = _wandb_cores(os.getpid())
    for core in cores:
        core.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while set(cores) & {p for p, _ in _tree(os.getpid())} and time.monotonic() < deadline:
        time.sleep(0.05)  # until it has ended (a zombie: wandb's Popen reaps it)
    with caplog.at_level(logging.WARNING, logger="rewarm.faults.wandb_guard"):
        for step in range(1, 11):
            first.log_metrics({"x": float(step)}, step=step)  # raised ConnectionResetError before
        first.finalize("success")
        finish_wandb()
    stopped = [r for r in caplog.records if "wandb stopped working" in r.getMessage()]
    assert len(stopped) == 1 and "Connection" in first.broken, (first.broken, caplog.text)
    assert wandb.run is None

    second = GuardedWandbLogger(save_dir=str(tmp_path / "b"), project="p", mode="offline", id="second000000")
    second.log_metrics({"x": 1.0}, step=0)  # a new service: not the broken run's
    assert second.broken is None and second.experiment.id == "second000000"
    finish_wandb()
    assert list((tmp_path / "b" / "wandb").glob("offline-run-*-second000000"))
