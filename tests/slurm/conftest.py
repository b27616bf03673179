"""Tests against a real SLURM (marker ``slurm``): a one-node cluster on this host, brought up with
``slurm/local-cluster.sh start`` when it is not running (and stopped again at the end if this session started
it). Skipped only where SLURM cannot be installed or run (no ``sbatch`` / ``slurmctld`` / ``slurmd`` /
``munged``, or not root); with ``CI=true`` a missing SLURM is a failure, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "slurm" / "local-cluster.sh"
TOOLS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "slurmctld", "slurmd", "munged")


def _unavailable() -> str | None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"SLURM is not installed (missing {', '.join(missing)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (slurmd starts the jobs)"
    return None


def _script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER), command], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    """The environment a job is submitted with: SLURM_CONF of the local cluster, this interpreter's bin first on
    PATH (the job runs `rewarm`), offline wandb, one thread per task."""
    reason = _unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the slurm tests must run)")
        pytest.skip(reason)
    # without WANDB_SERVICE (set by a test that used wandb in this process): a job starts its own wandb service
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    was_up = _script("status", env).returncode == 0
    started = _script("start", env)
    if started.returncode != 0:
        pytest.fail(f"slurm/local-cluster.sh start failed:\n{started.stdout}\n{started.stderr}")
    conf = started.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    env.update(SLURM_CONF=conf, WANDB_MODE="offline", WANDB_SILENT="true", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    yield env
    if not was_up:
        _script("stop", env)


@pytest.fixture(scope="module")
def empty_yaml(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "empty.yaml"
    p.write_text("{}\n")
    return p
