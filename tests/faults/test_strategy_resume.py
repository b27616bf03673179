"""Our own checkpoints still load weights-only, written by every strategy: a 2-rank DeepSpeed ZeRO-2 and an
FSDP2 run resume from their step-2 checkpoint (model, optimizer shards, loops, data state) and finish, and
`rewarm export` consolidates the shards, as `rewarm average` and `rewarm export --averaged` (the EMA's shards) do
(single-process and DDP checkpoints: tests/faults/test_hostile_checkpoint.py, tests/resume,
tests/scale/test_sigterm.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rewarm.training.metrics import read_metrics
from tests.averaging.helpers import check_average, check_ema_export
from tests.faults.conftest import REPO, rewarm
from tests.in_process import run_cli
from tests.scale.helpers import TIMEOUT_S, scale_overrides, subprocess_env, tail


def torchrun_train(config: Path, overrides: list[str], log: Path) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "rewarm",
           "train", str(config), *overrides]
    with open(log, "a") as fh:
        return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), stdout=fh, stderr=subprocess.STDOUT,
                              timeout=TIMEOUT_S, check=False).returncode


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["deepspeed", "fsdp"])
def test_sharded_checkpoints_resume_and_export_weights_only(strategy, tiny_world, empty_yaml, tmp_path):
    extra = {"trainer__deepspeed__stage": 2, "trainer__global_batch_size": 8} if strategy == "deepspeed" else {}
    overrides = scale_overrides(tiny_world, tmp_path / "runs", trainer__strategy=strategy, checkpoint__every_steps=2,
                                checkpoint__keep_last=5, **extra)
    log = tmp_path / "train.log"
    assert torchrun_train(empty_yaml, overrides, log) == 0, tail(log)
    run_dir = tmp_path / "runs" / "t"
    first = read_metrics(run_dir / "metrics.csv")
    step2 = run_dir / "checkpoints" / "step00000002"
    if strategy == "deepspeed":  # what its shards need beyond torch's weights-only list: exactly our safe globals
        from torch.serialization import get_unsafe_globals_in_checkpoint

        from rewarm.faults.safe_load import safe_globals

        needed = {g for f in step2.rglob("*.pt") for g in get_unsafe_globals_in_checkpoint(f)}
        print("DeepSpeed shards need:", sorted(needed))
        assert needed <= {f"{g.__module__}.{g.__qualname__}" for g in safe_globals()}, needed
    assert torchrun_train(empty_yaml, [*overrides, f"resume.mode={step2}"], log) == 0, tail(log)
    assert f"resuming from {step2}" in log.read_text()
    again = read_metrics(run_dir / "metrics.csv")
    assert [r["train/loss"] for r in again] == [r["train/loss"] for r in first]  # the same run, from step 2
    assert [r["val_avg/pile/loss"] for r in again] == [r["val_avg/pile/loss"] for r in first]  # its EMA's shards too
    proc = rewarm(["export", str(run_dir), "--out", str(tmp_path / "hf")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # `rewarm average` consolidates the shards alike: the mean of the step-2 and step-4 checkpoints' exports
    proc = run_cli(["average", str(run_dir), "--last", "2", "--out", str(tmp_path / "avg")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_average(tmp_path / "avg", [step2, run_dir / "checkpoints" / "step00000004"], tmp_path)
    # `rewarm export --averaged` assembles the EMA from its per-rank shards
    proc = run_cli(["export", str(run_dir), "--averaged", "--out", str(tmp_path / "ema")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_ema_export(tmp_path / "ema", run_dir / "checkpoints" / "step00000004")
