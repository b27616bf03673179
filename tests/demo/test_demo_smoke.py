"""The whole demo pipeline at a tiny size: corpora -> tokenizer -> base (with revisions) -> 9 runs -> report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rewarm.demo.base import revisions
from rewarm.demo.cli import DEFAULT_CONFIG
from rewarm.demo.pipeline import DemoPreset, run_demo
from rewarm.demo.study import MAIN
from rewarm.demo.table import format_findings, format_table, format_task_table
from rewarm.training.metrics import read_metrics


@pytest.fixture(scope="module")
def demo(demo_cache: Path, small_tokenizer: Path, tiny: DemoPreset, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo-out")
    return run_demo(DEFAULT_CONFIG, out, demo_cache, tiny, wandb_mode="disabled"), out


def test_base_model_keeps_revisions(demo, tiny: DemoPreset) -> None:
    result, _ = demo
    every, steps = tiny.base.revision_every, tiny.base.steps
    assert revisions(result.base_run) == [f"step{s}" for s in range(every, steps + 1, every)]
    assert (result.base_run / "hf" / "model.safetensors").is_file()
    assert json.loads((result.base_run / "summary.json").read_text())["step"] == steps


def test_every_study_run_finished_from_the_base(demo, tiny: DemoPreset) -> None:
    result, out = demo
    assert list(result.run_dirs) == list(result.plan.runs)
    for name, run_dir in result.run_dirs.items():
        assert run_dir == out / tiny.group / name
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["finished"] and summary["step"] == tiny.study.steps
    starts = {name: result.numbers.curves[name]["pile"].start for name in result.run_dirs}
    # every run but scratch starts from the same base model: same step-0 validation loss
    earlier = result.plan.earlier
    assert len({round(v, 9) for n, v in starts.items() if n not in ("scratch", earlier)}) == 1
    assert starts["scratch"] != starts[MAIN]
    assert earlier == f"{MAIN}-from-{revisions(result.base_run)[0]}" and starts[earlier] != starts[MAIN]
    assert f"revision: {revisions(result.base_run)[0]}" in (result.run_dirs[earlier] / "config.yaml").read_text()


def test_report_has_table_figures_and_computed_findings(demo) -> None:
    result, out = demo
    assert result.report == out / "report" / "report.md"
    text = result.report.read_text()
    assert "Findings of the papers reproduced by this run" in text and "Seed noise" in text
    assert all(name in text for name in result.run_dirs)
    assert list((out / "report").rglob("*.png"))
    assert len(result.findings) == 8 and all(f.evidence for f in result.findings)
    earlier = result.findings[6]  # computed from the runs: the verdict word comes from the numbers
    assert earlier.title == "An earlier checkpoint does not end better than the final one"
    assert any(f"the run ends {w} the final-revision rewarm" in earlier.evidence for w in ("worse than", "better than",
                                                                                          "level with"))
    assert "## Downstream tasks (lm-evaluation-harness)" in text and "next_sentence acc_norm" in text
    ema = result.findings[7]  # the wsd run's EMA before its cooldown, from its val_avg columns
    assert ema.title.startswith("An EMA of the weights before the cooldown") and "of the cooldown's gain" in ema.evidence
    assert any(k.startswith("val_avg/") for k in read_metrics(result.run_dirs["wsd"] / "metrics.csv")[-1])
    assert math.isfinite(result.numbers.seed_noise)


def test_printed_table_and_findings(demo) -> None:
    result, _ = demo
    table = format_table(result)
    lines = table.splitlines()
    assert len(lines) == 3 + len(result.run_dirs)
    main = next(line for line in lines if line.startswith(MAIN + " "))
    curve = result.numbers.curves[MAIN]["slimpajama"]
    assert f"{curve.final:6.3f} ({math.exp(curve.final):8.1f})" in main
    assert f"of {len(result.findings)} findings" in format_findings(result)


def test_second_call_reuses_cache_and_finished_runs(demo, demo_cache: Path, tiny: DemoPreset) -> None:
    result, out = demo
    summaries = {n: (d / "summary.json").stat().st_mtime_ns for n, d in result.run_dirs.items()}
    base_mtime = (result.base_run / "hf" / "model.safetensors").stat().st_mtime_ns
    again = run_demo(DEFAULT_CONFIG, out, demo_cache, tiny, wandb_mode="disabled")
    assert {n: (d / "summary.json").stat().st_mtime_ns for n, d in again.run_dirs.items()} == summaries
    assert (again.base_run / "hf" / "model.safetensors").stat().st_mtime_ns == base_mtime
    assert [f.reproduced for f in again.findings] == [f.reproduced for f in result.findings]


def test_every_run_logs_both_demo_tasks(demo) -> None:
    """The two local tasks (built from the held-out documents) at step 0 and at the end of every run."""
    result, _ = demo
    for name, run_dir in result.run_dirs.items():
        rows = read_metrics(run_dir / "metrics.csv")
        for task in ("next_sentence", "next_line"):
            steps = [int(r["step"]) for r in rows if r.get(f"task/{task}/acc_norm")]
            assert steps[0] == 0 and str(steps[-1]) == rows[-1]["step"], (name, task, steps)
            assert 0.0 <= float(rows[-1][f"task/{task}/acc_norm"]) <= 1.0
    table = format_task_table(result).splitlines()
    assert "next_sentence acc_norm (start -> end)" in table[0] and "next_line acc_norm (start -> end)" in table[0]
    assert len(table) == 2 + len(result.run_dirs)


def test_forecast_step_predicts_the_runs_from_the_base(demo) -> None:
    """Fitted on three runs, the law predicts the others from the same base; the table, the figure and the
    findings' line come from those numbers and the runs' own metrics."""
    from rewarm.demo.forecast import fit_and_predict_runs, forecast_finding, format_forecast_table

    result, out = demo
    fc = result.forecast
    fitted, predicted = fit_and_predict_runs(result.plan)
    assert fc.fitted == fitted and len(fitted) == 3 and result.plan.scratch not in predicted + fitted
    assert {p.run for p in fc.predictions} == set(predicted) and not fc.skipped
    for p in fc.predictions:
        assert p.actual == result.numbers.curves[p.run][p.set].final and p.low <= p.predicted <= p.high
    table = format_forecast_table(fc).splitlines()
    assert len(table) == 3 + len(fc.predictions) and "predicted [80 % interval]" in table[1]
    first = fc.predictions[0]
    assert f"{first.actual:9.3f}{first.error:+9.3f}" in table[3]
    assert forecast_finding(fc, result.numbers.seed_noise) in format_findings(result)
    assert fc.figure == out / "report" / "figures" / "forecast.png" and fc.figure.stat().st_size > 5000
    text = result.report.read_text()
    assert "## Forecast" in text and "](figures/forecast.png)" in text and f"`{first.run}`" in text
