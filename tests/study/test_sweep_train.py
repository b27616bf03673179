"""A real sweep of two tiny training runs (in process), started again (nothing re-runs), then compared:
the comparison reads the trainer's own run directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.study.compare import compare_runs
from rewarm.study.runs import load_runs, summarize
from rewarm.study.sweep import expand_sweep, run_state, run_sweep
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def swept(tiny_world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[Path]]:
    root = tmp_path_factory.mktemp("sweep")
    config = root / "empty.yaml"
    config.write_text("{}\n")
    base = [
        o
        for o in tiny_overrides(tiny_world, root / "runs", trainer__max_steps=4, trainer__val_every_steps=2)
        if not o.startswith(("run.name=", "schedule.max_lr=", "schedule.min_lr="))
    ]
    runs = expand_sweep({"grid": {"schedule": [{"max_lr": 1e-3, "min_lr": 1e-4}, {"max_lr": 4e-3, "min_lr": 4e-4}]}})
    dirs = run_sweep(config, runs, group="lr", extra_overrides=base, in_process=True)
    return config, base, dirs


def test_sweep_trains_every_run_into_the_sweep_directory(swept: tuple[Path, list[str], list[Path]]) -> None:
    config, _, dirs = swept
    assert [d.name for d in dirs] == ["max_lr-1e-3_min_lr-1e-4", "max_lr-4e-3_min_lr-4e-4"]
    assert all(d.parent == config.parent / "runs" / "lr" for d in dirs)
    assert all(run_state(d) == "finished" for d in dirs)
    assert (config.parent / "runs" / ".cache").is_dir()  # the shared validation cache
    # in process, each run still gets its own wandb run (not the previous run's, still open)
    ids = [(d / "wandb_id").read_text().strip() for d in dirs]
    assert len(set(ids)) == 2
    assert all(
        any(p.name.endswith(i) for p in (d / "wandb").glob("offline-run-*")) for d, i in zip(dirs, ids, strict=True)
    )


def test_started_again_the_sweep_skips_its_finished_runs(swept: tuple[Path, list[str], list[Path]]) -> None:
    config, base, dirs = swept
    before = {d: (d / "metrics.csv").stat().st_mtime_ns for d in dirs}
    runs = expand_sweep({"grid": {"schedule": [{"max_lr": 1e-3, "min_lr": 1e-4}, {"max_lr": 4e-3, "min_lr": 4e-4}]}})
    assert run_sweep(config, runs, group="lr", extra_overrides=base, in_process=True) == dirs
    assert {d: (d / "metrics.csv").stat().st_mtime_ns for d in dirs} == before


def test_compare_reads_the_trainers_run_directories(swept: tuple[Path, list[str], list[Path]], tmp_path: Path) -> None:
    _, _, dirs = swept
    report = compare_runs(dirs, tmp_path / "cmp")
    runs = load_runs(dirs)
    assert [r.label for r in runs] == ["max_lr=1e-3", "max_lr=4e-3"]
    summary = summarize(runs[0])
    assert summary.steps == 4 and set(summary.sets) == {"pile", "slimpajama"}
    assert summary.sets["pile"].role == "upstream" and summary.sets["slimpajama"].role == "downstream"
    text = report.read_text()
    for name in ("val_loss_pile.png", "val_loss_slimpajama.png", "tradeoff_pile_slimpajama.png", "lr.png"):
        assert f"figures/{name}" in text
        assert (tmp_path / "cmp" / "figures" / name).stat().st_size > 0
