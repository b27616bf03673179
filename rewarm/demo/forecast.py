"""The demo's forecast step: fit the loss law (``rewarm.forecast``) on three of the study's runs, predict the
others that start from the same base model, and set the predictions against what those runs measured.

The three fitted runs span the study's LR range (the constant LR, the lowest and the highest rewarm); the
predicted ones are every other run from the base (its final revision or, with ``model.pretraining`` describing
the base's schedule, an earlier one): the main rewarm and its seed twin, no warmup, replay, rewarm on upstream.
The scratch run has no base and is left out. The error that matters is the final loss's, next to the seed noise
(the spread two seeds of one recipe end at): a forecast cannot honestly claim to be closer than that.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewarm.demo.study import StudyPlan

log = logging.getLogger(__name__)

FIGURE = "forecast.png"


@dataclass(frozen=True)
class Prediction:
    """One predicted run on one validation set (losses in nats/token)."""

    run: str
    set: str
    predicted: float
    low: float
    high: float
    actual: float

    @property
    def error(self) -> float:
        return self.predicted - self.actual

    @property
    def inside(self) -> bool:
        return self.low <= self.actual <= self.high


@dataclass
class ForecastReport:
    """What the forecast step produced: the fitted runs, the predictions, the curves drawn, the figure."""

    fitted: list[str]
    predictions: list[Prediction]
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    """run -> set -> the forecast (``SetForecast``: final_loss, low, high, curve)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Runs not predicted, with the reason (the fit refused them)."""
    figure: Path | None = None
    seconds: float = 0.0

    @property
    def median_abs_error(self) -> float:
        return statistics.median(abs(p.error) for p in self.predictions) if self.predictions else float("nan")

    @property
    def max_abs_error(self) -> float:
        return max((abs(p.error) for p in self.predictions), default=float("nan"))


def pretraining_overrides(base: Any) -> list[str]:
    """``model.pretraining`` of the study's runs: the demo base's own schedule (``rewarm.demo.base.BaseRecipe``:
    linear warmup then cosine to 0.1 x peak), so the law continues its forward and annealing areas and a run from
    an earlier revision (``stepN``: N steps of it done) shares the fit."""
    return ["model.pretraining.schedule=cosine", f"model.pretraining.max_lr={base.max_lr:g}",
            f"model.pretraining.min_lr={base.min_lr:g}",
            f"model.pretraining.warmup_steps={round(base.warmup_fraction * base.steps)}",
            f"model.pretraining.total_steps={base.steps}"]


def fit_and_predict_runs(plan: StudyPlan) -> tuple[list[str], list[str]]:
    """(the three runs the law is fitted on, the runs it predicts): those of the study that share the base."""
    lrs = [name for _, name in sorted(plan.lr_runs)]
    fitted = [plan.constant, lrs[0], lrs[-1]]
    predicted = [plan.main, plan.seed_twin, plan.no_warmup, plan.replay, plan.upstream]
    predicted += [plan.earlier] if plan.earlier else []
    return fitted, [r for r in dict.fromkeys(predicted) if r not in fitted]


def run_forecast(plan: StudyPlan, dirs: dict[str, Path], figures_dir: Path | None = None) -> ForecastReport:
    """Fit on the three runs, predict the others from their configs, compare with their metrics.csv."""
    import time

    from rewarm.config import load
    from rewarm.errors import ConfigError
    from rewarm.forecast import fit_run_dirs, predict_config

    t0 = time.perf_counter()
    fitted, predicted = fit_and_predict_runs(plan)
    report = ForecastReport(fitted, [])
    try:
        fit = fit_run_dirs([dirs[r] for r in fitted])
    except ConfigError as e:  # e.g. too few points: the demo's other results stand, the step says why
        log.warning("forecast step: the fit was refused: %s", e)
        report.skipped["(all)"] = f"the fit was refused: {e}"
        return report
    for name in predicted:
        try:
            report.curves[name] = predict_config(fit, load(dirs[name] / "config.yaml"), name=name)
        except ConfigError as e:
            report.skipped[name] = str(e)
            continue
        actual = final_losses(dirs[name])
        report.predictions += [Prediction(name, s, float(f.final_loss), float(f.low), float(f.high), actual[s])
                               for s, f in report.curves[name].items() if s in actual]
    report.seconds = time.perf_counter() - t0
    if figures_dir is not None and report.curves:
        report.figure = plot_forecast(report, dirs, figures_dir / FIGURE)
    return report


def final_losses(run_dir: Path) -> dict[str, float]:
    from rewarm.demo.findings import read_curves

    return {s: c.final for s, c in read_curves(run_dir).items()}


def format_forecast_table(report: ForecastReport) -> str:
    """One line per predicted run and set: predicted [80 % interval], actual, error (predicted - actual)."""
    width = max([len(p.run) for p in report.predictions] + [3]) + 2
    head = f"{'run':{width}}{'set':12}{'predicted [80 % interval]':30}{'actual':>9}{'error':>9}"
    lines = [f"forecast: law fitted on {', '.join(report.fitted)}; predicted final losses of the other runs from "
             "the same base", head, "-" * len(head)]
    for p in report.predictions:
        interval = f"{p.predicted:.3f} [{p.low:.3f}, {p.high:.3f}]"
        lines.append(f"{p.run:{width}}{p.set:12}{interval:30}{p.actual:9.3f}{p.error:+9.3f}")
    lines += [f"(not predicted: {name}: {why})" for name, why in report.skipped.items()]
    return "\n".join(lines)


def forecast_finding(report: ForecastReport, seed_noise: float) -> str:
    """The findings' line: the forecast's median error against the seed noise."""
    if not report.predictions:
        return "forecast: no run could be predicted"
    inside = sum(p.inside for p in report.predictions)
    verdict = "within" if report.median_abs_error <= seed_noise else "above"
    return (f"forecast: median |error| of the predicted final losses {report.median_abs_error:.3f} nats/token "
            f"(max {report.max_abs_error:.3f}), {verdict} the seed noise {seed_noise:.3f}; {inside} of "
            f"{len(report.predictions)} actual finals inside the 80 % interval")


def forecast_markdown(report: ForecastReport, seed_noise: float, figure: str | None) -> str:
    """The report's section: the table, the finding's line, the figure."""
    lines = ["", "## Forecast", "", f"The loss law (`rewarm forecast`) fitted on {', '.join(f'`{r}`' for r in report.fitted)} "
             "predicts the final losses of the other runs from the same base, from their configs alone.", "",
             "| run | set | predicted | 80 % interval | actual | error |", "|---|---|---|---|---|---|"]
    lines += [f"| `{p.run}` | {p.set} | {p.predicted:.4f} | [{p.low:.4f}, {p.high:.4f}] | {p.actual:.4f} | "
              f"{p.error:+.4f} |" for p in report.predictions]
    lines += ["", forecast_finding(report, seed_noise) + ".", ""]
    if figure:
        lines += [f"![predicted (dashed, 80 % band) vs measured validation loss]({figure})", ""]
    return "\n".join(lines)


def plot_forecast(report: ForecastReport, dirs: dict[str, Path], path: Path) -> Path:
    """Per validation set, each predicted run's measured curve (solid, markers) and forecast (dashed) with its
    final 80 % interval as an error bar at the last step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rewarm.study.plots import run_style
    from rewarm.study.runs import load_run

    sets = list(dict.fromkeys(s for fc in report.curves.values() for s in fc))
    fig = Figure(figsize=(6.0 * len(sets), 4.5), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, s in zip(axes, sets, strict=True):
        for i, (name, fc) in enumerate(report.curves.items()):
            style = run_style(i)
            run = load_run(dirs[name])
            xs = [r["step"] for r in run.rows if f"val/{s}/loss" in r]
            ax.plot(xs, run.series(f"val/{s}/loss")[1], color=style["color"], marker="o", markersize=2.5,
                    linewidth=1.2, label=f"{name} (measured)")
            if s in fc:
                steps, losses = zip(*fc[s].curve, strict=True) if fc[s].curve else ((), ())
                ax.plot(steps, losses, color=style["color"], linestyle="--", linewidth=1.2)
                f = fc[s]
                ax.errorbar([xs[-1] if xs else 0], [f.final_loss], yerr=[[f.final_loss - f.low], [f.high - f.final_loss]],
                            color=style["color"], fmt="none", capsize=3)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel(f"validation loss on {s} (nats/token)")
        ax.set_title(f"{s}: measured (solid) vs forecast (dashed)")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
