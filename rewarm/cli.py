"""`rewarm` command line. Subcommands import their modules lazily: `rewarm --help`, `rewarm check`
and `rewarm schedule` never import Lightning, DeepSpeed or wandb."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, function, one-line help). Each function takes the remaining argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("rewarm.training.cli", "train_main", "train (or resume) a run from a YAML config"),
    "check": ("rewarm.training.cli", "check_main", "validate a config and print the run plan (fast, no training imports)"),
    "eval": ("rewarm.evaluation.cli", "eval_main", "evaluate a model directory or checkpoint on the configured sets"),
    "schedule": ("rewarm.schedules.cli", "main", "print / plot the LR schedule of one or more configs"),
    "demo": ("rewarm.demo.cli", "main", "the offline demo: build corpora, a base model, and run the rewarm study"),
    "sweep": ("rewarm.study.cli", "sweep_main", "run a grid / list of override sets one after another"),
    "compare": ("rewarm.study.cli", "compare_main", "compare run directories: figures and report.md"),
    "export": ("rewarm.checkpoints.cli", "export_main", "write a Hugging Face directory from a run or checkpoint"),
    "slurm": ("rewarm.launch.cli", "main", "render (and submit) a SLURM batch script for a config"),
    "tokenize": ("rewarm.data.megatron.cli", "tokenize_main", "tokenize a text source once into .bin + .idx (GPT-NeoX format)"),
    "forecast": ("rewarm.forecast.cli", "main", "fit a loss law on runs and forecast any recipe's curves before running it"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewarm",
        description="Continual pre-training with controlled LR rewarming, replay and forgetting metrics.",
        epilog="Run `rewarm <command> --help` for the options of a command.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="command")
    for name, (_, _, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)
        if args.version:
            from rewarm import __version__

            print(__version__)
            return 0
        parser.print_help()
        return 0 if not argv else 2
    module, func, _ = COMMANDS[argv[0]]
    fn = getattr(importlib.import_module(module), func)
    return int(fn(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
