"""`rewarm train | check | eval | export`: argument parsing and the plan printout. Heavy imports stay
inside the command functions that need them (`rewarm check` never imports Lightning, DeepSpeed or wandb)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rewarm.config import RunConfig, batch_plan, load
from rewarm.errors import ConfigError, DataError, DiskFullError, NonFiniteError, ResumeError, key_prefix

EXIT_CONFIG = 2
EXIT_FAULT = 1  # the run stopped on a fault (non-finite step, full disk): fix the cause, then resume=auto


def _config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"rewarm {prog}", description=description)
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. schedule.max_lr=3e-4 trainer.max_steps=100")
    return p


def load_or_report(config: str, overrides: list[str]) -> RunConfig | None:
    """The validated config, or None after printing the refusal (the caller exits with EXIT_CONFIG)."""
    try:
        return load(config, overrides)
    except ConfigError as e:
        print(f"error: invalid config: {e}", file=sys.stderr)
        return None


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_CONFIG


def train_main(argv: list[str]) -> int:
    args = _config_parser("train", "Train (or resume, resume=auto) a run.").parse_args(argv)
    cfg = load_or_report(args.config, args.overrides)
    if cfg is None:
        return EXIT_CONFIG
    from rewarm.checkpointing import SignalWatcher

    signals = SignalWatcher()
    signals.install()  # before the heavy imports: a preemption signal during start-up is kept, not fatal
    from rewarm.train import run

    try:
        run_dir = run(cfg, signals)
    except (ConfigError, ResumeError, DataError) as e:
        return _fail(e)
    except (NonFiniteError, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAULT
    except OSError as e:
        from rewarm.faults.disk import describe_oserror, is_disk_full

        if not is_disk_full(e):
            raise
        print(f"error: {describe_oserror(e)}", file=sys.stderr)
        return EXIT_FAULT
    print(f"run directory: {run_dir}")
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Tear torch.distributed down before the interpreter exits: its threads left to the exit handlers can abort
    a rank that already finished ("terminate called without an active exception", seen once with ZeRO-3 on CPU)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_main(argv: list[str]) -> int:
    args = _config_parser("check", "Validate a config and print the run plan.").parse_args(argv)
    cfg = load_or_report(args.config, args.overrides)
    if cfg is None:
        return EXIT_CONFIG
    try:
        from rewarm.data import check_paths

        with key_prefix("data"):
            check_paths(cfg.data, *_model_vocab_eos(cfg))
        from rewarm.tasks.config import check_task_paths

        with key_prefix("tasks"):
            check_task_paths(cfg.tasks)
        print(format_plan(cfg))
    except ConfigError as e:
        print(f"error: invalid config: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _model_vocab_eos(cfg: RunConfig) -> tuple[int | None, int | None]:
    """(vocab_size, eos_token_id) from a local model's config.json (None, None for a hub id), for the checks
    of pre-tokenized files."""
    from rewarm.model import read_model_config

    model_cfg = read_model_config(cfg.model.name_or_path, cfg.model.revision) or {}
    return model_cfg.get("vocab_size"), model_cfg.get("eos_token_id")


def format_plan(cfg: RunConfig) -> str:
    from rewarm.model import parameter_count_from_config, read_model_config
    from rewarm.schedules import build_lr_fn, plan_phases

    plan = batch_plan(cfg)
    lr = build_lr_fn(cfg.schedule, plan.max_steps, plan.tokens_per_step)
    phases = plan_phases(cfg.schedule, plan.max_steps, plan.tokens_per_step)
    peak = max([lr(0), *(p.lr_start for p in phases), *(p.lr_end for p in phases)])  # every phase is monotone
    model_cfg = read_model_config(cfg.model.name_or_path, cfg.model.revision)
    n_params = parameter_count_from_config(model_cfg) if model_cfg else None
    lines = [
        f"run            {cfg.run_dir}",
        f"model          {cfg.model.name_or_path}" + (f" @ {cfg.model.revision}" if cfg.model.revision else "")
        + f" ({cfg.model.init})" + (f", {n_params:,} parameters" if n_params else ""),
        f"batch          {plan.micro_batch_size} rows x {plan.grad_accum_steps} accumulation x {plan.world_size} "
        f"devices = {plan.rows_per_step} rows x {plan.seq_len} tokens",
        f"optimizer steps {plan.max_steps}",
        f"tokens/step    {plan.tokens_per_step:,}",
        f"total tokens   {plan.total_tokens:,}",
        f"schedule       {cfg.schedule.name}: LR start {lr(0):.4g}, peak {peak:.4g}, end {lr(plan.max_steps - 1):.4g}",
    ]
    for ph in phases:
        lines.append(f"  {ph.name:<12} steps {ph.start_step:>8} - {ph.end_step:<8} LR {ph.lr_start:.4g} -> {ph.lr_end:.4g}")
    warm = next((ph for ph in phases if ph.name == "warmup"), None)
    lines.append(f"warmup steps   {warm.end_step - warm.start_step if warm else 0}")
    lines.append("train sources  " + ", ".join(f"{n} (weight {s.weight:g})" for n, s in sorted(cfg.data.train.items())))
    for name, src in sorted(cfg.data.train.items()):
        if src.preset == "pythia_preshuffled":
            lines.append(f"  {name}: Pythia's pre-shuffled rows from row {src.start_step * src.rows_per_step:,} "
                         f"(step {src.start_step} x {src.rows_per_step} rows), in order")
    for name, vs in cfg.data.val.items():
        lines.append(f"val set        {name}: {vs.role}, up to {vs.max_tokens:,} tokens")
    lines.append(f"evaluate       at step 0, every {cfg.trainer.val_every_steps} steps and at the end")
    lines.append(resume_line(cfg))
    if cfg.tasks.names:
        every = f"every {cfg.tasks.every_steps} steps, " if cfg.tasks.every_steps else ""
        lines.append(f"tasks          {', '.join(cfg.tasks.names)}: at step 0, {every}at the end")
    return "\n".join(lines)


def resume_line(cfg: RunConfig) -> str:
    """The plan's resume line: the mode ``rewarm train`` will use (after shorthands and overrides)."""
    mode = cfg.resume.mode
    what = {"auto": f"auto (the newest valid checkpoint in {cfg.run_dir / 'checkpoints'}, else a fresh start)",
            "never": "never (a fresh start)"}.get(mode, f"from {mode}")
    return f"resume         {what}" + (", config changes allowed (logged)" if cfg.resume.allow_config_change else "")


def eval_main(argv: list[str]) -> int:
    p = _config_parser("eval", "Evaluate a model directory or run checkpoint on the configured validation sets.")
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
        return _fail(ConfigError("--tasks/--limit", "give task names separated by commas and a limit >= 1"))
    from rewarm.evaluation_cli import evaluate_checkpoint

    try:
        results = evaluate_checkpoint(cfg, Path(args.checkpoint), tasks=tasks, limit=args.limit,
                                      revision=args.revision)
    except (ConfigError, ResumeError, DataError) as e:
        return _fail(e)
    print(json.dumps(results, indent=1))
    return 0


def export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rewarm export", description="Write a Hugging Face directory from a checkpoint.")
    p.add_argument("source", help="run directory (its newest valid checkpoint) or a checkpoint directory")
    p.add_argument("--out", required=True, help="output directory (save_pretrained + tokenizer)")
    args = p.parse_args(argv)
    from rewarm.export import export_checkpoint

    try:
        out = export_checkpoint(Path(args.source), Path(args.out))
    except (ConfigError, ResumeError) as e:
        return _fail(e)
    print(f"exported: {out}")
    return 0




def tokenize_main(argv: list[str]) -> int:
    p = _config_parser("tokenize", "Tokenize a configured text source once into GPT-NeoX / Megatron .bin + .idx.")
    p.add_argument("--source", required=True, help="name of a data.train or data.val text source")
    p.add_argument("--out", required=True, help="output path prefix: writes PREFIX.bin, PREFIX.idx, PREFIX.json")
    p.add_argument("--workers", type=int, default=2, help="batches of documents encoded at once (default 2)")
    args = p.parse_args(argv)
    cfg = load_or_report(args.config, args.overrides)
    if cfg is None:
        return EXIT_CONFIG
    from rewarm.data.megatron.cli import run_tokenize

    try:
        print(run_tokenize(cfg, args.source, args.out, args.workers))
    except (ConfigError, DataError) as e:
        return _fail(e)
    return 0
