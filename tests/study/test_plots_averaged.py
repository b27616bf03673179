"""The averaged weights' validation loss (``val_avg/<set>/loss``) is drawn beside each run's raw curve: same colour,
dashed; runs without averaging draw nothing more, and `rewarm compare` of a mix of both writes its figures."""

from __future__ import annotations

from pathlib import Path

from rewarm.study.compare import compare_runs
from rewarm.study.plots import _figure, plot_averaged, run_style
from rewarm.study.runs import load_runs
from tests.study.helpers import metrics_rows, write_run


def averaged_rows() -> list[dict[str, object]]:
    rows = metrics_rows(20, 3e-4, 5, True)
    for r in rows:
        if "val/prose/loss" in r:
            r["val_avg/prose/loss"] = r["val/prose/loss"] - 0.1
    return rows


def test_the_average_is_dashed_in_the_runs_colour(tmp_path: Path) -> None:
    plain = write_run(tmp_path, "plain")
    averaged = write_run(tmp_path, "averaged", ["schedule.max_lr=1e-3"], rows=averaged_rows())
    runs = load_runs([plain, averaged])
    _, ax = _figure()
    assert plot_averaged(ax, runs[0], "prose", run_style(0)) == [] and not ax.lines
    values = plot_averaged(ax, runs[1], "prose", run_style(1))
    (line,) = ax.lines
    x, y = runs[1].series("val_avg/prose/loss")
    assert list(line.get_xdata()) == x and list(line.get_ydata()) == y == values and len(y) == 5
    assert line.get_color() == run_style(1)["color"] and line.get_linestyle() == "--"
    assert line.get_label() == f"{runs[1].label} (averaged)"
    _, ax = _figure()
    plot_averaged(ax, runs[1], "prose", run_style(8))  # past the palette the raw line is dashed: dotted then
    assert ax.lines[0].get_linestyle() == ":"


def test_compare_draws_runs_with_and_without_averaging(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, "plain"), write_run(tmp_path, "averaged", ["schedule.max_lr=1e-3"], rows=averaged_rows())]
    report = compare_runs(runs, tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "val_loss_prose.png").stat().st_size > 0
    assert "val_loss_prose.png" in report.read_text()
