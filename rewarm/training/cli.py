"""``rewarm train`` and ``rewarm check``: argument parsing, exit codes, the plan printout.

Heavy imports stay inside ``train_main`` (``rewarm check`` never imports Lightning, DeepSpeed or wandb)."""

from __future__ import annotations

import sys
from typing import Any

from rewarm.config import config_parser, load_or_report
from rewarm.errors import (
    EXIT_CONFIG,
    EXIT_FAULT,
    ConfigError,
    DataError,
    DiskFullError,
    NonFiniteError,
    ResumeError,
    key_prefix,
    report,
)


def train_main(argv: list[str]) -> int:
    parser = config_parser("train", "Train (or resume, resume=auto) a run.")
    parser.add_argument("--stop-at-step", type=int, default=None, metavar="N",
                        help="stop after optimizer step N with a checkpoint, unfinished (no summary.json): "
                        "resume.mode=auto continues it later (what `rewarm sweep --prune-after` does)")
    args = parser.parse_intermixed_args(argv)
    cfg = load_or_report(args.config, args.overrides)
    if cfg is None or missing_packages_refused(cfg):  # a missing package: refused before any start-up
        return EXIT_CONFIG
    from rewarm.checkpoints.store import SignalWatcher

    signals = SignalWatcher()
    signals.install()  # before the heavy imports: a preemption signal during start-up is kept, not fatal
    from rewarm.training.run import run

    try:
        run_dir = run(cfg, signals, stop_at_step=args.stop_at_step)
    except (ConfigError, ResumeError, DataError) as e:
        return report(e)
    except (NonFiniteError, DiskFullError) as e:
        return report(e, EXIT_FAULT)
    except OSError as e:
        from rewarm.faults.disk import describe_oserror, is_disk_full

        if not is_disk_full(e):
            raise
        return report(describe_oserror(e), EXIT_FAULT)
    print(f"run directory: {run_dir}")
    _close_process_group()
    return 0


def missing_packages_refused(cfg: Any) -> bool:
    """Print the refusal and return True when the run needs an optional package that is not installed: it would
    fail after its start-up (data checks, tokenizer), so it is refused before any (``rewarm.training.requirements``)."""
    from rewarm.training.requirements import check_packages

    try:
        check_packages([(cfg.run.name, cfg)])
    except ConfigError as e:
        report(e)
        return True
    return False


def _close_process_group() -> None:
    """Tear torch.distributed down before the interpreter exits: its threads left to the exit handlers can abort
    a rank that already finished ("terminate called without an active exception", seen once with ZeRO-3 on CPU)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_main(argv: list[str]) -> int:
    args = config_parser("check", "Validate a config and print the run plan.").parse_args(argv)
    cfg = load_or_report(args.config, args.overrides)
    if cfg is None or missing_packages_refused(cfg):
        return EXIT_CONFIG
    from rewarm.training.plan import format_plan, model_vocab_eos

    try:
        from rewarm.data import check_paths

        with key_prefix("data"):
            check_paths(cfg.data, *model_vocab_eos(cfg))
        from rewarm.tasks.config import check_task_paths

        with key_prefix("tasks"):
            check_task_paths(cfg.tasks)
        print(format_plan(cfg))
    except ConfigError as e:
        print(f"error: invalid config: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return 0
