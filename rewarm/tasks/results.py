"""lm-eval results as rewarm metrics: ``task/<task>/<metric>`` and ``task/<task>/<metric>_stderr``.

lm-eval keys a metric as ``<metric>,<filter>`` (``acc,none``, ``acc_stderr,none``, ``exact_match,strict-match``).
The default filter ``none`` is dropped; another filter stays as a suffix (``exact_match_strict-match``), before
``_stderr``. A group's own aggregate sits beside its members'. Non-finite values are logged empty, with a warning."""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)

STDERR = "_stderr"


def metric_name(key: str) -> str | None:
    """lm-eval's ``<metric>,<filter>`` -> rewarm's metric name; None for entries that are not metrics."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    stderr = metric.endswith(STDERR)
    base = metric[: -len(STDERR)] if stderr else metric
    name = base if filt == "none" else f"{base}_{filt}"
    return name + STDERR if stderr else name


def task_values(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{task or group: {metric: value}}`` from ``lm_eval`` results; "N/A" stderrs are left out, non-finite
    values become None (and are warned about)."""
    out: dict[str, dict[str, float | None]] = {}
    for task, entry in results["results"].items():
        values: dict[str, float | None] = {}
        for key, value in entry.items():
            name = metric_name(key)
            if name is None or isinstance(value, (str, bool, dict, list)) or value is None:
                continue
            number = float(value)
            if not math.isfinite(number):
                log.warning("task %s: metric %s is %s: logged empty", task, name, number)
                values[name] = None
                continue
            values[name] = number
        out[task] = values
    return out


def row_metrics(values: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """The metrics row: ``task/<task>/<metric>``; a None (non-finite) value is left out (an empty cell)."""
    return {f"task/{task}/{m}": v for task, ms in values.items() for m, v in ms.items() if v is not None}


def metric_columns(suite: Any, bootstrap_iters: int) -> list[str]:
    """Every key a suite can log (metrics.csv fixes its columns when it is created)."""
    cols: list[str] = []
    for name, task in suite.tasks.items():
        cols += _columns(name, _task_metric_keys(task), bootstrap_iters)
    for name, group in suite.groups.items():
        if not group.has_aggregation:
            continue
        keys: list[tuple[str, str]] = []
        for entry in group.aggregate_metric_list:
            metric = entry.metric if hasattr(entry, "metric") else entry["metric"]
            for task in group.get_all_tasks():
                keys += [(m, f) for m, f in _task_metric_keys(task) if m == metric and (m, f) not in keys]
        cols += _columns(name, keys, bootstrap_iters)
    return cols


def _task_metric_keys(task: Any) -> list[tuple[str, str]]:
    filters = [f.name for f in getattr(task, "_filters", [])] or ["none"]
    return [(m, f) for f in filters for m in task.aggregation()]


def _columns(task: str, keys: list[tuple[str, str]], bootstrap_iters: int) -> list[str]:
    cols = []
    for metric, filt in keys:
        cols.append(f"task/{task}/{metric_name(f'{metric},{filt}')}")
        if bootstrap_iters > 0:
            cols.append(f"task/{task}/{metric_name(f'{metric}{STDERR},{filt}')}")
    return cols
