"""``report.md`` and ``summary.csv`` of a comparison (pure text; the numbers come from ``runs.summarize``)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

from rewarm.study.runs import RunSummary
from rewarm.study.tasks import task_section

DEFINITIONS = (
    "Losses are mean validation NLL in nats per predicted token; perplexity = exp(loss). *Start* is the "
    "evaluation at step 0 (the starting model), *final* the last evaluation, *best* the lowest. "
    "**Forgetting** on an upstream set = final − start loss (higher: more forgotten); **adaptation** on a "
    "downstream set = start − final loss (higher: better adapted). The trade-off figure plots the absolute final "
    "losses, upstream against downstream (lower left is better), each run's start marked; a *forecast* (a sweep "
    "pruned by forecast, `rewarm sweep --prune-after`) is the law's final loss with its 80 % interval, shown as "
    "a hollow marker; a *pruned* run stopped early, so its measured final is partial."
)


def fmt(x: float | None, digits: int = 4) -> str:
    """Table cell: fixed decimals, or '–' for a missing value."""
    if x is None:
        return "–"
    return f"{x:.{digits}f}"


def fmt_count(x: float) -> str:
    """A token count, exact, with thousands separators."""
    return f"{x:,.0f}"


def fmt_signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.4f}"


def fmt_forecast(fc: Mapping[str, float] | None) -> str:
    """``5.123 [5.100, 5.150]``: a forecast final loss and its 80 % interval ('–' when none)."""
    if not fc:
        return "–"
    return f"{fc['final_loss']:.4f} [{fc['low']:.4f}, {fc['high']:.4f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in esc[1:]]


def runs_table(summaries: list[RunSummary]) -> list[str]:
    """One row per run: label, steps, tokens, final LR, forgetting per upstream set, adaptation per downstream set."""
    ups = list(dict.fromkeys(k for s in summaries for k in s.forgetting))
    downs = list(dict.fromkeys(k for s in summaries for k in s.adaptation))
    header = ["#", "run", "label", "steps", "tokens", "final LR"]
    header += [f"forgetting {u}" for u in ups] + [f"adaptation {d}" for d in downs]
    fsets = list(dict.fromkeys(k for s in summaries for k in s.forecast))
    header += [f"forecast {f} (80 %)" for f in fsets] + (["pruned"] if fsets else [])
    rows = []
    for i, s in enumerate(summaries, 1):
        row = [
            str(i),
            f"`{s.name}`",
            s.label,
            str(s.steps),
            fmt_count(s.tokens),
            "–" if s.final_lr is None else f"{s.final_lr:.3g}",
        ]
        row += [fmt_signed(s.forgetting.get(u)) for u in ups] + [fmt_signed(s.adaptation.get(d)) for d in downs]
        row += [fmt_forecast(s.forecast.get(f)) for f in fsets] + (["yes" if s.pruned else ""] if fsets else [])
        rows.append(row)
    return _table(header, rows)


def set_table(summaries: list[RunSummary], val_set: str) -> list[str]:
    """One row per run for one validation set: start / final / best loss, final / best perplexity, change."""
    role = next((s.sets[val_set].role for s in summaries if val_set in s.sets), None)
    change = {"upstream": "forgetting", "downstream": "adaptation"}.get(role or "", "change")
    header = ["#", "run", "start loss", "final loss", "best loss", "best at tokens", "final ppl", "best ppl", change]
    forecast = any(val_set in s.forecast for s in summaries)
    header += ["forecast final (80 %)", "error"] if forecast else []
    rows = []
    for i, s in enumerate(summaries, 1):
        st = s.sets.get(val_set)
        if st is None:
            continue
        rows.append(
            [
                str(i),
                f"`{s.name}`",
                fmt(st.start_loss),
                fmt(st.final_loss),
                fmt(st.best_loss),
                fmt_count(st.best_tokens),
                fmt(st.final_ppl, 2),
                fmt(st.best_ppl, 2),
                fmt_signed(st.change),
            ]
            + (_forecast_cells(s, st.final_loss, val_set) if forecast else [])
        )
    return _table(header, rows)


def _forecast_cells(s: RunSummary, final: float, val_set: str) -> list[str]:
    """Forecast and its error (forecast − measured final; '–' for a pruned run, whose final is partial)."""
    fc = s.forecast.get(val_set)
    err = None if fc is None or s.pruned else fc["final_loss"] - final
    return [fmt_forecast(fc), fmt_signed(err)]


def render(summaries: list[RunSummary], figures: Mapping[str, str], *, title: str, base: Path | None = None) -> str:
    """The whole report. ``figures``: key (as from ``plots.write_figures``) -> path relative to the report."""
    sets = list(dict.fromkeys(k for s in summaries for k in s.sets))
    lines = [f"# {title}", "", f"{len(summaries)} runs, from their run directories:", ""]
    lines += [f"{i}. `{_rel(s.run_dir, base)}` — {s.label}" for i, s in enumerate(summaries, 1)]
    lines += ["", DEFINITIONS, "", "## Runs", "", *runs_table(summaries), ""]
    trade = [k for k in figures if k.startswith("tradeoff/")]
    for key in trade:
        _, up, down = key.split("/")
        lines += [f"![final loss on {up} vs final loss on {down}, lower left is better]({figures[key]})", ""]
    for val_set in sets:
        role = next((s.sets[val_set].role for s in summaries if val_set in s.sets), None)
        lines += [
            f"## Validation set `{val_set}`" + (f" ({role})" if role else ""),
            "",
            *set_table(summaries, val_set),
            "",
        ]
        if f"val/{val_set}" in figures:
            lines += [f"![validation loss on {val_set} vs tokens]({figures[f'val/{val_set}']})", ""]
    lines += task_section(summaries, dict(figures))
    for key, caption in (("lr", "learning rate vs tokens"), ("train_loss", "training loss vs tokens")):
        if key in figures:
            lines += [f"## {caption.capitalize()}", "", f"![{caption}]({figures[key]})", ""]
    return "\n".join(lines)


def _rel(path: Path, base: Path | None) -> str:
    if base is None:
        return str(path)
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return str(path)


def write_summary_csv(summaries: list[RunSummary], path: Path) -> Path:
    """summary.csv: one row per (run, validation set), full precision, for scripts (e.g. the demo's findings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [
        "run",
        "label",
        "run_dir",
        "steps",
        "tokens",
        "final_lr",
        "set",
        "role",
        "start_loss",
        "final_loss",
        "best_loss",
        "best_tokens",
        "final_ppl",
        "best_ppl",
        "forgetting",
        "adaptation",
        "forecast_final",
        "forecast_low",
        "forecast_high",
        "pruned",
    ]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for s in summaries:
            for st in s.sets.values():
                w.writerow(
                    {
                        "run": s.name,
                        "label": s.label,
                        "run_dir": str(s.run_dir),
                        "steps": s.steps,
                        "tokens": repr(s.tokens),
                        "final_lr": "" if s.final_lr is None else repr(s.final_lr),
                        "set": st.name,
                        "role": st.role or "",
                        "start_loss": repr(st.start_loss),
                        "final_loss": repr(st.final_loss),
                        "best_loss": repr(st.best_loss),
                        "best_tokens": repr(st.best_tokens),
                        "final_ppl": repr(st.final_ppl),
                        "best_ppl": repr(st.best_ppl),
                        "forgetting": repr(st.change) if st.role == "upstream" and st.change is not None else "",
                        "adaptation": repr(st.change) if st.role == "downstream" and st.change is not None else "",
                        **_forecast_fields(s.forecast.get(st.name)),
                        "pruned": str(s.pruned).lower() if s.forecast else "",
                    }
                )
    return path


def _forecast_fields(fc: Mapping[str, float] | None) -> dict[str, str]:
    keys = {"forecast_final": "final_loss", "forecast_low": "low", "forecast_high": "high"}
    return {k: repr(float(fc[v])) if fc else "" for k, v in keys.items()}
