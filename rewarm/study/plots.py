"""Comparison figures (PNG, matplotlib's Agg canvas; no display, no pyplot state).

Runs are told apart by colour from the Okabe-Ito colour-blind-safe palette and, past its 8 colours,
by line style. Every axis names its quantity and unit; legends show the runs' labels.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from rewarm.study.runs import RunData, RunSummary

from rewarm.study.tasks import main_metric, task_columns

log = logging.getLogger(__name__)

# Okabe & Ito (2008), ordered so that neighbours differ in lightness too; their yellow is left out (it
# vanishes on white), so past 7 runs line styles and markers change.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DPI = 120
SMOOTH_POINTS = 50
"""A smoothed curve averages over 1/50 of its points."""


def run_style(i: int) -> dict[str, Any]:
    """Colour, line style and marker of the i-th run (0-based)."""
    n = len(PALETTE)
    return {
        "color": PALETTE[i % n],
        "linestyle": LINESTYLES[(i // n) % len(LINESTYLES)],
        "marker": MARKERS[(i // n) % len(MARKERS)],
    }


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start), same length as ``values``."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def format_tokens(x: float, _pos: Any = None) -> str:
    """Axis tick text for a token count: 0, 512, 12k, 1.5M, 300B."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.0f}"


def file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "set"


def _figure(width: float = 7.5, height: float = 4.5) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, ax: Axes, path: Path, legend: bool = True) -> Path:
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False, title="run")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def _tokens_axis(ax: Axes, x_column: str) -> None:
    from matplotlib.ticker import FuncFormatter

    if x_column == "step":
        ax.set_xlabel("optimizer steps")
    else:
        ax.set_xlabel("tokens seen (training tokens)")
        ax.xaxis.set_major_formatter(FuncFormatter(format_tokens))


def robust_top(starts: list[float], finals: list[float]) -> float | None:
    """Upper y limit that keeps a far-off start (a from-scratch run at ~ln(vocab)) from flattening
    every other curve: the highest start within 1 nat of the median start, or the highest final."""
    if not starts:
        return None
    med = sorted(starts)[len(starts) // 2]
    tops = [s for s in starts if s <= med + 1.0] + finals
    return max(tops)


def plot_val_loss(runs: list[RunData], val_set: str, role: str | None, path: Path) -> Path:
    """Validation loss on one set against tokens, one line per run (markers on evaluations)."""
    fig, ax = _figure()
    starts, finals, all_values = [], [], []
    for i, run in enumerate(runs):
        x, y = run.series(f"val/{val_set}/loss")
        if not y:
            continue
        ax.plot(x, y, label=run.label, markersize=3, linewidth=1.5, **run_style(i))
        starts.append(y[0])
        finals.append(y[-1])
        all_values.extend(y)
        all_values.extend(plot_averaged(ax, run, val_set, run_style(i)))
    top = robust_top(starts, finals)
    if top is not None and max(all_values) > top + 1e-12:
        low = min(all_values)
        pad = 0.05 * max(top - low, 1e-3)
        ax.set_ylim(low - pad, top + pad)
        ax.text(0.99, 0.99, "some points above the axis", transform=ax.transAxes, ha="right", va="top", fontsize=7)
    _tokens_axis(ax, runs[0].x_column() if runs else "tokens")
    ax.set_ylabel(f"validation loss on {val_set} (nats/token)")
    ax.set_title(f"{val_set}" + (f" ({role}: {'forgetting' if role == 'upstream' else 'adaptation'})" if role else ""))
    return _save(fig, ax, path)


def plot_averaged(ax: Axes, run: RunData, val_set: str, style: dict[str, Any]) -> list[float]:
    """The run's averaged weights' loss (``val_avg/<set>/loss``, rewarm.averaging) beside its raw curve: same
    colour, dashed (dotted where the raw line is dashed); the values drawn (none: the run did not average)."""
    x, y = run.series(f"val_avg/{val_set}/loss")
    if y:
        dashes = ":" if style["linestyle"] == "--" else "--"
        ax.plot(x, y, label=f"{run.label} (averaged)", linewidth=1.2, **(style | {"linestyle": dashes, "marker": None}))
    return y


def plot_series(
    runs: list[RunData], column: str, ylabel: str, title: str, path: Path, log_y: bool = False, smooth: bool = False
) -> Path | None:
    """Any metric column against tokens, one line per run (no figure if no run has the column); ``smooth``:
    a trailing moving average over 1/SMOOTH_POINTS of each run's points (per-step losses are noisy)."""
    fig, ax = _figure()
    drawn = False
    for i, run in enumerate(runs):
        x, y = run.series(column)
        if smooth and y:
            y = moving_average(y, max(1, len(y) // SMOOTH_POINTS))
        if y:
            style = run_style(i) | {"marker": None}
            ax.plot(x, y, label=run.label, linewidth=1.3, **style)
            drawn = True
    if not drawn:
        return None
    _tokens_axis(ax, runs[0].x_column())
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_y:
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    return _save(fig, ax, path)


def plot_tradeoff(summaries: list[RunSummary], upstream: str, downstream: str, path: Path,
                  forecasts: dict[str, dict[str, Any]] | None = None) -> Path | None:
    """Final loss on the upstream set (x) against final loss on the downstream set (y), absolute, one numbered
    filled point per run (lower left is better), its start (the step-0 validation) marked by a cross joined to
    it by a thin line. ``forecasts`` (run name -> set -> object with ``final_loss``, ``low``, ``high``, e.g. a
    ``SetForecast``; default: the summaries' own, from forecast.json): hollow markers at the forecast finals,
    their 80 % intervals as error bars. None when no run has both sets."""
    drawn = draw_tradeoff(summaries, upstream, downstream, forecasts)
    return None if drawn is None else _save(*drawn, path)


def draw_tradeoff(summaries: list[RunSummary], upstream: str, downstream: str,
                  forecasts: dict[str, dict[str, Any]] | None = None) -> tuple[Figure, Axes] | None:
    """The trade-off figure, not yet saved (``plot_tradeoff``)."""
    forecasts = forecasts if forecasts is not None else {s.name: s.forecast for s in summaries if s.forecast}
    pts = [(i, s) for i, s in enumerate(summaries) if upstream in s.sets and downstream in s.sets]
    fcs = [(i, s) for i, s in enumerate(summaries) if _has_sets(forecasts.get(s.name), upstream, downstream)]
    if not pts and not fcs:
        return None
    fig, ax = _figure(7.0, 5.0)
    at: dict[tuple[float, float], list[str]] = {}  # runs on the same spot share one annotation "4,5,9"
    for i, s in pts:
        style, up, down = run_style(i), s.sets[upstream], s.sets[downstream]
        ax.plot([up.start_loss, up.final_loss], [down.start_loss, down.final_loss], color=style["color"],
                linewidth=0.6, alpha=0.5, zorder=1)
        ax.scatter([up.start_loss], [down.start_loss], color=style["color"], marker="x", s=30, zorder=2)
        ax.scatter([up.final_loss], [down.final_loss], color=style["color"], marker=style["marker"],
                   s=25 if s.pruned else 45, alpha=0.4 if s.pruned else 1.0, zorder=3,  # pruned: a partial final
                   label=f"{i + 1}: {s.label}" + (" (pruned: last measured)" if s.pruned else ""))
        at.setdefault((round(up.final_loss, 6), round(down.final_loss, 6)), []).append(str(i + 1))
    for i, s in fcs:
        _forecast_point(ax, i, s, forecasts[s.name][upstream], forecasts[s.name][downstream], labelled=i not in dict(pts))
    for (x, y), numbers in at.items():
        ax.annotate(",".join(numbers), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    _tradeoff_limits(ax, pts, fcs, forecasts, upstream, downstream)
    _tradeoff_key(ax, bool(fcs))
    ax.set_xlabel(f"final loss on {upstream} (upstream, nats/token, lower is better)")
    ax.set_ylabel(f"final loss on {downstream} (downstream, nats/token, lower is better)")
    ax.set_title("final losses of each run (lower left is better)")
    return fig, ax


def _has_sets(forecast: dict[str, Any] | None, *sets: str) -> bool:
    return bool(forecast) and all(s in forecast for s in sets)


def _forecast_point(ax: Axes, i: int, s: RunSummary, up: Any, down: Any, labelled: bool) -> None:
    """A hollow marker at the forecast finals, error bars over the 80 % intervals."""
    style = run_style(i)
    x, y = _fc(up, "final_loss"), _fc(down, "final_loss")
    xerr = [[max(0.0, x - _fc(up, "low"))], [max(0.0, _fc(up, "high") - x)]]
    yerr = [[max(0.0, y - _fc(down, "low"))], [max(0.0, _fc(down, "high") - y)]]
    ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor=style["color"], elinewidth=0.8, capsize=2,
                alpha=0.8, zorder=2)
    ax.scatter([x], [y], facecolors="none", edgecolors=style["color"], marker=style["marker"], s=55, linewidths=1.2,
               label=f"{i + 1}: {s.label} (forecast)" if labelled else None, zorder=3)
    ax.annotate(f"{i + 1}f", (x, y), textcoords="offset points", xytext=(5, -10), fontsize=7, color=style["color"])


def _fc(value: Any, key: str) -> float:
    """A field of a forecast given as an object (``SetForecast``) or a dict (``forecast.json``)."""
    return float(value[key] if isinstance(value, dict) else getattr(value, key))


def _tradeoff_limits(ax: Axes, pts: list[tuple[int, RunSummary]], fcs: list[tuple[int, RunSummary]],
                     forecasts: dict[str, dict[str, Any]], upstream: str, downstream: str) -> None:
    """Axes that hold every final, forecast and interval, and the starts near them: a start far off (a run from
    scratch starts at ~ln(vocab)) would flatten the rest, so it is left outside (its line points to it)."""
    xs = [s.sets[upstream].final_loss for _, s in pts]
    ys = [s.sets[downstream].final_loss for _, s in pts]
    off = []
    for _, s in fcs:  # a forecast more than 1 nat away from every measured final is left outside too
        up, down = forecasts[s.name][upstream], forecasts[s.name][downstream]
        if pts and not (_near(_fc(up, "final_loss"), xs) and _near(_fc(down, "final_loss"), ys)):
            off.append(f"{s.label} (forecast)")
            continue
        xs += [_fc(up, "low"), _fc(up, "high")]
        ys += [_fc(down, "low"), _fc(down, "high")]
    top_x = robust_top([s.sets[upstream].start_loss for _, s in pts], xs)
    top_y = robust_top([s.sets[downstream].start_loss for _, s in pts], ys)
    xs += [s.sets[upstream].start_loss for _, s in pts if top_x is None or s.sets[upstream].start_loss <= top_x]
    ys += [s.sets[downstream].start_loss for _, s in pts if top_y is None or s.sets[downstream].start_loss <= top_y]
    for values, setter in ((xs, ax.set_xlim), (ys, ax.set_ylim)):
        lo, hi = min(values), max(values)
        pad = 0.08 * max(hi - lo, 1e-3)
        setter(lo - pad, hi + pad)
    far = [s.label for _, s in pts if (top_x is not None and s.sets[upstream].start_loss > top_x)
           or (top_y is not None and s.sets[downstream].start_loss > top_y)] + off
    if far:
        ax.text(0.99, 0.01, f"off the axes: {', '.join(far)}", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7)


def _near(value: float, measured: list[float]) -> bool:
    return min(measured) - 1.0 <= value <= max(measured) + 1.0


def _tradeoff_key(ax: Axes, with_forecasts: bool) -> None:
    """A small key of the marker kinds, in grey, under the runs' legend."""
    from matplotlib.lines import Line2D

    kinds = [Line2D([], [], color="0.4", marker="x", linestyle="none", label="start (step 0)"),
             Line2D([], [], color="0.4", marker="o", linestyle="none", label="final (measured)")]
    if with_forecasts:
        kinds.append(Line2D([], [], color="0.4", marker="o", markerfacecolor="none", linestyle="-", linewidth=0.8,
                            label="forecast final, 80 % interval"))
    ax.add_artist(ax.legend(handles=kinds, loc="upper right", fontsize=7, frameon=True, framealpha=0.8))


def write_figures(runs: list[RunData], summaries: list[RunSummary], out_dir: Path) -> dict[str, Path]:
    """All comparison figures; keys name them in report.md (``val/<set>``, ``tradeoff/<up>/<down>``, ``lr``,
    ``train_loss``)."""
    figures: dict[str, Path] = {}
    sets = list(dict.fromkeys(s for r in runs for s in r.val_sets()))
    roles = {s: next((r.role(s) for r in runs if r.role(s)), None) for s in sets}
    for s in sets:
        figures[f"val/{s}"] = plot_val_loss(runs, s, roles[s], out_dir / f"val_loss_{file_stem(s)}.png")
    ups = [s for s in sets if roles[s] == "upstream"]
    downs = [s for s in sets if roles[s] == "downstream"]
    for up in ups:
        for down in downs:
            p = plot_tradeoff(summaries, up, down, out_dir / f"tradeoff_{file_stem(up)}_{file_stem(down)}.png")
            if p is not None:
                figures[f"tradeoff/{up}/{down}"] = p
    lr = plot_series(runs, "optim/lr", "learning rate", "learning rate schedule", out_dir / "lr.png")
    if lr is not None:
        figures["lr"] = lr
    train = plot_series(
        runs,
        "train/loss",
        f"training loss (nats/token, moving mean over {100 // SMOOTH_POINTS} % of the logged steps)",
        "training loss",
        out_dir / "train_loss.png",
        log_y=_spans_decades(runs, "train/loss"),
        smooth=True,
    )
    if train is not None:
        figures["train_loss"] = train
    figures.update(plot_tasks(runs, out_dir))
    return figures


def _spans_decades(runs: list[RunData], column: str) -> bool:
    values = [v for r in runs for v in r.series(column)[1] if v > 0]
    return bool(values) and math.log10(max(values) / min(values)) > 1.0


def plot_tasks(runs: list[Any], out_dir: Path) -> dict[str, Path]:
    """One figure per task (its main metric against tokens); keys ``task/<task>``."""
    tasks: dict[str, list[str]] = {}
    for run in runs:
        for t, ms in task_columns(run).items():
            tasks.setdefault(t, []).extend(m for m in ms if m not in tasks.get(t, []))
    figures = {}
    for task, metrics in tasks.items():
        metric = main_metric(metrics)
        path = plot_series(runs, f"task/{task}/{metric}", f"{task}: {metric}", f"downstream task {task} ({metric})",
                           out_dir / f"task_{file_stem(task)}.png")
        if path is not None:
            figures[f"task/{task}"] = path
    return figures
