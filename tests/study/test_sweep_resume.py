"""The sweep's promise, for real: `rewarm sweep` interrupted (SIGUSR1, as SLURM sends before preemption)
while a run trains; started again, it skips the finished run and resumes the interrupted one."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewarm.study.sweep import load_sweep, run_state, run_sweep
from tests.conftest import tiny_overrides
from tests.study.helpers import write_run

LONG_STEPS = 60


def max_step(metrics: Path) -> int:
    if not metrics.is_file():
        return -1
    with metrics.open() as f:
        return max((int(r["step"]) for r in csv.DictReader(f) if (r.get("step") or "").isdigit()), default=-1)


def wait_for_step(metrics: Path, proc: subprocess.Popen, step: int, timeout_s: float = 300) -> None:
    """Until metrics.csv has a row of ``step`` (the trainer's signal handler is installed by then)."""
    deadline = time.monotonic() + timeout_s
    while max_step(metrics) < step:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline, f"no step {step} in {metrics} after {timeout_s} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_interrupted_sweep_resumes_its_unfinished_run(tiny_world: dict[str, Path], tmp_path: Path) -> None:
    from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE

    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    sweep_file = tmp_path / "g.yaml"
    sweep_file.write_text(
        f"name: g\nbase: {{trainer.max_steps: {LONG_STEPS}}}\nruns: [{{name: done}}, {{name: long}}]\n"
    )
    base = [
        o
        for o in tiny_overrides(tiny_world, tmp_path / "runs", trainer__val_every_steps=1000)
        if not o.startswith(("run.name=", "trainer.max_steps="))
    ]
    group = tmp_path / "runs" / "g"
    done_csv = (write_run(group, "done") / "metrics.csv").read_bytes()  # a finished run, made by hand
    cmd = [sys.executable, "-m", "rewarm", "sweep", str(config), str(sweep_file), *base]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(group / "long" / "metrics.csv", proc, step=2)
        os.kill(proc.pid, signal.SIGUSR1)  # to the sweep, which forwards it to the training run
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    assert "done: finished, skipped" in err
    assert run_state(group / "long") == "partial"
    stopped_at = max_step(group / "long" / "metrics.csv")
    assert 2 <= stopped_at < LONG_STEPS

    dirs = run_sweep(config, load_sweep(sweep_file), group="g", extra_overrides=base, in_process=True)
    assert dirs == [group / "done", group / "long"]
    assert (group / "done" / "metrics.csv").read_bytes() == done_csv  # skipped, never re-run
    assert run_state(group / "long") == "finished"
    with (group / "long" / "metrics.csv").open() as f:
        steps = sorted({int(r["step"]) for r in csv.DictReader(f) if r["step"].isdigit()})
    assert steps == list(range(LONG_STEPS + 1))  # resumed where it stopped: every step logged, up to the end
