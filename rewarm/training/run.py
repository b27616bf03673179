"""Builds the Trainer (strategy, loggers, callbacks) and runs one training job. The config stops here:
below ``run`` the pieces receive plain arguments."""

from __future__ import annotations

import json
import logging
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from rewarm.checkpoints.store import write_atomic
from rewarm.config import BatchPlan, RunConfig, batch_plan, to_dict, to_yaml
from rewarm.errors import key_prefix
from rewarm.evaluation.valsets import build_val_sets
from rewarm.logs import setup_logging

log = logging.getLogger(__name__)


def build_module(cfg: RunConfig, plan: BatchPlan, model: Any, tokenizer: Any, val_sets: list[Any]) -> Any:
    from rewarm.averaging.averager import build_averager
    from rewarm.data import build_train_loader, state_metrics
    from rewarm.schedules import build_scheduler
    from rewarm.training.module import OptimSettings, RewarmModule, StepSettings
    from rewarm.training.perf import flops_per_token

    c = model.config
    fpt = flops_per_token(c.num_hidden_layers, c.hidden_size, c.vocab_size, plan.seq_len,
                          getattr(c, "intermediate_size", None))
    steps = StepSettings(
        max_steps=plan.max_steps, grad_accum_steps=plan.grad_accum_steps, seq_len=plan.seq_len,
        tokens_per_step=plan.tokens_per_step,
        val_every_steps=cfg.trainer.val_every_steps, log_every_steps=cfg.trainer.log_every_steps,
        eval_batch_size=cfg.trainer.micro_batch_size, flops_per_token=fpt, peak_flops=_job_peak_flops(plan),
        on_nonfinite=cfg.trainer.on_nonfinite, max_skipped_steps=cfg.trainer.max_skipped_steps,
    )
    o = cfg.optimizer
    optim = OptimSettings(betas=(o.betas[0], o.betas[1]), eps=o.eps, weight_decay=o.weight_decay, fused=o.fused,
                          grad_clip=cfg.trainer.grad_clip)

    def loader_factory(rank: int, world_size: int) -> Any:
        return build_train_loader(cfg.data, tokenizer, micro_batch_size=plan.micro_batch_size, seed=cfg.run.seed,
                                  rank=rank, world_size=world_size, grad_accum_steps=plan.grad_accum_steps,
                                  vocab_size=model.get_input_embeddings().weight.shape[0])

    return RewarmModule(
        model, optim=optim, steps=steps,
        scheduler_factory=partial(build_scheduler, cfg=cfg.schedule, total_steps=plan.max_steps,
                                  tokens_per_step=plan.tokens_per_step),
        loader_factory=loader_factory, val_sets=val_sets, source_names=sorted(cfg.data.train),
        state_metrics=state_metrics, averager=build_averager(cfg.averaging, plan.tokens_per_step),
    )


def _job_peak_flops(plan: BatchPlan) -> float | None:
    import torch

    from rewarm.training.perf import peak_flops

    if not torch.cuda.is_available():
        return None
    peak = peak_flops(torch.cuda.get_device_name())
    return peak * plan.world_size if peak else None


def metric_columns(cfg: RunConfig, val_sets: list[Any]) -> list[str]:
    cols = ["train/loss", "optim/lr", "optim/grad_norm", "data/tokens_seen", "data/skipped_records",
            "train/skipped_steps"]
    for name in sorted(cfg.data.train):
        cols += [f"data/{name}/tokens", f"data/{name}/fraction", f"data/{name}/passes"]
    for vs in val_sets:
        cols += [f"val/{vs.name}/loss", f"val/{vs.name}/ppl"]
        cols += [f"val/{vs.name}/{sub}/loss" for sub in vs.rows.subset_names]
        if vs.subset_weights:
            cols.append(f"val/{vs.name}/loss_weighted")
        cols.append(f"forgetting/{vs.name}" if vs.role == "upstream" else f"adaptation/{vs.name}")
        if cfg.averaging.enabled:  # the EMA's validation (rewarm.averaging)
            cols += [f"val_avg/{vs.name}/loss", f"val_avg/{vs.name}/ppl"]
    return cols + ["perf/tokens_per_sec", "perf/mfu", "perf/peak_mem_gib", "perf/peak_rss_gib"]


def build_loggers(cfg: RunConfig, run_dir: Path, columns: list[str]) -> list[Any]:
    from rewarm.training.metrics import CsvRunLogger

    loggers: list[Any] = [CsvRunLogger(run_dir / "metrics.csv", columns)]
    w = cfg.logging.wandb
    if w.mode != "disabled":
        from rewarm.faults.wandb_guard import GuardedWandbLogger

        loggers.append(GuardedWandbLogger(
            name=w.name or cfg.run.name, save_dir=str(run_dir), project=w.project, entity=w.entity, group=w.group,
            tags=list(w.tags), mode=w.mode, id=wandb_run_id(run_dir), resume="allow", config=to_dict(cfg),
        ))
    return loggers


def wandb_run_id(run_dir: Path) -> str:
    """Stored in the run directory so a resumed or requeued run continues the same wandb run."""
    path = run_dir / "wandb_id"
    if path.is_file():
        return path.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def build_callbacks(progress: str) -> list[Any]:
    """A TQDM bar with tokens/s and ETA in a terminal, plain periodic lines elsewhere (SLURM logs)."""
    from rewarm.training.callbacks import ProgressLines, progress_bar

    if progress == "auto":
        progress = "bar" if sys.stderr.isatty() else "lines"
    return {"bar": [progress_bar()], "lines": [ProgressLines()], "off": []}[progress]


def build_trainer(cfg: RunConfig, plan: BatchPlan, loggers: list[Any], callbacks: list[Any], *,
                  reshard: bool = False) -> Any:
    """The Lightning Trainer. ``reshard``: the run resumes a checkpoint written by another number of ranks
    (DeepSpeed then loads it through its universal checkpoint)."""
    import lightning as L

    from rewarm.training.strategies import build_strategy, resolve_accelerator

    t = cfg.trainer
    progress_bar = any(type(c).__name__ == "StepBar" for c in callbacks)
    strategy = build_strategy(t, plan, reshard=reshard)  # run() has already refused a contradicting merge file
    return L.Trainer(
        accelerator=resolve_accelerator(t.accelerator), devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
        precision=t.precision, max_steps=plan.max_steps, max_epochs=1, accumulate_grad_batches=plan.grad_accum_steps,
        logger=loggers, callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
        log_every_n_steps=t.log_every_steps, deterministic=cfg.run.deterministic or None,
        default_root_dir=str(cfg.run_dir), plugins=_slurm_without_auto_requeue(),
    )


def _slurm_without_auto_requeue() -> list[Any]:
    """Under SLURM, Lightning's SLURM environment without its auto-requeue: Lightning's own SIGUSR1 handler would
    save a checkpoint of its own mid-step and requeue the job; rewarm's SignalWatcher does both at a step end."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def run(cfg: RunConfig, signals: Any = None, stop_at_step: int | None = None) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run directory. ``signals``: a SignalWatcher
    already installed by the caller (`rewarm train` installs one first thing, so a signal during start-up counts).
    ``stop_at_step``: stop after that optimizer step with a checkpoint and without summary.json (the run is
    unfinished; ``resume.mode=auto`` continues it); a run already at or past it does nothing."""
    from rewarm.checkpoints.store import SignalWatcher
    from rewarm.model.load import load_tokenizer
    from rewarm.tasks.build import build_task_callback
    from rewarm.training.callbacks import ReinstallSignals

    setup_logging(cfg.logging.level)
    plan = prepare_run(cfg)
    m, run_dir = cfg.model, cfg.run_dir
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.tokenizer, m.trust_remote_code)
    tasks = build_task_callback(cfg.tasks, tokenizer)  # before the model: unknown tasks, missing data refused
    model = build_model(cfg, tokenizer)
    val_sets = build_val_sets(cfg, tokenizer)
    module = build_module(cfg, plan, model, tokenizer, val_sets)
    task_cols = list(tasks.columns) if tasks else []
    if cfg.averaging.enabled:  # the same tasks on the EMA's weights (rewarm.averaging)
        task_cols += ["task_avg/" + c[len("task/"):] for c in task_cols if c.startswith("task/")]
    forecast = build_forecast_callback(cfg, val_sets)  # a bad FIT.json is refused before training
    columns = metric_columns(cfg, val_sets) + task_cols + [c for f in forecast for c in f.columns]
    loggers = build_loggers(cfg, run_dir, columns)
    signals = signals or SignalWatcher()
    checkpointer = build_checkpointer(cfg, module, tokenizer, signals, stop_at_step)
    callbacks = [*build_callbacks(cfg.logging.progress), ReinstallSignals(signals), *([tasks] if tasks else []),
                 *forecast]
    ckpt, point = resume_point(cfg, plan, checkpointer)
    trainer = build_trainer(cfg, plan, loggers, callbacks, reshard=point.world_changed(run_layout(cfg, plan)))
    if point.finished and (run_dir / "summary.json").is_file():
        log.info("run %s already finished at step %d (%s): nothing to do", cfg.run.name, point.step, ckpt)
        return run_dir
    if stopped_before(point.step, stop_at_step, plan.max_steps):
        log.info("run %s is at step %d, at or past its stop step %s: nothing to do", cfg.run.name, point.step,
                 stop_at_step)
        return run_dir
    start_run(cfg, plan, trainer, checkpointer, loggers, point, resuming=ckpt is not None)
    fit(trainer, module, ckpt, signals, loggers)
    if stopped_before(trainer.global_step, stop_at_step, plan.max_steps) and signals.received is None:
        log.info("run %s stopped at step %d of %d (stop step): checkpoint saved; resume.mode=auto continues it",
                 cfg.run.name, trainer.global_step, plan.max_steps)
        return run_dir
    finish_run(run_dir, trainer, module, tokenizer, checkpointer, signals)
    return run_dir


def stopped_before(step: int | None, stop_at_step: int | None, max_steps: int) -> bool:
    """Whether a run at ``step`` has reached a stop step that lies before its end."""
    return stop_at_step is not None and step is not None and step >= stop_at_step and stop_at_step < max_steps


def build_forecast_callback(cfg: RunConfig, val_sets: list[Any]) -> list[Any]:
    """With ``forecast.fit`` set: the callback that logs ``forecast/<set>/final_loss`` at every validation."""
    if not cfg.forecast.fit:
        return []
    from rewarm.training.forecast import ForecastCallback

    return [ForecastCallback.from_config(cfg, [vs.name for vs in val_sets])]


def prepare_run(cfg: RunConfig) -> BatchPlan:
    """Everything checked before anything is loaded (data paths, a DeepSpeed merge file), the run directory made,
    the RNGs seeded; returns the run's plan."""
    import lightning as L

    from rewarm.data import check_paths
    from rewarm.data.sources import reset_warnings

    reset_warnings()  # bad records: one warning per file per run, also when several runs share a process
    plan = batch_plan(cfg)
    with key_prefix("data"):
        check_paths(cfg.data)
    if cfg.trainer.strategy == "deepspeed":  # refuse a contradicting merge file before loading anything
        from rewarm.training.strategies import full_deepspeed_config

        with key_prefix("trainer"):
            full_deepspeed_config(cfg.trainer, plan)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false" if cfg.data.num_workers > 0 else "true")
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    return plan


def build_model(cfg: RunConfig, tokenizer: Any) -> Any:
    """The model of ``cfg.model`` (pretrained or from scratch), checked against the tokenizer, with activation
    checkpointing and torch.compile as configured."""
    from rewarm.model.load import check_vocab, choose_attn_implementation, load_model

    m = cfg.model
    attn = choose_attn_implementation(m.attn_implementation, _device_type(cfg))
    log.info("attention implementation: %s (requested %s)", attn, m.attn_implementation)
    model = load_model(m.name_or_path, m.revision, init=m.init, dtype=m.dtype, attn_implementation=attn,
                       trust_remote_code=m.trust_remote_code, seed=cfg.run.seed)
    check_vocab(model, tokenizer)
    if m.activation_checkpointing:
        model.gradient_checkpointing_enable()
    if m.compile:
        model.compile()  # in place: state_dict keys (checkpoints, export) are unchanged
    if cfg.data.document_mask:
        log.warning("data.document_mask=true: attention and loss stay inside documents — a deviation from how "
                    "Pythia was trained (packed rows attended across document boundaries)")
    return model


def build_checkpointer(cfg: RunConfig, module: Any, tokenizer: Any, signals: Any, stop_at_step: int | None = None,
                       ) -> Any:
    """The run's Checkpointer, and the module's step-end hook that saves (periodic, preemption, stop step) and
    exports."""
    from rewarm.checkpoints.store import Checkpointer

    run_dir, c = cfg.run_dir, cfg.checkpoint
    checkpointer = Checkpointer(
        run_dir / "checkpoints", every_steps=c.every_steps, every_minutes=c.every_minutes,
        keep_last=c.keep_last, keep_every=c.keep_every,
        info=lambda: {"tokens_seen": module.tokens_seen, "wandb_id": _read(run_dir / "wandb_id"),
                      **(module.averager.manifest() if module.averager is not None else {})},
    )
    module.after_step = partial(_after_step, module=module, checkpointer=checkpointer, signals=signals,
                                hf_every=c.hf_every_steps, tokenizer=tokenizer, run_dir=run_dir, stop_at=stop_at_step)
    return checkpointer


def resume_point(cfg: RunConfig, plan: BatchPlan, checkpointer: Any) -> tuple[Path | None, Any]:
    """The checkpoint to resume from (None: a fresh start) and what resuming from it means (``ResumePoint``)."""
    from rewarm.checkpoints.resume import prepare_resume
    from rewarm.checkpoints.store import resolve_resume

    ckpt = resolve_resume(cfg.resume.mode, cfg.run_dir)
    point = prepare_resume(ckpt, to_dict(cfg), checkpointer, max_steps=plan.max_steps,
                           allow_config_change=cfg.resume.allow_config_change, layout=run_layout(cfg, plan))
    return ckpt, point


def run_layout(cfg: RunConfig, plan: BatchPlan) -> Any:
    """The run's ``rewarm.checkpoints.resume.Layout`` (recorded in every checkpoint's manifest)."""
    from rewarm.checkpoints.resume import Layout

    return Layout(plan.world_size, plan.micro_batch_size, plan.grad_accum_steps, getattr(cfg.data, "streams", None))


def start_run(cfg: RunConfig, plan: BatchPlan, trainer: Any, checkpointer: Any, loggers: list[Any], point: Any, *,
              resuming: bool) -> None:
    """Rank 0: set newer checkpoints aside, write config.yaml, start metrics.csv at the resume point, say so."""
    if not trainer.is_global_zero:
        return
    checkpointer.set_aside(point.step)  # newer checkpoints are another history (skipped invalid, or a rewind)
    write_atomic(cfg.run_dir / "config.yaml", to_yaml(cfg))  # a full disk must not leave half a config
    loggers[0].start(point.first_new_row)
    log.info("run %s: %d steps x %d tokens/step = %d tokens; %s", cfg.run.name, plan.max_steps,
             plan.tokens_per_step, plan.total_tokens, f"resuming at step {point.step}" if resuming else "fresh")
    if point.elastic:
        log.info("%s", point.elastic)


def fit(trainer: Any, module: Any, ckpt: Path | None, signals: Any, loggers: list[Any]) -> None:
    """``trainer.fit`` with the signal handlers installed; the loggers (and wandb) are closed whatever happens."""
    from rewarm.faults.wandb_guard import GuardedWandbLogger, finish_wandb

    signals.install(trainer)
    try:
        _fit(trainer, module, ckpt)
    finally:
        if signals.received is None:  # preempted: keep the flag-only handlers; _exit_preempted ignores the signals
            signals.uninstall()
        for lg in loggers:
            lg.finalize("success")
        if any(isinstance(lg, GuardedWandbLogger) for lg in loggers):
            finish_wandb()  # so the next in-process run (sweeps, the demo) starts its own


def finish_run(run_dir: Path, trainer: Any, module: Any, tokenizer: Any, checkpointer: Any, signals: Any) -> None:
    """Preempted: exit (requeued under SLURM after SIGUSR1). Else the final checkpoint, the Hugging Face export and,
    last, summary.json (its presence marks a finished run)."""
    if signals.received is not None:
        import signal

        _exit_preempted(run_dir, requeue=signals.received == signal.SIGUSR1)
    checkpointer.save(trainer, reason="end")
    from rewarm.checkpoints.export import export_trained  # collective: gathers ZeRO-3 / FSDP2 shards, rank 0 writes

    export_trained(trainer, module.model, tokenizer, run_dir / "hf")
    if trainer.is_global_zero:
        write_summary(run_dir, module, trainer.global_step)


def _fit(trainer: Any, module: Any, ckpt: Path | None) -> None:
    """``trainer.fit``, resuming from ``ckpt``'s state weights-only (every strategy: see rewarm.faults.safe_load)."""
    if ckpt is None:
        trainer.fit(module)
        return
    from rewarm.faults.safe_load import check_dcp_metadata, is_dcp, weights_only_loads

    state = ckpt / "state.ckpt"
    if is_dcp(state):
        check_dcp_metadata(state)
    with weights_only_loads(state):
        trainer.fit(module, ckpt_path=str(state), weights_only=True)


def _after_step(trainer: Any, steps_done: int, *, module: Any, checkpointer: Any, signals: Any, hf_every: int,
                tokenizer: Any, run_dir: Path, stop_at: int | None = None) -> None:
    import signal

    import torch

    due = steps_done < trainer.max_steps and checkpointer.due(steps_done)
    stop, usr1 = signals.received is not None, signals.received == signal.SIGUSR1
    if trainer.world_size > 1:  # every rank must agree on both (one clock per rank), or a collective save hangs:
        flags = module._all_reduce(torch.tensor([float(due), float(stop), float(usr1)], device=module.device))
        due, stop, usr1 = (f > 0 for f in flags.tolist())  # one all-reduce, one host sync per step
    if due:
        checkpointer.save(trainer, reason="periodic")
    if hf_every and steps_done % hf_every == 0:  # collective: sharded weights are gathered, rank 0 writes
        from rewarm.checkpoints.export import export_trained

        export_trained(trainer, module.model, tokenizer, run_dir / "hf" / f"step{steps_done}")
    if trainer.world_size == 1:  # a signal that arrived during the save above is seen now (ranks: next step)
        stop, usr1 = signals.received is not None, signals.received == signal.SIGUSR1
    if stop:  # SIGUSR1 on any rank: the job requeues itself (see _exit_preempted)
        signals.received = signal.SIGUSR1 if usr1 else (signals.received or signal.SIGTERM)
        checkpointer.save(trainer, reason="preemption")  # a no-op when the periodic save just wrote this step
        trainer.should_stop = True  # then run() exits with PREEMPTED_EXIT_CODE (SLURM: requeue)
    elif stop_at is not None and stop_at <= steps_done < trainer.max_steps:  # same step on every rank
        checkpointer.save(trainer, reason="stop step")
        trainer.should_stop = True  # the last evaluation (on_train_end) is at this step


def _exit_preempted(run_dir: Path, *, requeue: bool) -> None:
    """Exit with PREEMPTED_EXIT_CODE; under SLURM after SIGUSR1 (the time-limit warning, or a preemption sent as
    USR1), requeue the job first (the next start resumes with resume=auto). SIGTERM comes from SLURM itself (a
    cancel, a preemption, a requeue): SLURM decides whether the job comes back; requeueing it here would bring a
    cancelled job back to life (`scontrol requeue` accepts a job that `scancel` is ending)."""
    import signal
    import subprocess

    from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE, SignalWatcher

    # The checkpoint is saved. SLURM signals every task and a rank may have stopped because another got it first:
    # its own SIGTERM, arriving late (even during interpreter shutdown), must not kill it (exit -15, no requeue).
    for sig in SignalWatcher.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    job = os.environ.get("SLURM_JOB_ID")
    if requeue and job and os.environ.get("SLURM_PROCID", "0") == "0":
        log.warning("preempted: requeueing SLURM job %s", job)
        res = subprocess.run(["scontrol", "requeue", job], check=False, capture_output=True, text=True)
        if res.returncode != 0:  # e.g. submitted with --no-requeue: resubmit it (resume=auto)
            log.warning("scontrol requeue %s failed: %s", job, (res.stdout + res.stderr).strip())
    log.warning("preempted: checkpoint saved in %s/checkpoints; exiting with code %d", run_dir, PREEMPTED_EXIT_CODE)
    raise SystemExit(PREEMPTED_EXIT_CODE)


def write_summary(run_dir: Path, module: Any, step: int) -> None:
    """Written last: its presence marks a finished run (sweeps skip those)."""
    summary = {"finished": True, "step": step, "tokens": module.tokens_seen,
               "final": module.final_metrics}
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=1, sort_keys=True))


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def _device_type(cfg: RunConfig) -> str:
    import torch

    if cfg.trainer.accelerator == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
