"""Data parallelism across tasks and nodes: a SLURM job with 2 tasks on the node (``srun``, Lightning's SLURM
environment) and two processes started as two nodes (``trainer.num_nodes=2``, ``devices=1``, torchrun's
environment: node rank, master address, world size) both give the metrics of a local 2-process DDP run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.resume.resume_helpers import comparable_rows
from tests.slurm.helpers import cancel_all, run_overrides, submit, tail, wait_done

TIMEOUT_S = 420


def _overrides(world: dict[str, Path], out_dir: Path, **extra: object) -> list[str]:
    return run_overrides(world, out_dir, trainer__strategy="ddp", trainer__max_steps=6, trainer__val_every_steps=3,
                         **extra)


def _local_env() -> dict[str, str]:
    """This process's environment without SLURM's variables (so Lightning picks torchrun's environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    repo = str(Path(__file__).resolve().parents[2])
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=repo + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _torchrun(args: list[str], config: Path, overrides: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", *args, "-m", "rewarm", "train", str(config), *overrides]
    return subprocess.Popen(cmd, env=_local_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_reference(tiny_world, empty_yaml: Path, tmp_path_factory) -> Path:
    """metrics.csv of a local 2-process DDP run on one node (torchrun --standalone)."""
    out = tmp_path_factory.mktemp("ddp-local")
    proc = _torchrun(["--standalone", "--nproc-per-node=2"], empty_yaml,
                     _overrides(tiny_world, out, trainer__devices=2), out / "train.log")
    assert proc.wait(timeout=TIMEOUT_S) == 0, tail(out / "train.log")
    return out / "t" / "metrics.csv"


@pytest.mark.slurm
def test_two_tasks_on_the_node_equal_local_ddp(tiny_world, empty_yaml, slurm_env, ddp_reference, tmp_path) -> None:
    job_id = submit([str(empty_yaml), *_overrides(tiny_world, tmp_path, trainer__devices=2)], slurm_env)
    try:
        info = wait_done(job_id, slurm_env)
    finally:
        cancel_all([job_id], slurm_env)
    log = tmp_path / "t" / f"slurm-{job_id}.out"
    assert info["JobState"] == "COMPLETED" and info["NumTasks"] == "2", f"{info}\n{tail(log)}"
    assert "1 node(s) x 2 task(s)" in log.read_text()
    assert comparable_rows(tmp_path / "t" / "metrics.csv") == comparable_rows(ddp_reference)


def test_two_simulated_nodes_equal_one_node_ddp(tiny_world, empty_yaml, ddp_reference, tmp_path) -> None:
    port = _free_port()
    overrides = _overrides(tiny_world, tmp_path, trainer__devices=1, trainer__num_nodes=2)
    procs = [_torchrun(["--nnodes=2", f"--node-rank={node}", "--nproc-per-node=1", "--master-addr=127.0.0.1",
                        f"--master-port={port}"], empty_yaml, overrides, tmp_path / f"node{node}.log")
             for node in range(2)]
    codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    assert codes == [0, 0], "\n".join(tail(tmp_path / f"node{n}.log") for n in range(2))
    for node in range(2):  # each node's process got its global rank from the node rank
        assert f"GLOBAL_RANK: {node}, MEMBER: {node + 1}/2" in (tmp_path / f"node{node}.log").read_text()
    assert comparable_rows(tmp_path / "t" / "metrics.csv") == comparable_rows(ddp_reference)
