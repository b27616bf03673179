"""`rewarm sweep --prune-after F --keep K` for real, on four tiny training runs (in process): every member stops
at half its steps with a checkpoint, the law is fitted on the partial curves, the best by forecast finishes, the
others stay stopped with their forecast recorded; the same command again changes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rewarm.study.prune import stop_step
from rewarm.study.report import runs_table
from rewarm.study.runs import load_run, summarize
from rewarm.study.sweep import run_state
from tests.conftest import tiny_overrides
from tests.in_process import run_cli

STEPS, EVERY = 12, 1
LRS = (5e-4, 1e-3, 2e-3, 4e-3)


def val_steps(metrics: Path) -> list[int]:
    with metrics.open() as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("val/pile/loss")]


@pytest.fixture(scope="module")
def pruned(tiny_world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("prune")
    config = root / "empty.yaml"
    config.write_text("{}\n")
    sweep = root / "lr.yaml"
    sweep.write_text("name: lr\ngrid:\n  schedule.max_lr: [" + ", ".join(f"{lr:g}" for lr in LRS) + "]\n")
    base = [o for o in tiny_overrides(tiny_world, root / "runs", trainer__max_steps=STEPS,
                                      trainer__val_every_steps=EVERY, logging__wandb__mode="disabled")
            if not o.startswith(("run.name=", "schedule.max_lr=", "schedule.min_lr="))]
    args = ["sweep", str(config), str(sweep), *base, "schedule.min_lr=1e-5", "--in-process",
            "--prune-after", "0.5", "--keep", "1"]
    first = run_cli(args)
    return args, first, root / "runs" / "lr"


def test_stop_step_is_the_first_validation_at_or_after_the_fraction() -> None:
    assert stop_step(200, 10, 0.25) == 50 and stop_step(200, 25, 0.25) == 50 and stop_step(60, 25, 0.25) == 25
    assert stop_step(12, 1, 0.5) == 6 and stop_step(10, 0, 0.05) == 1 and stop_step(10, 4, 0.9) == 10


def test_the_best_by_forecast_finishes_and_the_others_stop_with_their_forecast(pruned) -> None:
    _, first, group = pruned
    assert first.returncode == 0, first.stderr[-3000:]
    decision = json.loads((group / "prune.json").read_text())
    dirs = sorted(d for d in group.iterdir() if (d / "metrics.csv").is_file())
    assert len(dirs) == 4 and len(decision["kept"]) == 1 and (group / "forecast_fit.json").is_file()
    ranked = sorted(decision["runs"], key=lambda r: r["rank"])
    assert [r["objective"] for r in ranked] == sorted(r["objective"] for r in ranked)
    assert ranked[0]["kept"] and ranked[0]["name"] == decision["kept"][0]
    for d in dirs:
        fc = json.loads((d / "forecast.json").read_text())
        assert set(fc["sets"]) == {"pile", "slimpajama"}
        for s in fc["sets"].values():
            assert s["low"] <= s["final_loss"] <= s["high"] and s["curve"][-1][0] == STEPS
        kept = d.name in decision["kept"]
        assert fc["pruned"] is not kept
        assert run_state(d) == ("finished" if kept else "partial")
        assert max(val_steps(d / "metrics.csv")) == (STEPS if kept else 6)
        if not kept:  # stopped with a resumable checkpoint at the stop step
            manifests = list((d / "checkpoints").glob("step*/manifest.json"))
            assert [json.loads(m.read_text())["step"] for m in manifests] == [6]
    assert decision["steps_pruned"] == STEPS + 3 * 6 and decision["steps_full"] == 4 * STEPS
    out = first.stdout
    assert "pruned" in out and "kept" in out and "forecast [80 %]" in out and "(0.62)" in out


def test_compare_shows_forecast_next_to_actual(pruned) -> None:
    """What `rewarm compare` reads of the sweep (its figure and report: tests/study/test_tradeoff.py)."""
    _, _, group = pruned
    summaries = [summarize(load_run(d)) for d in sorted(group.iterdir()) if (d / "metrics.csv").is_file()]
    assert sum(s.pruned for s in summaries) == 3
    assert all(set(s.forecast) == {"pile", "slimpajama"} for s in summaries)
    table = runs_table(summaries)
    assert "forecast pile (80 %)" in table[0] and sum(" yes |" in row for row in table[2:]) == 3


def test_the_same_command_again_changes_nothing(pruned) -> None:
    args, first, group = pruned
    files = sorted(p for p in group.rglob("*") if p.is_file() and "wandb" not in p.parts)
    before = {p: p.stat().st_mtime_ns for p in files if p.name != "sweep.json"}
    again = run_cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert again.stdout == first.stdout
    other = run_cli([*args[:-4], "--prune-after", "0.25", "--keep", "1"])
    assert other.returncode == 2 and "prune.json" in other.stderr and "0.5" in other.stderr
