"""What the law reads of a run config: the LR of every step (through ``rewarm.schedules``, exactly as training
applies it), the validation steps, the base's own pre-training LRs (``model.pretraining``), the replay fraction, and
the identities a fit is keyed by (base model, tokenizer, validation sets)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from rewarm import config as rc
from rewarm.model.config import PYTHIA_MAX_LR, PYTHIA_STEPS, pythia_size, revision_step
from rewarm.schedules import build_lr_fn
from rewarm.schedules.section import ScheduleConfig


@dataclass(frozen=True)
class RunSchedule:
    """A run's raw (unscaled) LRs, validation steps and start, as the law needs them."""

    lrs: np.ndarray
    val_steps: list[int]
    pre_lrs: np.ndarray
    base: str
    replay: float


def run_lrs(cfg: rc.RunConfig) -> np.ndarray:
    """The LR applied at every optimizer step 0..max_steps-1 of the run (``rewarm.schedules.build_lr_fn``)."""
    plan = rc.batch_plan(cfg)
    return _lrs(_schedule_key(cfg.schedule), plan.max_steps, plan.tokens_per_step)


def _schedule_key(s: ScheduleConfig) -> tuple:
    return tuple(sorted(vars(s).items()))


@functools.lru_cache(maxsize=64)
def _lrs(key: tuple, steps: int, tokens_per_step: int) -> np.ndarray:
    fn = build_lr_fn(ScheduleConfig(**dict(key)), steps, tokens_per_step)
    out = np.fromiter((fn(t) for t in range(steps)), dtype=np.float64, count=steps)
    out.flags.writeable = False
    return out


def val_steps(cfg: rc.RunConfig) -> list[int]:
    """The steps a run validates at: 0, every ``trainer.val_every_steps``, and the last."""
    total, every = rc.batch_plan(cfg).max_steps, cfg.trainer.val_every_steps
    steps = list(range(0, total, every)) if every > 0 else [0]
    return [*steps, total] if steps[-1] != total else steps


def pretraining_lrs(cfg: rc.RunConfig) -> np.ndarray | None:
    """The base's own LRs up to the loaded checkpoint, from ``model.pretraining``; None where it is not given."""
    m = cfg.model
    p = m.pretraining
    if not p.given:
        return None
    if p.preset == "pythia":
        size = p.size or pythia_size(m.name_or_path) or ""
        peak = PYTHIA_MAX_LR[size]
        sched = ScheduleConfig(name="neox_cosine", max_lr=peak, min_lr=0.1 * peak, warmup_steps=PYTHIA_STEPS // 100,
                               decay_steps=PYTHIA_STEPS)
        total = PYTHIA_STEPS
    else:
        assert p.schedule is not None and p.max_lr is not None and p.total_steps is not None
        min_lr = p.min_lr if p.min_lr is not None else 0.1 * p.max_lr
        sched = ScheduleConfig(name=p.schedule, max_lr=p.max_lr, min_lr=min_lr, warmup_steps=p.warmup_steps)
        total = p.total_steps
    done = p.steps_done if p.steps_done is not None else revision_step(m.revision)
    done = total if done is None else min(done, total)
    sched.validate()
    return _lrs(_schedule_key(sched), total, 1)[:done]


def replay_fraction(cfg: rc.RunConfig) -> float:
    """Share of the training weight on sources that read an upstream validation set's data (same preset and
    root, paths or hf_dataset). A weight schedule counts by the mean of its knots."""
    upstream = {_data_id(v) for v in cfg.data.val.values() if v.role == "upstream"}
    total = replay = 0.0
    for src in cfg.data.train.values():
        w = float(np.mean([k.weight for k in src.weight_schedule])) if src.weight_schedule else src.weight
        total += w
        replay += w if _data_id(src) in upstream else 0.0
    return replay / total if total > 0 else 0.0


def _data_id(src: object) -> tuple:
    keys = ("preset", "root", "paths", "hf_dataset", "hf_name", "format")
    return tuple(str(getattr(src, k, None)) for k in keys)


def run_schedule(cfg: rc.RunConfig) -> RunSchedule:
    pre = pretraining_lrs(cfg)
    if pre is not None:
        base = "known"
    else:
        base = "scratch" if cfg.model.init == "scratch" else "annealed"
    return RunSchedule(run_lrs(cfg), val_steps(cfg), pre if pre is not None else np.zeros(0), base,
                       replay_fraction(cfg))


def base_id(cfg: rc.RunConfig) -> str:
    """The base a run starts from: the model (with its revision unless ``model.pretraining`` places it), or
    ``scratch:<architecture>``."""
    m = cfg.model
    if m.init == "scratch" and not m.pretraining.given:
        return f"scratch:{m.name_or_path}"
    if m.pretraining.given:
        return m.name_or_path
    return m.name_or_path + (f"@{m.revision}" if m.revision else "")


def tokenizer_id(cfg: rc.RunConfig) -> str:
    return cfg.model.tokenizer or cfg.model.name_or_path


def val_ids(cfg: rc.RunConfig) -> dict[str, str]:
    """Each validation set's name -> its role and data (what makes two runs' sets the same set)."""
    return {name: f"{v.role} {'/'.join(_data_id(v))} {v.split} {v.max_tokens}" for name, v in cfg.data.val.items()}


def val_roles(cfg: rc.RunConfig) -> dict[str, str]:
    return {name: v.role for name, v in cfg.data.val.items()}
