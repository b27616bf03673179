"""Non-finite training steps (``trainer.on_nonfinite``): decided before the optimizer update, on the global
gradient norm, so every rank takes the same decision without a collective of its own.

A rank whose loss is non-finite turns its gradients into NaN (``poison_nonfinite``, on the device); the
gradient all-reduce (DDP) or the DTensor norm (FSDP2) then carries that to every rank's global norm. The only
host sync is reading one flag per optimizer step (``NonfiniteGuard.check``). DeepSpeed computes the norm inside
its engine step: there the run can only stop, after the step and before anything is saved.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from rewarm.errors import NonFiniteError

log = logging.getLogger(__name__)


def poison_nonfinite(loss: torch.Tensor) -> torch.Tensor:
    """``loss`` itself when finite; else a loss whose gradients are all NaN (no host sync)."""
    return loss * torch.where(torch.isfinite(loss), 1.0, math.nan)


def is_finite(norm: Any) -> bool:
    """One host sync for a device tensor."""
    return bool(torch.isfinite(torch.as_tensor(norm)))


class NonfiniteGuard:
    """``mode``: stop | skip; counts skipped steps (all, and consecutive) and stops after ``max_skipped``
    consecutive ones. Its counters are kept in checkpoints (``state_dict``)."""

    def __init__(self, mode: str, max_skipped: int) -> None:
        self.mode, self.max_skipped = mode, max_skipped
        self.skipped_steps = 0
        self.consecutive = 0

    def finite(self) -> bool:
        """A step with a finite norm: it ends a run of skipped steps. Returns True (apply the update)."""
        self.consecutive = 0
        return True

    def check(self, norm: Any, *, step: int, lr: float | None, loss: Any, sources: dict[str, int]) -> bool:
        """True: apply this step's update. False (mode skip): drop it. Raises NonFiniteError to stop."""
        if is_finite(norm):
            return self.finite()
        what = describe(step, lr, loss, norm, sources)
        if self.mode == "stop":
            raise NonFiniteError(
                f"{what}. The run stops here and saves nothing of this state; its newest checkpoint is kept. "
                "Continue from it with a lower LR: rewarm train CONFIG resume=auto schedule.max_lr=<lower> "
                "resume.allow_config_change=true (or drop such steps with trainer.on_nonfinite=skip)")
        self.skipped_steps += 1
        self.consecutive += 1
        if self.consecutive >= self.max_skipped:
            raise NonFiniteError(
                f"{what}: {self.consecutive} consecutive steps skipped (trainer.max_skipped_steps="
                f"{self.max_skipped}); the run stops. Resume from the newest checkpoint with a lower LR "
                "(resume=auto schedule.max_lr=<lower> resume.allow_config_change=true)")
        log.warning("%s: update skipped (trainer.on_nonfinite=skip; %d skipped so far)", what, self.skipped_steps)
        return False

    def state_dict(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int] | None) -> None:
        state = state or {}
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive = int(state.get("consecutive", 0))


def describe(step: int, lr: float | None, loss: Any, norm: Any, sources: dict[str, int]) -> str:
    lr_text = f"{lr:.4g}" if lr is not None else "?"
    rows = ", ".join(f"{name}: {n} rows" for name, n in sources.items() if n) or "none recorded"
    return (f"non-finite loss or gradient at step {step} (LR {lr_text}, loss {float(loss):.4g} on this rank, "
            f"global gradient norm {float(norm):.4g}; this rank's batch: {rows})")
