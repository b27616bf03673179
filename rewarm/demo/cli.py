"""``rewarm demo``: the offline demo (what ``make demo`` runs). See ``rewarm.demo.pipeline``."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from rewarm.resources import resource

log = logging.getLogger(__name__)

DEFAULT_CONFIG = resource("configs/demo.yaml")  # installed with the package, or the checkout's


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewarm demo",
        description="Build two offline corpora (Python docs prose -> Python source code), a byte-level BPE, a tiny "
        "Pythia-shaped base model, then run the rewarm study in miniature: constant LR, rewarm to 0.5/1/2 x the "
        "base's peak LR, warmup 0 vs 1 %, 5 % replay, from scratch, rewarm on upstream, a second seed, and from an "
        "earlier base revision; with lm-eval installed (pip install 'rewarm[eval]'), every run also evaluates two "
        "local lm-eval tasks built from the corpora.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="runs and report go here (default: runs/demo)")
    p.add_argument("--cache", type=Path, default=Path(".cache/rewarm-demo"),
                   help="corpora, tokenizer and base model, reused by the next run (default: .cache/rewarm-demo)")
    p.add_argument("--quick", action="store_true", help="smaller base model and shorter runs (about 3 minutes)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the main run's config (default: configs/demo.yaml)")
    p.add_argument("--rerun", action="store_true", help="run the study again even if its runs are finished")
    p.add_argument("--wandb", choices=("offline", "online", "disabled"), default=None,
                   help="wandb mode of the study runs (default: the config's)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if not args.config.is_file():
        print(f"rewarm demo: config not found: {args.config} (pass --config)")
        return 2
    from rewarm.demo.pipeline import PRESETS, TASKS_NOTICE, check_demo_packages, run_demo, tasks_available
    from rewarm.errors import ConfigError
    from rewarm.study.sweep import SweepFailed  # light: no Lightning

    with_tasks = tasks_available()
    if not with_tasks:
        print(TASKS_NOTICE, flush=True)  # the one line about it: the runs and the tables go on without tasks
    try:
        check_demo_packages(args.config, with_tasks)  # before the heavy imports and the corpora
        from rewarm.logs import setup_logging

        setup_logging("INFO")
        _quiet_libraries()
        t0 = time.perf_counter()
        preset = PRESETS["quick" if args.quick else "full"]
        result = run_demo(args.config, args.out, args.cache, preset, rerun=args.rerun, wandb_mode=args.wandb,
                          with_tasks=with_tasks)
    except ConfigError as e:  # key-less: a package the config needs is missing (rewarm.training.requirements)
        print(f"rewarm demo: {'invalid config: ' if e.key else ''}{e}")
        return 2
    except SweepFailed as e:
        print(f"rewarm demo: {e}. Finished runs are kept: run `rewarm demo` again to retry the others "
              "(or add --rerun to start the study over).")
        return 1
    result.seconds["total"] = time.perf_counter() - t0
    print_result(result)
    return 0


def print_result(result: Any) -> None:
    """The loss table, the task table (or why there is none), the findings, the timings, the report's path."""
    from rewarm.demo.forecast import format_forecast_table
    from rewarm.demo.table import format_findings, format_table, format_task_table, format_timings

    blocks = [format_table(result), format_task_table(result)]
    blocks += [format_forecast_table(result.forecast)] if result.forecast is not None else []
    for block in (*blocks, format_findings(result)):
        print()
        print(block)
    print()
    print(format_timings(result.seconds))
    print(f"report: {result.report}")


def _quiet_libraries() -> None:
    """Keep the demo's output readable: ten runs in one process, so no per-run wandb summary, no Lightning info
    banner per run ("GPU available ..."), no per-save progress bar. Warnings still show (``rewarm.logs`` leaves out
    only the third-party lines it names)."""
    os.environ.setdefault("WANDB_SILENT", "true")  # offline wandb prints a run summary per run otherwise
    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import: import first, then set them)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # info lines only: Lightning's warnings still show
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
