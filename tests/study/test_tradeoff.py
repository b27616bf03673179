"""The trade-off figure as `rewarm compare` draws it: absolute final losses (upstream on x, downstream on y), each
run's start marked, a forecast as a hollow marker with its 80 % interval; forecast columns in the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rewarm.study.cli import compare_main
from rewarm.study.plots import draw_tradeoff
from rewarm.study.runs import load_run, summarize
from tests.study.helpers import curves, metrics_rows, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FORECAST = {"prose": {"final_loss": 3.31, "low": 3.25, "high": 3.40, "curve": [[0, 3.0], [20, 3.31]]},
            "code": {"final_loss": 4.42, "low": 4.30, "high": 4.50, "curve": [[0, 5.0], [20, 4.42]]}}


@pytest.fixture
def runs_with_a_pruned_one(tmp_path: Path) -> list[Path]:
    """Two finished runs and one stopped at step 10 of 20 by a pruned sweep (its forecast.json written)."""
    root = tmp_path / "runs" / "sweep"
    dirs = [write_run(root, f"max_lr-{lr}", max_lr=lr) for lr in (1.5e-4, 6e-4)]
    partial = [r for r in metrics_rows(20, 3e-4, 5, True) if r["step"] <= 10]
    pruned = write_run(root, "max_lr-3e-4", max_lr=3e-4, rows=partial, finished=False)
    (pruned / "forecast.json").write_text(json.dumps({"pruned": True, "rank": 3, "sets": FORECAST}))
    return [*dirs, pruned]


def scatter_points(ax, hollow: bool) -> list[tuple[float, float]]:
    """Centres of the scatter markers of the axes, filled or hollow ones."""
    from matplotlib.collections import PathCollection

    out = []
    for coll in ax.collections:
        offsets = coll.get_offsets()
        if not isinstance(coll, PathCollection) or not len(offsets):
            continue
        is_hollow = len(coll.get_facecolors()) == 0 or np.all(coll.get_facecolors()[:, 3] == 0)
        if is_hollow == hollow and coll.get_paths():
            out += [tuple(map(float, p)) for p in offsets]
    return out


def test_runs_at_their_absolute_finals_with_starts_and_forecasts(runs_with_a_pruned_one: list[Path]) -> None:
    summaries = [summarize(load_run(d)) for d in runs_with_a_pruned_one]
    drawn = draw_tradeoff(summaries, "prose", "code")
    assert drawn is not None
    _, ax = drawn
    filled = scatter_points(ax, hollow=False)
    for s in summaries:  # every run: its final (filled marker) and its start (a cross), in absolute nats
        assert (pytest.approx(s.sets["prose"].final_loss), pytest.approx(s.sets["code"].final_loss)) in filled
        assert (pytest.approx(s.sets["prose"].start_loss), pytest.approx(s.sets["code"].start_loss)) in filled
    start = curves(0, 20, 6e-4)
    assert summaries[1].sets["prose"].start_loss == pytest.approx(start["prose"])
    assert scatter_points(ax, hollow=True) == [(pytest.approx(3.31), pytest.approx(4.42))]
    # the interval: error bars from low to high on both axes
    segments = [seg for coll in ax.collections if hasattr(coll, "get_segments") for seg in coll.get_segments()]
    spans = {(round(float(a[0]), 6), round(float(b[0]), 6), round(float(a[1]), 6), round(float(b[1]), 6))
             for a, b in segments}
    assert (3.25, 3.4, 4.42, 4.42) in spans and (3.31, 3.31, 4.3, 4.5) in spans
    assert "upstream" in ax.get_xlabel() and "downstream" in ax.get_ylabel() and "lower left" in ax.get_title()
    lo, hi = ax.get_xlim()
    assert lo < 3.25 and hi > 3.40  # the interval is inside the axes


def test_compare_command_draws_it_and_reports_forecast_next_to_actual(runs_with_a_pruned_one: list[Path],
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert compare_main([str(runs_with_a_pruned_one[0].parent), "--out", str(out)]) == 0
    png = out / "figures" / "tradeoff_prose_code.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    text = (out / "report.md").read_text()
    assert "](figures/tradeoff_prose_code.png)" in text and "lower left is better" in text
    runs_table = next(line for line in text.splitlines() if line.startswith("| # | run | label"))
    assert "forecast prose (80 %)" in runs_table and "pruned" in runs_table
    pruned_row = next(line for line in text.splitlines() if "`max_lr-3e-4`" in line and "[3.2500, 3.4000]" in line)
    assert "yes" in pruned_row
    set_rows = [line for line in text.splitlines() if "| 3.3100 [3.2500, 3.4000] |" in line]
    assert set_rows and set_rows[-1].rstrip().endswith("| – |")  # a pruned run's final is partial: no error
    summary = (out / "summary.csv").read_text()
    assert "forecast_final" in summary.splitlines()[0] and "3.31" in summary
