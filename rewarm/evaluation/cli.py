"""``rewarm eval``: a model directory, run checkpoint or hub id on the configured validation sets and tasks."""

from __future__ import annotations

import json
from pathlib import Path

from rewarm.config import config_parser, load_or_report
from rewarm.errors import EXIT_CONFIG, ConfigError, DataError, ResumeError, report


def eval_main(argv: list[str]) -> int:
    p = config_parser("eval", "Evaluate a model directory or run checkpoint on the configured validation sets.")
    p.add_argument("--checkpoint", required=True,
                   help="HF model directory, run directory, checkpoint directory, or hub id (with --revision)")
    p.add_argument("--revision", default=None, help="hub revision (e.g. step143000); for a local HF directory, "
                                                    "its subdirectory")
    p.add_argument("--tasks", default=None, help="comma-separated lm-eval tasks (default: the config's tasks.names)")
    p.add_argument("--limit", type=int, default=None, help="at most N documents per task (default: tasks.limit)")
    args = p.parse_args(argv)
    cfg = load_or_report(args.config, args.overrides)
    if cfg is None:
        return EXIT_CONFIG
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks is not None else None
    if tasks is not None and not all(tasks) or (args.limit is not None and args.limit < 1):
        return report(ConfigError("--tasks/--limit", "give task names separated by commas and a limit >= 1"))
    from rewarm.evaluation.checkpoint import evaluate_checkpoint

    try:
        results = evaluate_checkpoint(cfg, Path(args.checkpoint), tasks=tasks, limit=args.limit,
                                      revision=args.revision)
    except (ConfigError, ResumeError, DataError) as e:
        return report(e)
    print(json.dumps(results, indent=1))
    return 0
