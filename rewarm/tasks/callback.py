"""The in-loop hook: task evaluation at step 0, every ``tasks.every_steps`` and at the end of training.

Its values join the module's metrics row of that step (``task/<task>/<metric>``); its time is kept out of
``perf/tokens_per_sec``. The step last evaluated is saved with the checkpoint, so a resumed run neither repeats
nor skips an evaluation."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from rewarm.tasks.evaluator import TaskEvaluator
from rewarm.tasks.results import row_metrics

log = logging.getLogger(__name__)


class TaskEvalCallback(L.Callback):
    def __init__(self, evaluator: TaskEvaluator, tokenizer: Any) -> None:
        self.evaluator = evaluator
        self.tokenizer = tokenizer
        self.evaluated_step = -1
        self._first = True

    @property
    def columns(self) -> list[str]:
        return self.evaluator.columns

    def due(self, step: int) -> bool:
        every = self.evaluator.settings.every_steps
        return step != self.evaluated_step and (step == 0 or (every > 0 and step % every == 0))

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if pl_module._micro == 0 and self.due(trainer.global_step):  # first micro-batch of an optimizer step
            self.run(trainer, pl_module, trainer.global_step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_step != self.evaluated_step:
            self.run(trainer, pl_module, trainer.global_step)

    def run(self, trainer: Any, pl_module: Any, step: int) -> None:
        out = self.evaluator.evaluate(pl_module.model, self.tokenizer, rank=trainer.global_rank,
                                      world_size=trainer.world_size)
        pl_module.add_eval_metrics(row_metrics(out.values), out.seconds)
        self._run_averaged(trainer, pl_module)
        self.evaluated_step = step
        if self._first and trainer.is_global_zero:
            for name, n in out.requests.items():
                log.info("task %s: %d documents, %d requests", name, out.documents.get(name, 0), n)
            log.info("task evaluation at step %d took %.1f s (%d tasks, %d requests; rank 0 of %d scored %d)", step,
                     out.seconds, len(out.requests), sum(out.requests.values()), trainer.world_size, out.scored_here)
        self._first = False

    def _run_averaged(self, trainer: Any, pl_module: Any) -> None:
        """The same tasks on the weights' EMA (``rewarm.averaging``, when on and started): ``task_avg/...``."""
        averager = getattr(pl_module, "averager", None)
        if averager is None or not averager.ready:
            return
        out = averager.evaluate(trainer, pl_module.model, lambda: self.evaluator.evaluate(
            pl_module.model, self.tokenizer, rank=trainer.global_rank, world_size=trainer.world_size))
        averaged = {"task_avg/" + k[len("task/"):]: v for k, v in row_metrics(out.values).items()}
        pl_module.add_eval_metrics(averaged, out.seconds)

    def state_dict(self) -> dict[str, Any]:
        return {"evaluated_step": self.evaluated_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.evaluated_step = int(state_dict.get("evaluated_step", -1))
