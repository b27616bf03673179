"""``rewarm schedule``: print or plot the LR schedule of one or more configs, before launching anything.

    rewarm schedule CONFIG [CONFIG ...] [key=value ...] [--set "k=v k2=v2" ...] [--csv] [--plot FILE.png]

Arguments with ``=`` are overrides applied to every curve; the others are config files. Each ``--set``
adds one curve per config with its extra overrides (quoted, space separated), so curves = configs x sets.
Legend labels name what distinguishes a curve: the config's file name when there are several configs,
and the ``--set`` overrides. Imports neither Lightning nor torch; matplotlib (Agg) only for ``--plot``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rewarm import config as rc
from rewarm.errors import ConfigError
from rewarm.schedules import build_lr_fn, plan_phases
from rewarm.schedules.phases import LrFn, Phase

log = logging.getLogger(__name__)


@dataclass
class Curve:
    """One schedule to show: its label, the run it belongs to, and its phases and LR function."""

    label: str
    name: str
    total_steps: int
    tokens_per_step: int
    phases: list[Phase]
    lr_fn: LrFn

    def lrs(self) -> list[float]:
        return [self.lr_fn(t) for t in range(self.total_steps)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewarm schedule",
        description="Show the LR schedule of configs: a table of phases, every step as CSV (--csv), or a figure (--plot).",
        epilog='Example: rewarm schedule run.yaml trainer.max_steps=1000 --set "schedule.name=cosine" '
        '--set "schedule.name=wsd schedule.cooldown_fraction=0.2" --plot lr.png',
    )
    p.add_argument("items", nargs="+", metavar="CONFIG|key=value", help="config files, and overrides for all curves")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar='"k=v ..."',
        help="one more curve per config with these overrides (repeatable)",
    )
    p.add_argument(
        "--csv", action="store_true", help="print step,lr for every optimizer step (one lr column per curve)"
    )
    p.add_argument("--plot", metavar="FILE.png", help="write a figure of all curves")
    p.add_argument("--x", choices=("steps", "tokens"), default="steps", help="x axis of the figure (default: steps)")
    p.add_argument("--title", default=None, help="figure title")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``rewarm schedule``; returns the exit status (2 on an invalid config)."""
    args = _parser().parse_intermixed_args(argv)  # overrides may follow the options
    configs = [i for i in args.items if "=" not in i]
    overrides = [i for i in args.items if "=" in i]
    if not configs:
        print("error: give at least one config file", file=sys.stderr)
        return 2
    try:
        sets = [shlex.split(s) for s in args.set]
    except ValueError as e:  # unbalanced quotes
        print(f"error: --set: {e}", file=sys.stderr)
        return 2
    try:
        curves = load_curves(configs, overrides, sets)
    except ConfigError as e:
        print(f"error: {e.key}: {e.message}" if e.key else f"error: {e.message}", file=sys.stderr)
        return 2
    try:
        if args.csv:
            write_csv(curves, sys.stdout)
        else:
            print("\n\n".join(format_table(c) for c in curves))
        sys.stdout.flush()
    except BrokenPipeError:  # `rewarm schedule ... --csv | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.plot:
        plot(curves, Path(args.plot), x=args.x, title=args.title)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def load_curves(configs: Sequence[str], overrides: Sequence[str], sets: Sequence[list[str]]) -> list[Curve]:
    """One curve per (config, set); raises ConfigError naming the config and set that failed."""
    curves = []
    for path in configs:
        for extra in sets or [[]]:
            cfg = _load(path, overrides, extra, len(configs) > 1, bool(sets))
            plan = rc.batch_plan(cfg)
            s = cfg.schedule
            label = _label(path, extra, len(configs) > 1)
            phases = plan_phases(s, plan.max_steps, plan.tokens_per_step)
            lr_fn = build_lr_fn(s, plan.max_steps, plan.tokens_per_step)
            curves.append(Curve(label, s.name, plan.max_steps, plan.tokens_per_step, phases, lr_fn))
    return curves


def _load(path: str, overrides: Sequence[str], extra: list[str], many_configs: bool, many_sets: bool) -> rc.RunConfig:
    """``rc.load`` with the curve named in the error when there are several."""
    try:
        return rc.load(path, [*overrides, *extra])
    except ConfigError as e:
        where = " ".join(([path] if many_configs else []) + ([f"--set {shlex.join(extra)!r}"] if many_sets else []))
        raise ConfigError(e.key, f"{e.message}{f' (in {where})' if where else ''}") from None


def _label(path: str, extra: list[str], many_configs: bool) -> str:
    parts = ([Path(path).stem] if many_configs or not extra else []) + [_short(o) for o in extra]
    return " ".join(parts)


def _short(override: str) -> str:
    """``schedule.max_lr=3e-4`` -> ``max_lr=3e-4``; ``schedule.name=wsd`` -> ``wsd`` (schedule keys are implied)."""
    key, _, value = override.partition("=")
    return value if key == "schedule.name" else override.removeprefix("schedule.")


# ---------------------------------------------------------------- output


def write_csv(curves: Sequence[Curve], out: TextIO) -> None:
    """``step,lr`` (one curve) or ``step,<label>,...`` rows, LRs at full precision (repr round-trips)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "lr"] if len(curves) == 1 else ["step", *[c.label for c in curves]])
    columns = [c.lrs() for c in curves]
    for t in range(max(c.total_steps for c in curves)):
        writer.writerow([t, *[repr(col[t]) if t < len(col) else "" for col in columns]])


def format_table(curve: Curve) -> str:
    """A compact table: one row per phase with its step and token range and the LR at each edge."""
    tps = curve.tokens_per_step
    head = (
        f"{curve.label}: schedule {curve.name}, {curve.total_steps:,} steps x {tps:,} tokens/step "
        f"= {_tokens(curve.total_steps * tps)} tokens"
    )
    rows = [("phase", "start step", "end step", "start tokens", "end tokens", "lr start", "lr end", "formula")]
    for p in curve.phases:
        rows.append(
            (
                p.name,
                f"{p.start_step:,}",
                f"{p.end_step:,}",
                _tokens(p.start_step * tps),
                _tokens(p.end_step * tps),
                f"{p.lr_start:.6g}",
                f"{p.lr_end:.6g}",
                p.formula,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    last = curve.total_steps - 1
    lines.append(f"lr at the last step ({last:,}): {curve.lr_fn(last):.6g}; end step is exclusive")
    return "\n".join([head, *lines])


def _tokens(n: int) -> str:
    """4096 -> 4.096K, 297e9 -> 297B."""
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.4g}{unit}"
    return str(n)


def plot(curves: Sequence[Curve], path: Path, x: str = "steps", title: str | None = None) -> None:
    """Overlay all curves in one figure (Agg backend, imported here only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(9, 4.2 + 0.25 * ((len(curves) + 1) // 2)))
    for i, c in enumerate(curves):
        scale = c.tokens_per_step if x == "tokens" else 1
        style = ("-", "--", "-.", ":")[i // 10 % 4]  # the colour cycle has 10 colours
        ax.plot([t * scale for t in range(c.total_steps)], c.lrs(), style, label=c.label or c.name, linewidth=1.6)
    ax.set_xlabel("optimizer step" if x == "steps" else "training tokens")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tokens(int(v)) if x == "tokens" else f"{int(v):,}"))
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if title:
        ax.set_title(title, fontsize=10)
    # below the axes: a legend inside would hide the curves that sit at max_lr
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    log.info("wrote %s", path)
