"""Two CPU processes (gloo): DDP, FSDP2 and DeepSpeed ZeRO-3 (parameters sharded) give the 1-rank task results.

Each run evaluates the tasks at step 0 (the base model) and at the end; the requests are split over the ranks
unevenly (an odd document limit), so the sharded strategies must equalize their forwards. Step 0 is compared with
``lm_eval.simple_evaluate`` in this (one) process on the base model, the end with it on the run's exported model."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.training.metrics import read_metrics
from tests.scale.helpers import scale_overrides, tail, torchrun
from tests.tasks.conftest import GROUP, MC, PPL, task_overrides
from tests.tasks.test_eval_cli import simple_evaluate

LIMIT = 9


def _values(row: dict[str, str], task: str) -> dict[str, float]:
    prefix = f"task/{task}/"
    return {k[len(prefix):]: float(v) for k, v in row.items() if k.startswith(prefix) and v}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed"])
def test_two_ranks_equal_one_rank(strategy, tiny_world, task_dir, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    extra = {"trainer__strategy": strategy, "trainer__max_steps": 2}
    if strategy == "deepspeed":
        extra["trainer__deepspeed__stage"] = 3
    overrides = scale_overrides(tiny_world, tmp_path / "runs", **extra) + task_overrides(task_dir, GROUP,
                                                                                         tasks__limit=LIMIT)
    log = tmp_path / "train.log"
    assert torchrun(2, tmp_path / "probe", empty, overrides, log) == 0, tail(log)
    rows = read_metrics(tmp_path / "runs" / "t" / "metrics.csv")
    evaluated = [r for r in rows if r[f"task/{MC}/acc"]]
    assert [int(r["step"]) for r in evaluated] == [0, 2], tail(log)
    for row, model_dir in ((evaluated[0], tiny_world["model"]), (evaluated[1], tmp_path / "runs" / "t" / "hf")):
        want = simple_evaluate(model_dir, task_dir, [GROUP], limit=LIMIT)
        for task in (MC, PPL, GROUP):
            assert _values(row, task) == pytest.approx(want[task], rel=1e-5), (strategy, row["step"], task)
    assert any(k.startswith("task_avg/") and v for k, v in evaluated[1].items())  # the same tasks on the EMA
    text = log.read_text()
    assert "Timeout" not in text and "timed out" not in text
    # 9 documents: 36 choice requests (18 + 18) and 9 rolling ones (5 + 4); rank 0 scores 23 of 45
    assert "task evaluation at step 0 took" in text and "(2 tasks, 45 requests; rank 0 of 2 scored 23)" in text, tail(log)
