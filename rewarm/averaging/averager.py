"""The in-loop averager: updates the EMA after optimizer steps, evaluates the averaged weights, saves and restores
the EMA with the checkpoints.

The LightningModule calls it with plain objects (the trainer, the Hugging Face model, the step). The EMA is bound
to the strategy lazily, at its first use after the strategy's setup (``rewarm.averaging.sources``). The EMA used by
the validation at step s is the one a checkpoint at step s holds: the update of step s runs before that step's
checkpoint and before the evaluation that follows it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from rewarm.averaging.ema import init_average, update_average
from rewarm.averaging.sources import build_source
from rewarm.averaging.state import FORMAT, STATE, fill_from, shard_file
from rewarm.errors import ResumeError

log = logging.getLogger(__name__)
T = TypeVar("T")


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Python's, numpy's and torch's (CPU and CUDA) RNG states are as before when the block ends."""
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class Averager:
    """An EMA with decay ``decay`` updated every ``every_steps`` steps from ``start_step`` (the first update sets
    avg = weights); kept on ``device`` (same | cpu)."""

    def __init__(self, *, decay: float, every_steps: int, start_step: int, device: str) -> None:
        self.decay, self.every_steps, self.start_step, self.device = decay, every_steps, start_step, device
        self.source: Any = None
        self.avg: list[torch.Tensor] = []
        self.updates = 0
        self.last_step = -1
        self.rank, self.world_size = 0, 1
        self._pending: dict[str, Any] | None = None  # this rank's saved shard, until the strategy is bound
        self._saved: Callable[[], Iterator[dict[str, Any]]] = lambda: iter(())  # every saved shard, one at a time

    @property
    def ready(self) -> bool:
        """Whether an EMA exists (at least one update, or one restored from a checkpoint)."""
        return self.updates > 0

    def due(self, step: int) -> bool:
        """Whether the weights after ``step`` optimizer steps enter the EMA."""
        return step >= max(1, self.start_step) and (step - self.start_step) % self.every_steps == 0

    def bind(self, trainer: Any, model: torch.nn.Module) -> None:
        if self.source is not None:
            return
        self.rank, self.world_size = trainer.global_rank, trainer.world_size
        self.source = build_source(trainer.strategy, model, world_size=self.world_size, rank=self.rank,
                                   device=self.device)
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    def after_step(self, trainer: Any, model: torch.nn.Module, step: int) -> None:
        """Call after each optimizer step, before that step's checkpoint (every rank)."""
        if not self.due(step):
            return
        self.bind(trainer, model)
        sources = self.source.tensors()
        if not self.ready:
            self.avg = init_average(sources, self.device)
            log.info("averaging: EMA started at step %d (decay %.6g per update, every %d steps)", step, self.decay,
                     self.every_steps)
        else:
            update_average(self.avg, sources, self.decay)
        self.updates += 1
        self.last_step = step

    def evaluate(self, trainer: Any, model: torch.nn.Module, fn: Callable[[], T]) -> T | None:
        """``fn()`` run with the averaged weights in place of the weights (None: no EMA yet). A collective: every
        rank calls it. The weights and every RNG state are as before afterwards."""
        if not self.ready:
            return None
        self.bind(trainer, model)
        with preserved_rng():
            self.source.swap_in(self.avg)
            try:
                return fn()
            finally:
                self.source.restore()

    # ------------------------------------------------------------------ checkpoints
    def shard(self) -> dict[str, Any]:
        return {"format": FORMAT, "rank": self.rank, "world_size": self.world_size, "strategy": self.source.kind,
                "decay": self.decay, "updates": self.updates, "last_step": self.last_step,
                "buffers": self.avg, "fragments": self.source.fragments()}

    def checkpoint_state(self) -> dict[str, Any] | None:
        """What ``ckpt["rewarm"]["ema"]`` holds: the shard itself (unsharded strategies) or the shard files."""
        if not self.ready or self.source is None:
            return None
        sharded = self.source.sharded
        return {"format": FORMAT, "decay": self.decay, "updates": self.updates, "last_step": self.last_step,
                "world_size": self.world_size, "strategy": self.source.kind,
                "shards": None if sharded else [self.shard()] if self.source.holder else [],
                "files": [shard_file(r) for r in range(self.world_size)] if sharded else None}

    def manifest(self) -> dict[str, Any]:
        """The checkpoint manifest's ``averaging`` entry (files relative to the checkpoint directory)."""
        state = self.checkpoint_state()
        if state is None:
            return {"averaging": {"ema": False}}
        files = [f"{STATE}/{f}" for f in state["files"]] if state["files"] else [STATE]
        keep = ("decay", "updates", "last_step", "world_size", "strategy")
        return {"averaging": {"ema": True, "files": files, **{k: state[k] for k in keep}}}

    def write_shard(self, state_dir: Path) -> None:
        """Sharded strategies: this rank's shard beside the strategy's own files (every rank)."""
        if not self.ready or self.source is None or not self.source.sharded:
            return
        path = state_dir / shard_file(self.rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.shard(), path)

    def load(self, state: dict[str, Any] | None, state_path: Path | None, rank: int) -> None:
        """Restore from ``ckpt["rewarm"]["ema"]`` (every rank; applied when the strategy is bound)."""
        if not state:
            log.info("averaging: the checkpoint holds no EMA; it starts at the next update (step >= %d)",
                     self.start_step)
            return
        self.updates, self.last_step = int(state["updates"]), int(state["last_step"])
        if float(state["decay"]) != self.decay:
            log.info("averaging: the EMA of the checkpoint (decay %.6g, %d updates) continues with decay %.6g",
                     float(state["decay"]), self.updates, self.decay)
        if state.get("shards") is not None:
            self._pending = state["shards"][0] if state["shards"] else None
            self._saved = lambda: iter(state["shards"])
        elif state_path is not None:
            files = [state_path / f for f in state["files"]]
            self._pending = torch.load(files[rank], map_location="cpu", weights_only=True) if rank < len(files) \
                else {"fragments": None, "buffers": []}
            self._saved = lambda: (torch.load(f, map_location="cpu", weights_only=True) for f in files)

    def _restore(self, shard: dict[str, Any]) -> None:
        if not self.source.holder:
            return
        here, fragments = self.source.tensors(), self.source.fragments()
        saved = shard["buffers"]
        device = "cpu" if self.device == "cpu" else None
        if shard["fragments"] == fragments and len(saved) == len(here):
            self.avg = [b.to(device=device or t.device, dtype=torch.float32) for b, t in zip(saved, here, strict=True)]
            return
        self.avg = init_average(here, self.device)  # resharded below, one saved shard at a time
        copied = sum(fill_from(self.avg, fragments, old) for old in self._saved())
        expected = sum(f["numel"] for f in fragments.values())
        if copied != expected:
            raise ResumeError(f"the checkpoint's EMA covers {copied} of this rank's {expected} averaged elements")
        log.info("averaging: the checkpoint's EMA (%s, %d ranks) resharded for this run (%s, %d ranks)",
                 shard.get("strategy"), shard.get("world_size", 0), self.source.kind, self.world_size)


def build_averager(cfg: Any, tokens_per_step: int) -> Averager | None:
    """The averager of an ``averaging`` section (``rewarm.averaging.config.AveragingConfig``); None when off."""
    if not cfg.enabled:
        return None
    return Averager(decay=cfg.decay(tokens_per_step), every_steps=cfg.every_steps, start_step=cfg.start_step,
                    device=cfg.device)
