"""Downstream task results (``task/<task>/<metric>`` columns of metrics.csv) in comparisons: per run, each task's
main metric at the start and at the end, and a table for report.md (the curves: ``plots.plot_tasks``).

The main metric of a task is the first of ``PREFERRED`` it logged, else its first metric (stderrs excluded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFERRED = ("acc", "acc_norm", "exact_match", "perplexity", "word_perplexity")
STDERR = "_stderr"


@dataclass(frozen=True)
class TaskStats:
    task: str
    metric: str
    start: float
    final: float
    final_stderr: float | None
    points: int


def task_columns(run: Any) -> dict[str, list[str]]:
    """{task: [metrics]} of a run's ``task/<task>/<metric>`` columns, stderrs left out, in column order."""
    out: dict[str, list[str]] = {}
    for col in run.columns():
        parts = col.split("/")
        if len(parts) == 3 and parts[0] == "task" and not parts[2].endswith(STDERR):
            out.setdefault(parts[1], []).append(parts[2])
    return out


def main_metric(metrics: list[str]) -> str:
    return next((m for m in PREFERRED if m in metrics), metrics[0])


def task_stats(run: Any) -> dict[str, TaskStats]:
    """Each task's main metric: first and last logged value, the last value's stderr."""
    out = {}
    for task, metrics in task_columns(run).items():
        metric = main_metric(metrics)
        _, values = run.series(f"task/{task}/{metric}")
        if not values:
            continue
        errs = run.series(f"task/{task}/{metric}{STDERR}")[1]
        out[task] = TaskStats(task, metric, values[0], values[-1], errs[-1] if errs else None, len(values))
    return out


def task_table(summaries: list[Any]) -> list[str]:
    """Markdown: one row per run, per task ``start -> final (± stderr)`` of its main metric."""
    tasks: dict[str, str] = {}
    for s in summaries:
        for t, st in s.tasks.items():
            tasks.setdefault(t, st.metric)
    if not tasks:
        return []
    header = ["#", "run", *[f"{t} {m}" for t, m in tasks.items()]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for i, s in enumerate(summaries, 1):
        cells = [_cell(s.tasks.get(t)) for t in tasks]
        lines.append("| " + " | ".join([str(i), f"`{s.name}`", *cells]) + " |")
    return lines


def _cell(st: TaskStats | None) -> str:
    if st is None:
        return "–"
    err = f" (±{st.final_stderr:.3f})" if st.final_stderr is not None else ""
    return f"{st.start:.3f} → {st.final:.3f}{err}"


def task_section(summaries: list[Any], figures: dict[str, str]) -> list[str]:
    """report.md's task section: the table, then the curves (empty when no run logged tasks)."""
    table = task_table(summaries)
    if not table:
        return []
    lines = ["## Downstream tasks (lm-evaluation-harness)", "",
             "Main metric of each task at the first and the last evaluation of each run (± its stderr).", "",
             *table, ""]
    for key, path in figures.items():
        if key.startswith("task/"):
            lines += [f"![{key[5:]} vs tokens]({path})", ""]
    return lines
