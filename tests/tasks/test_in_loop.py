"""Tasks in the training loop, one process: ``task/<task>/<metric>`` rows at step 0, every ``tasks.every_steps``
and at the end, equal to ``lm_eval.simple_evaluate`` on the same weights; the run's losses are those of the same
run without tasks (RNG and data untouched); the pre-first-step log lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rewarm.cli import main
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides
from tests.tasks.conftest import GROUP, MC, PPL, task_overrides
from tests.tasks.test_eval_cli import simple_evaluate


@pytest.fixture(scope="module")
def runs(tiny_world, task_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    cfg = out / "empty.yaml"
    cfg.write_text("{}\n")
    base = tiny_overrides(tiny_world, out, trainer__val_every_steps=0)
    assert main(["train", str(cfg), *base, "run.name=plain"]) == 0
    logger = logging.getLogger("rewarm")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        assert main(["train", str(cfg), *base, "run.name=tasks",
                     *task_overrides(task_dir, GROUP, tasks__every_steps=4, tasks__limit=10)]) == 0
    finally:
        logger.removeHandler(handler)
    (out / "tasks.log").write_text("\n".join(records))
    return {"plain": out / "plain", "tasks": out / "tasks", "log": out / "tasks.log"}


def _values(row: dict[str, str], task: str) -> dict[str, float]:
    prefix = f"task/{task}/"
    return {k[len(prefix):]: float(v) for k, v in row.items() if k.startswith(prefix) and v}


def test_task_rows_at_step0_every_and_end(runs) -> None:
    rows = read_metrics(runs["tasks"] / "metrics.csv")
    header = list(rows[0])
    for col in (f"task/{MC}/acc", f"task/{MC}/acc_stderr", f"task/{MC}/acc_norm", f"task/{MC}/acc_norm_stderr",
                f"task/{PPL}/word_perplexity", f"task/{PPL}/bits_per_byte", f"task/{GROUP}/acc",
                f"task/{GROUP}/acc_stderr"):
        assert col in header, col
    assert [int(r["step"]) for r in rows if r[f"task/{MC}/acc"]] == [0, 4, 6]  # step 0, every 4, the end
    assert _values(rows[0], GROUP)["acc"] == _values(rows[0], MC)["acc"]  # the group's own aggregate
    assert not any(r[f"task/{PPL}/word_perplexity_stderr"] for r in rows if f"task/{PPL}/word_perplexity_stderr" in r)


def test_task_values_equal_simple_evaluate_on_the_same_weights(runs, tiny_world, task_dir) -> None:
    rows = read_metrics(runs["tasks"] / "metrics.csv")
    for row, model_dir in ((rows[0], tiny_world["model"]), (rows[-1], runs["tasks"] / "hf")):
        want = simple_evaluate(model_dir, task_dir, [GROUP], limit=10)
        for task in (MC, PPL, GROUP):
            assert _values(row, task) == pytest.approx(want[task], rel=1e-9), (row["step"], task)
    assert _values(rows[0], MC) != _values(rows[-1], MC) or _values(rows[0], PPL) != _values(rows[-1], PPL)


def test_tasks_leave_training_untouched(runs) -> None:
    """Same losses, learning rates and tokens as the run without tasks: no RNG draw, no data consumed."""
    plain, tasks = read_metrics(runs["plain"] / "metrics.csv"), read_metrics(runs["tasks"] / "metrics.csv")
    assert len(plain) == len(tasks)
    for a, b in zip(plain, tasks, strict=True):
        for key in ("step", "tokens", "train/loss", "optim/lr", "optim/grad_norm", "val/pile/loss"):
            assert a[key] == b[key], (key, a["step"])


def test_logged_before_the_first_step(runs) -> None:
    text = runs["log"].read_text()
    assert f"task {MC}: lm-eval version 1.0, 10 of 24 documents, 0-shot, multiple_choice" in text
    assert f"task {PPL}: lm-eval version 2.0, 10 of 10 documents" in text
    assert f"task {MC}: 10 documents, 40 requests" in text
    assert "task evaluation at step 0 took" in text


def test_compare_shows_task_table_and_curves(runs, tmp_path) -> None:
    from rewarm.study.compare import write_comparison

    report, summaries = write_comparison([runs["plain"], runs["tasks"]], tmp_path / "cmp")
    text = report.read_text()
    assert "## Downstream tasks (lm-evaluation-harness)" in text
    assert f"| # | run | {MC} acc | {PPL} word_perplexity | {GROUP} acc |" in text and "names=" not in text
    rows = read_metrics(runs["tasks"] / "metrics.csv")
    st = summaries[1].tasks[MC]
    assert (st.start, st.final) == (float(rows[0][f"task/{MC}/acc"]), float(rows[-1][f"task/{MC}/acc"]))
    assert st.final_stderr == float(rows[-1][f"task/{MC}/acc_stderr"]) and summaries[0].tasks == {}
    assert (tmp_path / "cmp" / "figures" / f"task_{MC}.png").is_file() and f"figures/task_{MC}.png" in text
