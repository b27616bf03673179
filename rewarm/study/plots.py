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


def plot_tradeoff(summaries: list[RunSummary], upstream: str, downstream: str, path: Path) -> Path | None:
    """Forgetting (upstream loss increase) against adaptation (downstream loss decrease) at the end of
    each run: one numbered point per run; lower right is better."""
    pts = [(i, s) for i, s in enumerate(summaries) if upstream in s.forgetting and downstream in s.adaptation]
    if not pts:
        return None
    fig, ax = _figure(7.0, 5.0)
    at: dict[tuple[float, float], list[str]] = {}  # runs on the same spot share one annotation "4,5,9"
    for i, s in pts:
        style = run_style(i)
        x, y = s.adaptation[downstream], s.forgetting[upstream]
        ax.scatter([x], [y], color=style["color"], marker=style["marker"], s=45, label=f"{i + 1}: {s.label}", zorder=3)
        at.setdefault((round(x, 6), round(y, 6)), []).append(str(i + 1))
    for (x, y), numbers in at.items():
        ax.annotate(",".join(numbers), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel(f"adaptation on {downstream}: start - final loss (nats/token, higher is better)")
    ax.set_ylabel(f"forgetting on {upstream}: final - start loss (nats/token, lower is better)")
    ax.set_title("forgetting vs adaptation at the end of each run")
    return _save(fig, ax, path)


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
