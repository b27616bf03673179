"""Fixtures of the fault tests: a short finished run with a checkpoint every 2 steps, written once per session,
and helpers to run the real `rewarm` command line in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def rewarm(args: list[str], *, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m rewarm ARGS`` in a subprocess (one intra-op thread, no wandb): its exit code and output."""
    env = {**os.environ, "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rewarm", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)


def fault_overrides(world: dict[str, Path], out_dir: Path, **extra: object) -> list[str]:
    """The shared tiny run: 6 steps, a checkpoint every 2 (all kept), no wandb."""
    base: dict[str, object] = {"checkpoint__every_steps": 2, "checkpoint__keep_last": 10,
                               "logging__wandb__mode": "disabled"}
    base.update(extra)
    return tiny_overrides(world, out_dir, **base)


@pytest.fixture(scope="session")
def empty_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("faults_cfg") / "empty.yaml"
    p.write_text("{}\n")
    return p


@pytest.fixture(scope="session")
def finished_run(tiny_world: dict[str, Path], empty_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 6-step run (checkpoints at steps 2, 4, 6), trained in this process through the CLI."""
    from rewarm.cli import main

    out = tmp_path_factory.mktemp("faults_runs")
    assert main(["train", str(empty_yaml), *fault_overrides(tiny_world, out)]) == 0
    return out / "t"


@pytest.fixture()
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of ``finished_run`` that a test may damage."""
    dest = tmp_path / "runs" / "t"
    shutil.copytree(finished_run, dest)
    return dest
