"""wandb beside metrics.csv, never in the run's way.

SLURM signals every process of a job (``scancel``, a SIGTERM preemption, ``scontrol requeue``), wandb's service
process (``wandb-core``) among them, and it exits on SIGTERM. Every wandb call after that raises
(``ConnectionResetError: Connection lost``); raised inside the training loop, it ended the run before the
checkpoint that SIGTERM asks for. Here the first failing wandb call is warned about, once, and wandb is off for
the rest of the run: metrics.csv keeps every row, the checkpoint is written, and the restart continues the same
wandb run (``wandb_id``). Starting wandb (``wandb.init``: a bad entity, no network in online mode) still fails
the run at its first row, as before: only a wandb that has worked and then broke is set aside.
"""

from __future__ import annotations

import logging
import sys
from argparse import Namespace
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class GuardedWandbLogger(WandbLogger):
    """Lightning's WandbLogger whose calls, once its run has started, cannot end the training (see module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning passes anonymous=None, which wandb (0.31)
            self._wandb_init.pop("anonymous", None)  # answers with a deprecation warning in every run's log
        self.broken: str | None = None
        """Why wandb was set aside (``"ConnectionResetError: Connection lost"``); None while it works."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._guarded(super().log_metrics, metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self._guarded(super().log_hyperparams, params, *args, **kwargs)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:  # never start a wandb run only to end it (a run that failed early)
            self._guarded(super().finalize, status)

    def _guarded(self, call: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        if self.broken is not None:
            return
        _ = self.experiment  # starts the run: a failure here is the user's to see, and ends the run
        try:
            call(*args, **kwargs)
        except Exception as e:  # any failure of wandb: the run itself is fine
            self.broken = f"{type(e).__name__}: {e}"
            log.warning("wandb stopped working (%s); its service process may have been killed (SLURM signals "
                        "every process of a job). The run goes on without wandb: metrics.csv keeps every row, "
                        "and a resumed run continues the same wandb run", self.broken)
            finish_wandb()


def finish_wandb() -> None:
    """End this process's wandb run, so that the next run in the process (a sweep, the demo) starts its own. A
    wandb whose service is gone is torn down without raising: its error is a warning, the run's result stands."""
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    try:
        if getattr(wandb, "run", None) is not None:
            wandb.finish()
    except Exception as e:
        log.warning("wandb could not finish its run (%s: %s); metrics.csv holds every row", type(e).__name__, e)
        try:
            wandb.teardown()  # drops the broken service connection (and its exit hook): a next run starts afresh
        except Exception:  # it fails the same way: there is nothing more to close
            pass
        _forget_run(wandb)


def _forget_run(wandb: Any) -> None:
    """``wandb.run = None`` (and the other module globals a run sets), as a finish that succeeds leaves them: else
    the next WandbLogger in this process would log into the broken run."""
    try:
        from wandb.sdk.lib.module import unset_globals
    except ImportError:
        wandb.run = None
    else:
        unset_globals()
