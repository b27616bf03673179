"""The ``tasks`` config section: lm-evaluation-harness tasks in the loop and in ``rewarm eval``.

Standard library only: ``rewarm check`` validates this section without importing lm-eval or loading task data
(task names are checked against lm-eval's registry when the run starts, before its first step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rewarm.errors import ConfigError


@dataclass
class TasksConfig:
    names: list[str] = field(default_factory=list)
    """lm-eval task or group names (e.g. [arc_easy, lambada_openai]); empty = no task evaluation (the default)."""
    include_paths: list[str] = field(default_factory=list)
    """Directories of task YAMLs (local / offline tasks), searched besides lm-eval's own tasks."""
    every_steps: int = 0
    """Evaluate the tasks every N optimizer steps; 0 = only at step 0 and at the end (always done when names is set)."""
    num_fewshot: int | None = None
    """Few-shot examples per prompt; default: each task's own (0 when it sets none), as lm_eval.simple_evaluate."""
    limit: int | None = None
    """Evaluate at most N documents per task (default: all)."""
    batch_size: int = 16
    """Requests per forward pass (per rank) in task evaluation."""
    bootstrap_iters: int = 1000
    """lm-eval bootstrap iterations for stderrs (0 = no *_stderr metrics)."""

    def validate(self) -> None:
        for i, name in enumerate(self.names):
            if not isinstance(name, str) or not name.strip() or "," in name:
                raise ConfigError("names", f"entry {i} must be one task or group name, got {name!r}")
        if len(set(self.names)) != len(self.names):
            raise ConfigError("names", f"lists a task twice: {self.names}")
        if self.every_steps < 0:
            raise ConfigError("every_steps", f"must be >= 0, got {self.every_steps}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ConfigError("num_fewshot", f"must be >= 0, got {self.num_fewshot}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.bootstrap_iters < 0:
            raise ConfigError("bootstrap_iters", f"must be >= 0, got {self.bootstrap_iters}")


def check_task_paths(tasks: TasksConfig) -> None:
    """Refuse an ``include_paths`` entry that is not a directory (``rewarm check``, ``train``, ``eval``)."""
    for i, path in enumerate(tasks.include_paths):
        if not Path(path).expanduser().is_dir():
            raise ConfigError(f"include_paths[{i}]", f"task directory not found: {path} (a directory of lm-eval "
                                                     "task YAMLs)")
