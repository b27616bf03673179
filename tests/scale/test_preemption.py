"""A real ``rewarm train`` process sent SIGUSR1 (SLURM's warning before the time limit) saves a checkpoint,
asks SLURM to requeue the job, exits with PREEMPTED_EXIT_CODE, and the restarted command continues from
that step to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE, find_latest_valid
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides
from tests.in_process import run_cli
from tests.scale.helpers import REPO, subprocess_env

MAX_STEPS = 100  # long enough that the signal lands mid-run (a tiny step takes milliseconds)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _wait_for_step(metrics: Path, proc: subprocess.Popen, step: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and sum(1 for _ in open(metrics)) > step + 1:  # header + rows 0..step
            return
        time.sleep(0.05)
    raise AssertionError(f"training did not reach step {step} (exit code {proc.poll()})")


def _scontrol_shim(bin_dir: Path, record: Path) -> None:
    """``scontrol`` is SLURM's CLI and absent here: a stand-in on PATH records how it was called."""
    bin_dir.mkdir()
    shim = bin_dir / "scontrol"
    shim.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    shim.chmod(0o755)


def test_sigusr1_checkpoints_exits_and_resumes(tiny_world, empty_yaml: Path, tmp_path: Path) -> None:
    record, log = tmp_path / "scontrol.txt", tmp_path / "first.log"
    _scontrol_shim(tmp_path / "bin", record)
    env = subprocess_env()
    env.update(SLURM_JOB_ID="4242", SLURM_PROCID="0", PATH=f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}")
    overrides = tiny_overrides(tiny_world, tmp_path / "runs", trainer__max_steps=MAX_STEPS, trainer__val_every_steps=0,
                               logging__wandb__mode="disabled", schedule__warmup_steps=10)
    cmd = [sys.executable, "-m", "rewarm", "train", str(empty_yaml), *overrides]
    run_dir = tmp_path / "runs" / "t"

    proc = _start(cmd, env, log)
    _wait_for_step(run_dir / "metrics.csv", proc, 3)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == PREEMPTED_EXIT_CODE, log.read_text()[-3000:]
    assert record.read_text().split() == ["requeue", "4242"]
    ckpt = find_latest_valid(run_dir / "checkpoints")
    assert ckpt is not None, "no checkpoint written on SIGUSR1"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    step = manifest["step"]
    assert manifest["reason"] == "preemption" and 3 <= step < MAX_STEPS
    assert not (run_dir / "summary.json").exists()

    second = run_cli(cmd[3:])  # the restart is not signalled: in this process, outside SLURM
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming at step {step}" in second.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == MAX_STEPS and summary["tokens"] == MAX_STEPS * 2 * 16
    steps = [int(r["step"]) for r in read_metrics(run_dir / "metrics.csv")]
    assert steps == list(range(MAX_STEPS + 1))  # continued after the saved step, no row lost or repeated
