"""Importing lm-eval, finding tasks and loading them (with their data) into a ``TaskSuite``.

Every refusal names the task: an unknown name comes with close names, data that cannot be fetched with how
to make it available offline. Loading happens once per process; evaluations reuse the task objects."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any

from rewarm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rewarm[eval]'"
FEWSHOT_SEED = 1234  # lm_eval.simple_evaluate's default fewshot_random_seed (and numpy / torch seeds)


def require_lm_eval() -> Any:
    """The ``lm_eval`` package with its HF backend, or a ConfigError that says how to install it."""
    try:
        import lm_eval
        import lm_eval.models.huggingface  # noqa: F401  (the HF backend: lm_eval[hf] since 0.4.10)
        from lm_eval.tasks import TaskManager  # noqa: F401
    except ImportError as e:
        raise ConfigError("tasks", f"task evaluation needs lm-evaluation-harness ({e}); install it with "
                                   f"{INSTALL_HINT}") from None
    return lm_eval


@dataclass
class TaskSuite:
    """Loaded lm-eval tasks: ``task_dict`` is ``TaskManager.load``'s result (tasks, groups, group_map)."""

    names: list[str]
    task_dict: dict[str, Any]
    manager: Any = None  # the lm_eval TaskManager the tasks came from

    @property
    def tasks(self) -> dict[str, Any]:
        return self.task_dict["tasks"]

    @property
    def groups(self) -> dict[str, Any]:
        return self.task_dict.get("groups", {})


def task_manager(names: list[str], include_paths: list[str]) -> Any:
    """A TaskManager over ``include_paths`` alone when they define every name (indexing lm-eval's ~15k
    bundled YAMLs takes seconds), else over lm-eval's tasks and ``include_paths``."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_paths:
        local = TaskManager(include_path=list(include_paths), include_defaults=False)
        if all(n in local.all_tasks for n in names):
            return local
    return TaskManager(include_path=list(include_paths) or None)


def check_names(manager: Any, names: list[str]) -> None:
    """ConfigError for a name lm-eval does not know, with close names."""
    known = manager.all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError("tasks.names", f"unknown lm-eval task or group {name!r}{hint} (local tasks: put "
                                             "their YAMLs in a directory listed in tasks.include_paths)")


def load_suite(names: list[str], include_paths: list[str], num_fewshot: int | None) -> TaskSuite:
    """Load every task (and its documents). Unknown names and unreachable data are refused, named."""
    manager = task_manager(names, include_paths)
    check_names(manager, names)
    from rewarm.tasks.bars import no_dataset_bars

    merged: dict[str, Any] = {"tasks": {}, "groups": {}, "group_map": {}}
    for name in names:
        with no_dataset_bars():
            loaded = _load_one(manager, name)
        for key in merged:
            merged[key].update(loaded.get(key, {}))
    for task in merged["tasks"].values():
        _set_fewshot(task, num_fewshot)
    return TaskSuite(list(names), merged, manager)


def _load_one(manager: Any, name: str) -> dict[str, Any]:
    try:
        return manager.load([name])
    except (ConnectionError, OSError, TimeoutError) as e:
        raise DataError(unreachable_message(name, e)) from None
    except Exception as e:  # datasets / hub errors come in many types: name the task, keep the cause
        if _looks_offline(e):
            raise DataError(unreachable_message(name, e)) from None
        raise DataError(f"lm-eval task {name!r} could not be loaded: {type(e).__name__}: {e}") from None


def _looks_offline(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(w in text for w in ("offline", "connection", "couldn't reach", "timed out", "resolve", "hub"))


def unreachable_message(name: str, e: BaseException) -> str:
    return (f"the data of lm-eval task {name!r} cannot be fetched ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "Make it available offline: run once where the Hugging Face Hub is reachable so the datasets cache "
            "(HF_DATASETS_CACHE, default ~/.cache/huggingface/datasets) holds it, copy that cache here and set "
            "HF_DATASETS_OFFLINE=1; or write a local task YAML (dataset_path: json, dataset_kwargs.data_files) in a "
            "directory listed in tasks.include_paths")


def _set_fewshot(task: Any, num_fewshot: int | None) -> None:
    """As lm_eval.simple_evaluate: an explicit 0 in the task's YAML wins, else ``num_fewshot``, else 0."""
    default = task.get_config("num_fewshot")
    if num_fewshot is not None and default != 0:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif num_fewshot is None and default is None:
        task.set_config(key="num_fewshot", value=0)


def describe(suite: TaskSuite, limit: int | None) -> list[str]:
    """One line per task: lm-eval version, documents evaluated (of the split's), few-shot count."""
    from lm_eval.evaluator_utils import get_sample_size

    lines = []
    for name, task in suite.tasks.items():
        total = len(task.eval_docs)
        n = get_sample_size(task, limit)
        n = total if n is None else min(n, total)
        lines.append(f"task {name}: lm-eval version {task.VERSION}, {n} of {total} documents, "
                     f"{task.get_config('num_fewshot')}-shot, {task.OUTPUT_TYPE}")
    for name, group in suite.groups.items():
        lines.append(f"task group {name}: version {group.version}, members {', '.join(group.child_names)}")
    return lines
