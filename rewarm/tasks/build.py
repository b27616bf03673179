"""The config edge of task evaluation: ``TasksConfig`` in, plain objects out."""

from __future__ import annotations

import logging
import os
from typing import Any

from rewarm.tasks.config import TasksConfig, check_task_paths

log = logging.getLogger(__name__)


def build_task_evaluator(tasks: TasksConfig, names: list[str] | None = None, limit: int | None = None) -> Any:
    """A ``TaskEvaluator`` over ``names`` (default ``tasks.names``), or None when there are none. Loads the tasks
    and their documents: unknown names, missing directories and unreachable data are refused here."""
    from rewarm.errors import key_prefix

    names = list(tasks.names if names is None else names)
    if not names:
        return None
    with key_prefix("tasks"):
        check_task_paths(tasks)
    from rewarm.tasks.evaluator import TaskEvaluator, TaskSettings
    from rewarm.tasks.harness import describe, load_suite

    suite = load_suite(names, tasks.include_paths, tasks.num_fewshot)
    settings = TaskSettings(limit=limit if limit is not None else tasks.limit, batch_size=tasks.batch_size,
                            bootstrap_iters=tasks.bootstrap_iters, every_steps=tasks.every_steps)
    if os.environ.get("RANK", "0") == "0":
        for line in describe(suite, settings.limit):
            log.info("%s", line)
    return TaskEvaluator(suite, settings)


def build_task_callback(tasks: TasksConfig, tokenizer: Any) -> Any:
    """The in-loop hook (a Lightning callback), or None when ``tasks.names`` is empty."""
    evaluator = build_task_evaluator(tasks)
    if evaluator is None:
        return None
    from rewarm.tasks.callback import TaskEvalCallback

    return TaskEvalCallback(evaluator, tokenizer)
