"""The kill -9 exact-resume check with lm-eval tasks on (every 4 steps, at step 0 and at the end): killed at two
random steps and resumed, the run's metrics.csv equals the uninterrupted run's row for row, task columns
included (the task evaluation draws no random number and takes no data); a restart after the end checkpoint
evaluates nothing again. The random steps come from REWARM_KILL_SEED."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from resume_helpers import comparable_rows, finish, kill_when, last_row_step, start, tail, train_here, write_config

from rewarm.tasks.demo_tasks import write_choice_task
from tests.tasks.conftest import MC, PPL, choice_items, write_ppl_task

SEED = int(os.environ.get("REWARM_KILL_SEED", random.SystemRandom().randrange(10**6)))
MAX_STEPS = 12


def test_kill9_with_tasks_then_identical(resume_world: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(SEED)
    msg = f"REWARM_KILL_SEED={SEED}"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_choice_task(tasks, MC, choice_items(12, 3), " ", "tiny")
    write_ppl_task(tasks, PPL)
    cfg = write_config(tmp_path / "run.yaml", resume_world, num_workers=0, max_steps=MAX_STEPS, global_batch=2)
    on = [f"tasks.names=[{MC},{PPL}]", f"tasks.include_paths=[{tasks}]", "tasks.every_steps=4", "tasks.limit=6",
          "tasks.batch_size=4", "tasks.bootstrap_iters=20"]
    ref_log, log = tmp_path / "ref.log", tmp_path / "train.log"
    ref = start(cfg, ["run.name=ref", *on], ref_log)
    run_dir = tmp_path / "r"
    metrics = run_dir / "metrics.csv"
    k1 = rng.randint(1, 5)
    kill_when(start(cfg, on, log), lambda: last_row_step(metrics) >= k1, log, f"step {k1}")
    k2 = rng.randint(k1 + 2, MAX_STEPS - 2)
    kill_when(start(cfg, on, log), lambda: last_row_step(metrics) >= k2, log, f"step {k2}")
    assert train_here(cfg, on, log) == 0, tail(log)  # the last start is not killed
    assert finish(ref, ref_log) == 0, tail(ref_log)
    ref_rows, got = comparable_rows(tmp_path / "ref" / "metrics.csv"), comparable_rows(metrics)
    assert [r["step"] for r in got] == [r["step"] for r in ref_rows], msg
    for a, b in zip(ref_rows, got, strict=True):
        assert a == b, f"{msg}: row of step {a['step']} differs:\n{a}\n{b}"
    assert [int(r["step"]) for r in got if r[f"task/{MC}/acc"]] == [0, 4, 8, 12], msg
    (run_dir / "summary.json").unlink()  # a kill between the end checkpoint and summary.json
    assert train_here(cfg, on, tmp_path / "again.log") == 0
    assert comparable_rows(metrics) == got and "task evaluation at step" not in (tmp_path / "again.log").read_text()
