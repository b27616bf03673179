"""Plain-text output of ``rewarm demo``: the loss / perplexity table, the findings, the timings."""

from __future__ import annotations

import math
from typing import Any

from rewarm.demo.findings import Curve


def _cell(loss: float) -> str:
    """``loss (ppl)``; perplexity = exp(mean NLL per token)."""
    ppl = math.exp(loss) if loss < 700 else float("inf")
    return f"{loss:6.3f} ({ppl:8.1f})"


def format_table(result: Any, upstream: str = "pile", downstream: str = "slimpajama") -> str:
    """One line per run: start -> end loss (perplexity) on the upstream and the downstream validation set."""
    curves: dict[str, dict[str, Curve]] = result.numbers.curves
    width = max(len(name) for name in curves) + 2
    head1 = f"{'':{width}}{'upstream: ' + upstream:<40}{'downstream: ' + downstream:<40}"
    head2 = f"{'run':{width}}" + f"{'start loss (ppl)':<20}{'end loss (ppl)':<20}" * 2
    lines = [head1, head2, "-" * len(head2)]
    for name, sets in curves.items():
        cells = []
        for s in (upstream, downstream):
            c = sets.get(s)
            cells += [_cell(c.start), _cell(c.final)] if c else ["-", "-"]
        lines.append(f"{name:{width}}" + "".join(f"{c:<20}" for c in cells))
    return "\n".join(lines)


def format_task_table(result: Any) -> str:
    """One line per run: each task's main metric (accuracy) at the start -> at the end, from its metrics.csv."""
    if not result.with_tasks:
        return "(downstream tasks not evaluated: lm-eval is not installed)"
    from rewarm.study.runs import load_run
    from rewarm.study.tasks import task_stats

    stats = {name: task_stats(load_run(d)) for name, d in result.run_dirs.items()}
    tasks = list(dict.fromkeys((t, st.metric) for sts in stats.values() for t, st in sts.items()))
    if not tasks:
        return "(no downstream tasks were evaluated)"
    width = max(len(name) for name in stats) + 2
    labels = [f"{t} {m} (start -> end)" for t, m in tasks]
    col = max(len(label) for label in labels) + 2
    head = f"{'run':{width}}" + "".join(f"{label:<{col}}" for label in labels)
    lines = [head, "-" * len(head)]
    for name, sts in stats.items():
        cells = [f"{sts[t].start:.3f} -> {sts[t].final:.3f}" if t in sts else "-" for t, _ in tasks]
        lines.append(f"{name:{width}}" + "".join(f"{c:<{col}}" for c in cells))
    return "\n".join(lines)


def format_findings(result: Any) -> str:
    """The seed noise and one verdict per finding, as computed by ``rewarm.demo.findings``."""
    n = result.numbers
    a, b = n.seed_pair
    lines = [f"seed noise ({a} vs {b}): {n.seed_noise:.3f} nats/token; differences count above {n.threshold:.3f}"]
    for f in result.findings:
        lines.append(f"  [{'x' if f.reproduced else ' '}] {f.title}")
        lines.append(f"      {f.evidence}")
    k = sum(f.reproduced for f in result.findings)
    lines.append(f"{k} of {len(result.findings)} findings of the papers reproduced")
    if getattr(result, "forecast", None) is not None:
        from rewarm.demo.forecast import forecast_finding

        lines.append(forecast_finding(result.forecast, n.seed_noise))
    return "\n".join(lines)


def format_timings(seconds: dict[str, float]) -> str:
    """``corpora 6s, tokenizer 2s, ...`` (a phase that reused its cache takes well under a second)."""
    return "time: " + ", ".join(f"{k} {_duration(v)}" for k, v in seconds.items())


def _duration(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(round(s % 60)):02d}s"
