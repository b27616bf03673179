"""A job that can never start is refused at submit, as a user types it, against the real local cluster:
``rewarm slurm CONFIG --submit`` with the default ``--cpus-per-task 8`` on a node of fewer CPUs (sbatch would accept
it and leave it pending for good, reason ``PartitionConfig``), more nodes than the partition has, an unknown
partition. The quick example of docs/slurm.md asks for what the local cluster's node holds."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[2]


def _docs_example() -> list[str]:
    """The arguments of docs/slurm.md's `rewarm slurm ... --submit` line (after `rewarm slurm`)."""
    lines = (REPO / "docs" / "slurm.md").read_text().splitlines()
    line = next(x for x in lines if x.startswith("rewarm slurm ") and "--submit" in x)
    return shlex.split(line.split("#")[0])[2:]


def _rewarm_slurm(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewarm", "slurm", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def _node_cpus(env: dict[str, str]) -> int:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], env=env, capture_output=True, text=True, check=True)
    return max(int(x.rstrip("+")) for x in out.stdout.split())


def _queued(env: dict[str, str]) -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %j"], env=env, capture_output=True, text=True).stdout


def test_a_job_no_node_can_hold_is_refused_at_submit(slurm_env: dict[str, str], tmp_path: Path) -> None:
    cpus, example = _node_cpus(slurm_env), _docs_example()
    assert "--submit" in example and "--cpus-per-task" in example
    # the docs' example without its --cpus-per-task: the default 8 (or one more than the node has, on a larger host)
    i = example.index("--cpus-per-task")
    base = example[:i] + example[i + 2:]
    asked = 8 if cpus < 8 else cpus + 1
    before = _queued(slurm_env)
    script = tmp_path / "job.sbatch"
    res = _rewarm_slurm([*base, *([] if cpus < 8 else ["--cpus-per-task", str(asked)]), "--out", str(script)],
                        slurm_env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "Submitted batch job" not in res.stdout
    assert (f"partition debug: the largest node has {cpus} CPUs, the job asks {asked} per node (trainer.devices=1 "
            f"task(s) per node × --cpus-per-task {asked}); use --cpus-per-task {cpus} or less") in res.stderr
    assert not script.exists() and _queued(slurm_env) == before  # nothing written, nothing submitted

    res = _rewarm_slurm([example[0], "trainer.num_nodes=2", *example[1:], "--partition", "debug", "--out",
                         str(script)], slurm_env)
    assert res.returncode == 2 and "partition debug has 1 node, the job asks 2 (trainer.num_nodes=2); use " \
        "trainer.num_nodes=1 or less" in res.stderr, res.stderr
    res = _rewarm_slurm([*example, "--partition", "nope", "--out", str(script)], slurm_env)
    assert res.returncode == 2 and "no partition 'nope' on this cluster (partitions: debug)" in res.stderr, res.stderr
    assert not script.exists() and _queued(slurm_env) == before


def test_the_docs_example_fits_the_local_cluster(slurm_env: dict[str, str]) -> None:
    example = _docs_example()
    res = _rewarm_slurm([*(a for a in example if a != "--submit"), "--dry-run"], slurm_env)
    assert res.returncode == 0 and "could never start" not in res.stderr, res.stderr
    assert "#SBATCH --cpus-per-task=1\n" in res.stdout
