"""A real 20-step ``rewarm train`` logs, at every optimizer step, exactly the LR that ``rewarm schedule --csv``
prints for the same config (an infinite schedule: LR-0 phase, warmup, cooldown, constant, anneal)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rewarm.cli import main
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides

SCHEDULE = {
    "schedule__name": "infinite",
    "schedule__max_lr": 1e-3,
    "schedule__min_lr": 1e-4,
    "schedule__constant_lr": 5e-4,
    "schedule__zero_lr_steps": 2,
    "schedule__warmup_steps": 3,
    "schedule__cooldown_steps": 4,
    "schedule__anneal_fraction": 0.25,
    "schedule__cooldown_shape": "inverse_sqrt",
}


def test_logged_lr_equals_schedule_csv(tiny_world, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    overrides = tiny_overrides(
        tiny_world, tmp_path / "runs", trainer__max_steps=20, trainer__val_every_steps=0, **SCHEDULE
    )
    assert main(["schedule", str(config), *overrides, "--csv"]) == 0
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["step"]) for r in printed] == list(range(20))
    expected = [float(r["lr"]) for r in printed]
    assert expected[:2] == [0.0, 0.0] and max(expected) == 1e-3 and len(set(expected)) > 10

    assert main(["train", str(config), *overrides]) == 0
    rows = [r for r in read_metrics(tmp_path / "runs" / "t" / "metrics.csv") if r["optim/lr"]]
    assert [int(r["step"]) for r in rows] == list(range(20))
    assert [float(r["optim/lr"]) for r in rows] == expected  # exact, step for step
