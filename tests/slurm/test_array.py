"""``rewarm slurm CONFIG --sweep SWEEP --submit`` under a real SLURM: one array task per run line, every member
finishes as its own run, and ``rewarm compare`` reads their directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.slurm.helpers import cancel_all, rewarm, run_overrides, submit, tail, wait_array_done

pytestmark = pytest.mark.slurm


def test_sweep_array_runs_every_member(tiny_world, empty_yaml: Path, slurm_env, tmp_path: Path) -> None:
    sweep = tmp_path / "lr.txt"
    sweep.write_text("# two max LRs\nschedule.max_lr=1e-3\nschedule.max_lr=3e-4 schedule.min_lr=3e-5\n")
    runs = tmp_path / "runs"
    job_id = submit([str(empty_yaml), *run_overrides(tiny_world, runs), "--sweep", str(sweep)], slurm_env)
    try:
        tasks = wait_array_done(job_id, slurm_env, 2)
    finally:
        cancel_all([job_id], slurm_env)
    logs = {t["ArrayTaskId"]: runs / f"slurm-rewarm-lr-{job_id}_{t['ArrayTaskId']}.out" for t in tasks}
    for t in tasks:
        assert t["JobState"] == "COMPLETED", f"{t}\n{tail(logs[t['ArrayTaskId']])}"
    max_lrs = []
    for i in range(2):
        run_dir = runs / f"lr-{i}"
        assert json.loads((run_dir / "summary.json").read_text())["step"] == 6
        assert f"array task {i} of job {job_id}" in logs[str(i)].read_text()
        max_lrs.append(max(float(r["optim/lr"] or 0) for r in csv.DictReader(open(run_dir / "metrics.csv"))))
    assert max_lrs == pytest.approx([1e-3, 3e-4])  # each task ran its own line

    out = tmp_path / "compare"
    res = rewarm(["compare", str(runs / "lr-0"), str(runs / "lr-1"), "--out", str(out)], slurm_env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "report.md").is_file()
    assert {row["run"] for row in csv.DictReader(open(out / "summary.csv"))} == {"lr-0", "lr-1"}
