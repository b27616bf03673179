"""SIGTERM (what SLURM sends to every process of a job step at preemption) sent to both ranks of a 2-process DDP
``rewarm train`` run on CPU (gloo, gradient accumulation 2): the ranks agree at the next optimizer-step
boundary, save one checkpoint (reason "preemption"), each exits with PREEMPTED_EXIT_CODE, and a restart with
``resume=auto`` finishes the run with a metrics.csv equal to that of an uninterrupted run (perf/* excluded).

Each rank is its own ``rewarm train`` process started the way ``srun`` / ``torchrun`` start them (rank
variables in the environment, Lightning launches nothing), so each rank's exit code is observed. Every wait
has a hard timeout: a deadlock (Lightning's own SIGTERM handler used to run a collective inside the handler)
fails the test instead of blocking CI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE, list_checkpoints, read_valid_manifest
from tests.conftest import tiny_overrides
from tests.resume.resume_helpers import comparable_rows, last_row_step, tail
from tests.scale.helpers import REPO, subprocess_env

WORLD = 2
MAX_STEPS = 60  # long enough that the signal lands mid-run (a tiny step takes tens of milliseconds)
SIGNAL_AFTER_STEP = 5
HANG_TIMEOUT_S = 90  # one phase (start-up + training) takes ~15 s on 2 shared cores; beyond this it hangs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, port: int) -> dict[str, str]:
    """What torchrun / srun + Lightning's cluster detection give each rank: Lightning spawns no process."""
    env = subprocess_env()
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
               LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD), GROUP_RANK="0", NODE_RANK="0",
               TORCHELASTIC_RUN_ID="sigterm-test", MKL_NUM_THREADS="1")
    for key in [k for k in env if k.startswith("SLURM_")]:  # not under SLURM: exit with the code, no requeue
        del env[key]
    return env


def _launch(config: Path, overrides: list[str], logs: Path) -> list[subprocess.Popen]:
    """One ``python -m rewarm train`` per rank, each in its own session (so a hang can be killed whole)."""
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        out = open(logs / f"rank{rank}.log", "a")  # noqa: SIM115 - handed to the child
        procs.append(subprocess.Popen([sys.executable, "-m", "rewarm", "train", str(config), *overrides],
                                      cwd=REPO, env=_rank_env(rank, port), stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def _logs(logs: Path) -> str:
    return "\n".join(f"----- rank{r}\n{tail(logs / f'rank{r}.log')}" for r in range(WORLD))


def _kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


def _wait_all(procs: list[subprocess.Popen], logs: Path, what: str) -> list[int]:
    """Every rank's exit code; SIGKILL all and fail when one is still running after HANG_TIMEOUT_S."""
    deadline = time.monotonic() + HANG_TIMEOUT_S
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.1)
    if any(p.poll() is None for p in procs):
        alive = [r for r, p in enumerate(procs) if p.poll() is None]
        _kill_all(procs)
        raise AssertionError(f"{what}: ranks {alive} still running after {HANG_TIMEOUT_S} s (hang)\n{_logs(logs)}")
    return [p.returncode for p in procs]


def _wait_for_step(metrics: Path, procs: list[subprocess.Popen], step: int, logs: Path) -> None:
    deadline = time.monotonic() + HANG_TIMEOUT_S
    while last_row_step(metrics) < step:
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            _kill_all(procs)
            raise AssertionError(f"training did not reach step {step}\n{_logs(logs)}")
        time.sleep(0.02)


def _overrides(world: dict[str, Path], out_dir: Path) -> list[str]:
    """2 ranks x micro-batch 2 x accumulation 2 = 8 rows per step; deterministic; no periodic checkpoints (the
    only one written is the preemption's); validation every 20 steps (its rows are compared too)."""
    return tiny_overrides(world, out_dir, trainer__accelerator="cpu", trainer__devices=WORLD, trainer__strategy="ddp",
                          trainer__global_batch_size=8, trainer__micro_batch_size=2, trainer__max_steps=MAX_STEPS,
                          trainer__val_every_steps=20, run__deterministic="true", logging__wandb__mode="disabled",
                          schedule__warmup_steps=10, resume="auto")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


@pytest.mark.slow
def test_sigterm_to_both_ddp_ranks_checkpoints_exits_and_resumes_exactly(tiny_world, empty_yaml: Path,
                                                                         tmp_path: Path) -> None:
    ref_logs = _mkdir(tmp_path / "ref_logs")
    ref = _launch(empty_yaml, _overrides(tiny_world, tmp_path / "ref"), ref_logs)
    assert _wait_all(ref, ref_logs, "uninterrupted run") == [0] * WORLD, _logs(ref_logs)

    logs = _mkdir(tmp_path / "logs")
    overrides = _overrides(tiny_world, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "t"
    first = _launch(empty_yaml, overrides, logs)
    _wait_for_step(run_dir / "metrics.csv", first, SIGNAL_AFTER_STEP, logs)
    for p in first:  # like SLURM: every process of the step, at (nearly) the same moment
        p.send_signal(signal.SIGTERM)
    assert _wait_all(first, logs, "SIGTERM") == [PREEMPTED_EXIT_CODE] * WORLD, _logs(logs)
    for r in range(WORLD):
        assert "received signal SIGTERM" in (logs / f"rank{r}.log").read_text(), f"rank {r} missed the signal"
    ckpts = list_checkpoints(run_dir / "checkpoints")
    assert len(ckpts) == 1, f"expected one checkpoint, found {[c.name for c in ckpts]}"
    manifest = read_valid_manifest(ckpts[0], deep=True)
    assert manifest is not None, f"{ckpts[0]} is invalid"
    step = manifest["step"]
    assert manifest["reason"] == "preemption" and SIGNAL_AFTER_STEP <= step < MAX_STEPS, json.dumps(manifest)
    assert manifest["tokens_seen"] == step * 8 * 16  # an optimizer-step boundary: whole steps of 8 rows x 16
    assert not (run_dir / "summary.json").exists()

    second = _launch(empty_yaml, overrides, logs)
    assert _wait_all(second, logs, "resumed run") == [0] * WORLD, _logs(logs)
    assert f"resuming at step {step}" in (logs / "rank0.log").read_text()
    rows = comparable_rows(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(MAX_STEPS + 1)), "a step's row is missing or repeated"
    assert rows == comparable_rows(tmp_path / "ref" / "t" / "metrics.csv")
