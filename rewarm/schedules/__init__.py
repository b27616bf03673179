"""Learning-rate schedules: pure functions of the optimizer step, composed per family from small primitives.

Public API (no torch import at module import; ``build_scheduler`` imports it lazily):

- ``validate_schedule(cfg, total_steps, tokens_per_step)``: run-dependent checks, raises ConfigError (``config``).
- ``plan_phases(cfg, total_steps, tokens_per_step) -> list[Phase]``: the phases, for ``rewarm check`` / ``schedule``.
- ``build_lr_fn(cfg, total_steps, tokens_per_step) -> (step -> lr)``: absolute LR applied at optimizer step t.
- ``build_scheduler(optimizer, cfg, total_steps, tokens_per_step) -> LambdaLR``: the one torch adapter.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rewarm.schedules.config import FAMILY_NAMES, ScheduleConfig, validate_schedule
from rewarm.schedules.families import FAMILIES, plan_phases
from rewarm.schedules.phases import LrFn, Phase, evaluate

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "LrFn",
    "Phase",
    "ScheduleConfig",
    "build_lr_fn",
    "build_scheduler",
    "plan_phases",
    "validate_schedule",
]

log = logging.getLogger(__name__)


def build_lr_fn(cfg: ScheduleConfig, total_steps: int, tokens_per_step: int) -> LrFn:
    """Absolute LR applied at optimizer step ``t`` (0-based). Pure; past the run it holds the last phase's end LR."""
    phases = plan_phases(cfg, total_steps, tokens_per_step)
    starts = [p.start_step for p in phases]

    # A closure, not an object: LambdaLR.state_dict() then stores nothing of it (checkpoints stay plain).
    def lr_at(t: int) -> float:
        return evaluate(phases, starts, t)

    return lr_at


def build_scheduler(optimizer: Any, cfg: ScheduleConfig, total_steps: int, tokens_per_step: int) -> LambdaLR:
    """LambdaLR whose every param group has ``lr == lr_fn(t)`` exactly while optimizer step t runs.

    Each group's base LR is set to 1.0, so LambdaLR's ``base_lr * lr_fn(t)`` is ``lr_fn(t)`` bit for bit. Call
    ``scheduler.step()`` once after each optimizer step. Weight decay and other group options are untouched.
    """
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    lr_fn = build_lr_fn(cfg, total_steps, tokens_per_step)
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(1.0)  # a tensor LR (capturable / fused optimizers) keeps its identity
        else:
            group["lr"] = 1.0
        group["initial_lr"] = 1.0  # LambdaLR only setdefault()s it: a stale value would scale the schedule
    log.debug("schedule %s over %d steps", cfg.name, total_steps)
    return LambdaLR(optimizer, lr_fn)


def apply_scheduled_lr(scheduler: LambdaLR) -> None:
    """Set every param group's LR to the scheduler's value at its current step (``last_epoch``), as
    ``scheduler.step()`` would: after a resume the optimizer holds the LR saved with it."""
    import torch

    groups = scheduler.optimizer.param_groups
    for group, base, fn in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        lr = base * fn(scheduler.last_epoch)
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
