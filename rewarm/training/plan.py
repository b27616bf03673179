"""The run plan ``rewarm check`` prints: batch layout, steps, tokens, the schedule's phases, data, resume.

Import-light (standard library, the config, the schedules and the model's config.json reader)."""

from __future__ import annotations

from rewarm.config import RunConfig, batch_plan


def model_vocab_eos(cfg: RunConfig) -> tuple[int | None, int | None]:
    """(vocab_size, eos_token_id) from a local model's config.json (None, None for a hub id), for the checks
    of pre-tokenized files."""
    from rewarm.model.load import read_model_config

    model_cfg = read_model_config(cfg.model.name_or_path, cfg.model.revision) or {}
    return model_cfg.get("vocab_size"), model_cfg.get("eos_token_id")


def format_plan(cfg: RunConfig) -> str:
    from rewarm.model.load import parameter_count_from_config, read_model_config
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
