"""Lightning callbacks: progress lines for non-terminals, preemption signals."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class ProgressLines(L.Callback):
    """Plain progress lines (SLURM logs, CI): step, loss, tokens/s, ETA, at most every ``every_seconds``."""

    def __init__(self, every_seconds: float = 30.0) -> None:
        self.every_seconds = every_seconds
        self._t0 = 0.0
        self._last = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._last = time.perf_counter()
        self._step0 = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        step, total = trainer.global_step, trainer.max_steps
        if trainer.global_rank != 0 or (now - self._last < self.every_seconds and step != total):
            return
        self._last = now
        done = step - self._step0
        rate = done / (now - self._t0) if now > self._t0 else 0.0
        eta = (total - step) / rate if rate > 0 else float("nan")
        tps = rate * pl_module.steps.tokens_per_step
        log.info("step %d/%d  tokens %d  %.0f tok/s  ETA %s", step, total, pl_module.tokens_seen, tps, _hms(eta))


def _hms(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_bar() -> L.Callback:
    """Lightning's TQDM bar over optimizer steps (total known, so it shows an ETA), with tokens/s."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    class StepBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.initial = trainer.global_step
            self.train_progress_bar.set_description("train")

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
            if pl_module._micro >= pl_module.steps.grad_accum_steps:  # this batch completed an optimizer step
                self.train_progress_bar.n = trainer.global_step
                self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

        def get_metrics(self, trainer: L.Trainer, pl_module: Any) -> dict[str, Any]:
            out: dict[str, Any] = {"tokens": pl_module.tokens_seen}
            tps = getattr(pl_module, "last_tokens_per_sec", None)
            if tps:
                out["tok/s"] = f"{tps:,.0f}"
            return out

    return StepBar()


class ReinstallSignals(L.Callback):
    """Lightning registers its own SIGTERM handler when fit starts; in a multi-process run it calls a collective
    inside the handler, which can deadlock against a rank in DDP's all-reduce. Put ours back (a flag only: the
    step boundary decides, all ranks together)."""

    def __init__(self, watcher: Any) -> None:
        self.watcher = watcher

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import signal

        for sig in self.watcher.SIGNALS:
            signal.signal(sig, self.watcher._handler)
