"""One task evaluation of a model in memory, as ``lm_eval.simple_evaluate`` would run it, without side effects.

The tasks are loaded once (``TaskSuite``) and evaluated with ``lm_eval.evaluator.evaluate`` on a
``RankShardedLM``. Per evaluation, as ``simple_evaluate``: the few-shot sampler is reseeded (1234) and the global
seeds are set (random 0, numpy 1234, torch 1234). Around it, the caller's RNG states (Python, numpy, torch CPU and
CUDA) are saved and restored and the model's train/eval mode is put back: training continues exactly as it would
have without the evaluation."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rewarm.tasks.bars import no_lm_eval_bars
from rewarm.tasks.harness import FEWSHOT_SEED, TaskSuite
from rewarm.tasks.results import metric_columns, task_values


@dataclass(frozen=True)
class TaskSettings:
    limit: int | None = None
    batch_size: int = 16
    bootstrap_iters: int = 1000
    every_steps: int = 0


@dataclass
class TaskOutcome:
    values: dict[str, dict[str, float | None]]  # {task or group: {metric: value}}
    seconds: float
    requests: dict[str, int] = field(default_factory=dict)  # per task, all ranks together
    scored_here: int = 0  # requests this rank scored (all of them on one rank)
    documents: dict[str, int] = field(default_factory=dict)


class TaskEvaluator:
    def __init__(self, suite: TaskSuite, settings: TaskSettings) -> None:
        self.suite = suite
        self.settings = settings
        self.columns = metric_columns(suite, settings.bootstrap_iters)
        self._lm: Any = None

    def adapter(self, model: Any, tokenizer: Any, rank: int = 0, world_size: int = 1) -> Any:
        """The lm-eval model wrapper, made once per model object (HFLM's setup is not free)."""
        if self._lm is None or self._lm._model is not model:
            from rewarm.tasks.adapter import RankShardedLM

            self._lm = RankShardedLM(model, tokenizer, batch_size=self.settings.batch_size, rank=rank,
                                     world_size=world_size)
        return self._lm

    def evaluate(self, model: Any, tokenizer: Any, rank: int = 0, world_size: int = 1) -> TaskOutcome:
        """Every rank calls it (the model calls are shared out); every rank gets the same values."""
        from lm_eval.evaluator import evaluate

        t0 = time.perf_counter()
        was_training = model.training  # before the adapter: HFLM's constructor calls model.eval()
        lm = self.adapter(model, tokenizer, rank, world_size)
        lm.scored = 0
        # bootstrap: no process pool forked from a trainer; off a terminal, no lm-eval bars
        with preserved_rng(), _env(DISABLE_MULTIPROC="1"), no_lm_eval_bars():
            model.eval()
            try:
                _seed_like_simple_evaluate(self.suite)
                results = evaluate(lm=lm, task_dict=self.suite.task_dict, limit=self.settings.limit,
                                   bootstrap_iters=self.settings.bootstrap_iters, log_samples=False)
            finally:
                model.train(was_training)
        requests = {name: len(task.instances) for name, task in self.suite.tasks.items()}
        documents = {name: int(n["effective"]) for name, n in results.get("n-samples", {}).items()}
        return TaskOutcome(task_values(results), time.perf_counter() - t0, requests=requests, documents=documents,
                           scored_here=lm.scored)


def _seed_like_simple_evaluate(suite: TaskSuite) -> None:
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(FEWSHOT_SEED)
    torch.manual_seed(FEWSHOT_SEED)
    for task in suite.tasks.values():
        task.set_fewshot_seed(seed=FEWSHOT_SEED)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Python, numpy, torch CPU and CUDA RNG states are the same after the block as before it."""
    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
