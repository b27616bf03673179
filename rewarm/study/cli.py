"""``rewarm sweep`` and ``rewarm compare``. No Lightning import here: training is imported lazily
(in-process sweeps) or runs in a child process."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from rewarm.errors import ConfigError
from rewarm.logs import setup_logging

log = logging.getLogger(__name__)


def _sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewarm sweep",
        description="Run the runs of a sweep file one after another: finished runs (summary.json) are skipped, "
        "an interrupted one is resumed. Runs go to <run.out_dir>/<sweep name>/<run name>.",
    )
    p.add_argument("config", help="the run config YAML every run starts from")
    p.add_argument("sweep", help="the sweep YAML (grid: and/or runs:, optional name: and base:)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides applied to every run (win over the sweep's)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the runs, their state and overrides; run nothing")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="train in this process: saves importing Lightning for every run; a hard crash ends the sweep",
    )
    p.add_argument("--group", help="sweep name (wandb group, sub-directory); default: the sweep's name: or file name")
    p.add_argument(
        "--stop-on-error", action="store_true", help="stop at the first failed run (default: go on, fail at the end)"
    )
    p.add_argument("--prune-after", type=float, default=None, metavar="F",
                   help="prune by forecast: every run trains to fraction F of its steps, the loss law is fitted on "
                   "those partial curves, and only the --keep best by forecast.objective continue to the end")
    p.add_argument("--keep", type=int, default=None, metavar="K", help="with --prune-after: how many runs continue")
    return p


def sweep_main(argv: list[str]) -> int:
    """``rewarm sweep CONFIG SWEEP.yaml [key=value ...] [--dry-run] [--in-process]``. Exit 0 when every run
    finished, 1 when some failed, 2 on an invalid sweep or config (nothing run), 3 (the trainer's
    PREEMPTED_EXIT_CODE) when a run was preempted: run the same command again to resume."""
    from rewarm.study import sweep

    args = _sweep_parser().parse_intermixed_args(argv)  # options may follow key=value
    setup_logging("INFO")
    try:
        spec = sweep.read_sweep(args.sweep)
        group = args.group or spec.name or "sweep"
        plan = sweep.plan_sweep(args.config, spec.runs, group=group, extra_overrides=args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if (args.prune_after is None) != (args.keep is None):
        print("error: --prune-after and --keep go together (e.g. --prune-after 0.25 --keep 3)", file=sys.stderr)
        return 2
    if args.dry_run:
        print(sweep.format_plan(plan, args.config))
        return 0
    if args.prune_after is not None:
        return _pruned_sweep(args, spec, group)
    try:
        dirs = sweep.run_sweep(
            args.config,
            spec.runs,
            group=group,
            extra_overrides=args.overrides,
            in_process=args.in_process,
            stop_on_error=args.stop_on_error,
        )
    except sweep.SweepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        if e.preempted:  # the trainer's own code, so a wrapper treats a preempted sweep like a preempted run
            from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE

            return PREEMPTED_EXIT_CODE
        return 1
    print(f"sweep {group}: {len(dirs)} runs finished under {dirs[0].parent if dirs else '-'}")
    print(f"compare them with: rewarm compare {dirs[0].parent if dirs else '<run dirs>'} --out <dir>")
    return 0


def _pruned_sweep(args: argparse.Namespace, spec: Any, group: str) -> int:
    """``rewarm sweep ... --prune-after F --keep K``: see ``rewarm.study.prune``; prints the forecast table."""
    from rewarm.study import prune, sweep

    try:
        dirs, decision = prune.run_pruned_sweep(
            args.config, spec.runs, group=group, fraction=args.prune_after, keep=args.keep,
            extra_overrides=args.overrides, in_process=args.in_process, stop_on_error=args.stop_on_error)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except sweep.SweepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        if e.preempted:
            from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE

            return PREEMPTED_EXIT_CODE
        return 1
    print("\n".join(prune.summary_lines(decision, dirs)))
    kept = len(decision["kept"])
    print(f"sweep {group}: {kept} of {len(dirs)} runs finished, {len(dirs) - kept} pruned by forecast "
          f"(forecast.json in each run, decision in {dirs[0].parent / prune.PRUNE_FILE})")
    print(f"compare them with: rewarm compare {dirs[0].parent} --out <dir>")
    return 0


def _compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewarm compare",
        description="Compare run directories (config.yaml + metrics.csv; no network): validation loss per set vs "
        "tokens, final upstream vs final downstream loss (starts marked, forecasts from forecast.json with their "
        "intervals), LR vs tokens, and report.md with a table per run.",
    )
    p.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directories, or directories holding run directories (e.g. a sweep's)",
    )
    p.add_argument("--out", required=True, type=Path, help="where figures/, summary.csv and report.md go")
    p.add_argument("--title", default="Run comparison", help="report title")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="RUN=LABEL",
        help="legend label for the run in directory RUN (default: its distinguishing config keys)",
    )
    return p


def compare_main(argv: list[str]) -> int:
    """``rewarm compare RUN_DIR... --out DIR``. Prints the per-run table; exit 2 on a missing run directory."""
    from rewarm.study import compare, report

    args = _compare_parser().parse_args(argv)
    setup_logging("INFO")
    labels = dict(item.split("=", 1) for item in args.label if "=" in item)
    try:
        dirs = compare.expand_run_dirs(args.run_dirs)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path, summaries = compare.write_comparison(dirs, args.out, labels=labels, title=args.title)
    print("\n".join(report.runs_table(summaries)))
    print(f"\nreport: {path}")
    return 0
