"""Compare finished (or running) runs from their run directories alone: ``config.yaml`` + ``metrics.csv``.

``compare_runs(run_dirs, out_dir)`` writes ``figures/*.png`` (``plots``), ``summary.csv`` and ``report.md``
(``report``) from the runs as ``runs`` reads and summarizes them (the definitions are there).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rewarm.study import plots, report
from rewarm.study.runs import RunSummary, expand_run_dirs, load_runs, summarize

__all__ = ["compare_runs", "expand_run_dirs", "forecast_fields", "write_comparison"]

log = logging.getLogger(__name__)


def compare_runs(
    run_dirs: list[Path],
    out_dir: Path,
    *,
    labels: dict[str, str] | None = None,
    title: str = "Run comparison",
    extra_markdown: str = "",
    forecasts: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write figures, summary.csv and report.md for the runs into ``out_dir``; return report.md's path.

    ``labels`` (run directory name -> label) replaces derived labels; ``extra_markdown`` is appended;
    ``forecasts`` (run directory name -> set -> ``SetForecast``) join those of the runs' forecast.json."""
    return write_comparison(run_dirs, out_dir, labels=labels, title=title, extra_markdown=extra_markdown,
                            forecasts=forecasts)[0]


def write_comparison(
    run_dirs: list[Path],
    out_dir: Path,
    *,
    labels: dict[str, str] | None = None,
    title: str = "Run comparison",
    extra_markdown: str = "",
    forecasts: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, list[RunSummary]]:
    """``compare_runs`` that also returns the runs' summaries (for printing or computing findings)."""
    out_dir = Path(out_dir)
    runs = load_runs([Path(d) for d in run_dirs], labels)
    summaries = [summarize(r) for r in runs]
    for s in summaries:
        if s.name in (forecasts or {}):
            s.forecast = {k: forecast_fields(v) for k, v in forecasts[s.name].items()}
    figures = plots.write_figures(runs, summaries, out_dir / "figures")
    report.write_summary_csv(summaries, out_dir / "summary.csv")
    path = out_dir / "report.md"
    rel = {k: p.relative_to(out_dir).as_posix() for k, p in figures.items()}
    path.write_text(report.render(summaries, rel, title=title, base=out_dir) + extra_markdown)
    log.info("wrote %s (%d runs, %d figures)", path, len(runs), len(figures))
    return path, summaries


def forecast_fields(forecast: Any) -> dict[str, float]:
    """``final_loss``, ``low``, ``high`` of a forecast given as an object (``SetForecast``) or a dict."""
    get = forecast.get if isinstance(forecast, dict) else lambda k: getattr(forecast, k)
    return {k: float(get(k)) for k in ("final_loss", "low", "high")}
