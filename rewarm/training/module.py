"""The LightningModule: one training step, evaluation per validation set, optimizer groups, the metrics row.

It receives plain objects only (no config): the model, the validation rows, a loader factory, settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from rewarm.evaluation.perplexity import SetResult, evaluate_rows, perplexity, role_metrics, token_nll
from rewarm.evaluation.valsets import ValSet
from rewarm.faults.nonfinite import NonfiniteGuard, is_finite, poison_nonfinite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimSettings:
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    fused: bool | None = None
    grad_clip: float = 1.0


@dataclass(frozen=True)
class StepSettings:
    max_steps: int
    grad_accum_steps: int
    seq_len: int
    tokens_per_step: int  # predicted tokens per optimizer step over all ranks (rows are always full)
    val_every_steps: int
    log_every_steps: int
    eval_batch_size: int
    flops_per_token: float | None = None
    peak_flops: float | None = None  # of the whole job (per device x world size)
    on_nonfinite: str = "stop"  # stop | skip (rewarm.faults.nonfinite)
    max_skipped_steps: int = 10


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices and embeddings only: never on biases or norm weights."""
    norm_types = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)
    no_decay: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, norm_types) or pname.endswith("bias") or "norm" in type(module).__name__.lower():
                no_decay.add(id(p))
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


class RewarmModule(L.LightningModule):
    def __init__(
        self,
        model: torch.nn.Module,
        *,
        optim: OptimSettings,
        steps: StepSettings,
        scheduler_factory: Callable[[torch.optim.Optimizer], Any],
        loader_factory: Callable[[int, int], Any],
        val_sets: list[ValSet],
        source_names: list[str],
        state_metrics: Callable[[Any], dict[str, float]] = lambda s: {},
        after_step: Callable[[Any, int], None] | None = None,
        averager: Any = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.steps = steps
        self.scheduler_factory = scheduler_factory
        self.loader_factory = loader_factory
        self.val_sets = val_sets
        self.source_names = source_names
        self.state_metrics = state_metrics
        self.after_step = after_step  # (trainer, steps done) -> None: checkpoints, exports, signals
        self.averager = averager  # rewarm.averaging.averager.Averager: the EMA of the weights (None: off)
        self.start_losses: dict[str, float] = {}  # val loss at step 0, per set (kept in checkpoints)
        self._source_tokens_base = [0] * len(source_names)  # all ranks' tokens per source up to the resume point
        self._source_rows = torch.zeros(len(source_names), dtype=torch.float64)  # this rank's rows since, on host
        self._step_rows = torch.zeros(len(source_names), dtype=torch.float64)  # this rank's rows of this step
        self.nonfinite = NonfiniteGuard(steps.on_nonfinite, steps.max_skipped_steps)
        self.final_metrics: dict[str, float] = {}
        self.eval_listeners: list[Callable[[int, dict[str, float]], dict[str, float]]] = []
        """Called after each validation with (step, loss per set); their metrics join the row (the forecast)."""
        self.data_state: Any = None  # pipeline state after the last batch trained on
        self._pending_data_state: Any = None
        self._reset_step_accumulators()
        self._row: dict[str, Any] = {}
        self._pending: tuple | None = None  # a metrics row waiting for its device values (see _defer_emit)
        self._evaluated_step = -1
        self._t_last: float | None = None
        self._perf_tokens0 = 0
        self.last_tokens_per_sec: float | None = None

    # ------------------------------------------------------------------ data
    @property
    def tokens_seen(self) -> int:
        """Training tokens consumed by the completed optimizer steps (every step takes full rows)."""
        return self.global_step * self.steps.tokens_per_step

    def source_tokens(self) -> list[int]:
        """Tokens per source over all ranks. A collective: call it on every rank at the same point."""
        return self._reduced_counts(0.0)[0]

    def _reduced_counts(self, skipped: float) -> tuple[list[int], float]:
        """(tokens per source, this rank's ``skipped`` records summed) over all ranks: one all-reduce, one
        host sync."""
        counts = torch.cat([self._source_rows, torch.tensor([skipped], dtype=torch.float64)])
        *rows, total_skipped = self._all_reduce(counts).tolist()
        tokens = [base + int(n) * self.steps.seq_len for base, n in zip(self._source_tokens_base, rows, strict=True)]
        return tokens, total_skipped

    def train_dataloader(self) -> Any:
        loader = self.loader_factory(self.global_rank, self.trainer.world_size)
        if self._pending_data_state is not None:
            loader.load_state_dict(self._pending_data_state)
        return loader

    # ------------------------------------------------------------------ training
    def _reset_step_accumulators(self) -> None:
        self._loss_sum: torch.Tensor | float = 0.0
        self._micro = 0
        self._grad_norm: torch.Tensor | None = None
        self._lr: float | None = None
        self._step_rows.zero_()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        labels = batch["labels"]
        nll = token_nll(self.model, batch["input_ids"], labels, batch.get("position_ids"))
        loss = nll.sum() / (labels != -100).sum().clamp(min=1)
        self._loss_sum = self._loss_sum + loss.detach()
        self._micro += 1
        return poison_nonfinite(loss)  # one rank's NaN / inf reaches every rank's gradient norm

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the host, before the copy to the device: count rows per source here (on the device it would
        cost a host sync), and keep the pipeline state (plain Python) out of the device transfer."""
        rows = torch.bincount(batch["source_ids"], minlength=len(self.source_names))
        self._source_rows += rows
        self._step_rows += rows
        self.data_state = batch.pop("data_state", None)
        return batch

    def on_train_start(self) -> None:
        """A resumed optimizer holds the LR saved with it: a schedule changed on resume
        (resume.allow_config_change) must apply from the first step (unchanged: the same value bit for bit)."""
        from rewarm.schedules import apply_scheduled_lr

        for config in self.trainer.lr_scheduler_configs:
            apply_scheduled_lr(config.scheduler)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._micro == 0 and self._should_eval(self.global_step):
            self._run_eval(self.global_step)

    def _should_eval(self, step: int) -> bool:
        every = self.steps.val_every_steps
        return step != self._evaluated_step and (step == 0 or (every > 0 and step % every == 0))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._lr = optimizer.param_groups[0]["lr"]

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        from rewarm.training.strategies import (
            clip_gradients,  # DeepSpeed clips in engine.step(); FSDP2 needs DTensor norms
        )

        self._grad_norm = clip_gradients(self.trainer.strategy, self.parameters(), self.optim.grad_clip)
        if isinstance(self._grad_norm, torch.Tensor) and not self._check_finite(self._grad_norm, self.global_step):
            optimizer.zero_grad(set_to_none=True)  # AdamW skips parameters without a gradient: nothing changes

    def _check_finite(self, norm: Any, step: int) -> bool:
        """trainer.on_nonfinite (one host sync). A GradScaler (16-mixed) skips overflowing steps by itself."""
        if is_finite(norm) or getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return self.nonfinite.finite()
        sources = dict(zip(self.source_names, (int(n) for n in self._step_rows.tolist()), strict=True))
        try:
            return self.nonfinite.check(norm, step=step, lr=self._lr, sources=sources,
                                        loss=torch.as_tensor(self._loss_sum) / max(1, self._micro))
        except Exception:
            self.flush_metrics()  # metrics.csv keeps every step before this one
            raise

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._micro < self.steps.grad_accum_steps:
            return
        step = self.global_step - 1  # the optimizer step just taken (0-based)
        if self._grad_norm is not None and not isinstance(self._grad_norm, torch.Tensor):  # DeepSpeed: after its step
            self._check_finite(float(self._grad_norm), step)
        if step % self.steps.log_every_steps == 0 or self._row:
            self._row.update(self._train_metrics())
        if self._row:
            self._defer_emit(step, self.tokens_seen - self.steps.tokens_per_step)
        self._reset_step_accumulators()
        if self.averager is not None:  # before the step's checkpoint, which holds the EMA of this step
            self.averager.after_step(self.trainer, self.model, self.global_step)
        if self.after_step is not None:
            self.after_step(self.trainer, self.global_step)

    def _train_metrics(self) -> dict[str, Any]:
        """The step's metrics. ``train/loss`` and a tensor ``optim/grad_norm`` stay on the device here: they
        are copied to the host asynchronously and read one step later (``_defer_emit``), so the host never
        waits for the GPU to finish the step it has just queued."""
        loss = self._all_reduce(torch.as_tensor(self._loss_sum, dtype=torch.float64, device=self.device))
        out: dict[str, Any] = {
            "train/loss": loss / (self._micro * self.trainer.world_size),
            "optim/lr": self._lr if self._lr is not None else float("nan"),
            "data/tokens_seen": self.tokens_seen,
            "train/skipped_steps": self.nonfinite.skipped_steps,
        }
        if isinstance(self._grad_norm, torch.Tensor):
            out["optim/grad_norm"] = self._grad_norm.detach()
        elif self._grad_norm is not None:  # DeepSpeed's lazy norm: read now, it is overwritten next step
            out["optim/grad_norm"] = float(self._grad_norm)
        data = self.state_metrics(self.data_state) if self.data_state is not None else {}
        # pipeline counters of this rank's state: skips are summed over ranks with the source counts
        per_source, skipped = self._reduced_counts(data.get("data/skipped_records", 0.0))
        total = max(1, self.tokens_seen)
        for name, n in zip(self.source_names, per_source, strict=True):
            out[f"data/{name}/tokens"] = n
            out[f"data/{name}/fraction"] = n / total
        if self.data_state is not None:
            out["data/skipped_records"] = skipped
            out.update({k: v for k, v in data.items() if k.endswith("/passes")})
        out.update(self._perf_metrics())
        return out

    def _perf_metrics(self) -> dict[str, float]:
        now = time.perf_counter()
        out: dict[str, float] = {}
        if self._t_last is not None:
            dt = now - self._t_last
            tps = (self.tokens_seen - self._perf_tokens0) / dt if dt > 0 else float("nan")
            out["perf/tokens_per_sec"] = self.last_tokens_per_sec = tps
            if self.steps.flops_per_token and self.steps.peak_flops:
                out["perf/mfu"] = tps * self.steps.flops_per_token / self.steps.peak_flops
        if torch.cuda.is_available():
            out["perf/peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        else:
            import resource

            out["perf/peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        self._t_last, self._perf_tokens0 = now, self.tokens_seen
        return out

    def _defer_emit(self, step: int, tokens: int) -> None:
        """Queue this row: its device tensors start an async copy to (pinned) host memory now; the row is
        written at the next step's end (or at a flush), when that copy has long finished."""
        self.flush_metrics()
        row, self._row = self._row, {}
        tensors = {k: v for k, v in row.items() if isinstance(v, torch.Tensor)}
        keys, host, event = list(tensors), None, None
        if keys:
            dev = torch.stack([tensors[k].double().reshape(()) for k in keys])
            host = torch.empty(dev.shape, dtype=dev.dtype, pin_memory=dev.is_cuda)
            host.copy_(dev, non_blocking=True)
            if dev.is_cuda:
                event = torch.cuda.Event()
                event.record()
        self._pending = (step, tokens, row, keys, host, event)

    def flush_metrics(self) -> None:
        """Write the queued row (called before the next one, before checkpoints, at the end of training)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        step, tokens, row, keys, host, event = pending
        if event is not None:
            event.synchronize()  # waits for that step's work only, not for the steps queued since
        if host is not None:
            row.update(zip(keys, host.tolist(), strict=True))
        self._emit(step, tokens, row)

    def _emit(self, step: int, tokens: int, row: dict[str, Any]) -> None:
        """One metrics row. ``tokens``: training tokens the model had consumed when the row's losses were
        measured (row ``s`` = the model after ``s`` updates)."""
        for logger in self.trainer.loggers:
            logger.log_metrics({"tokens": tokens, **row}, step=step)

    # ------------------------------------------------------------------ evaluation
    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size > 1:
            return self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum")
        return t

    def evaluate(self) -> dict[str, SetResult]:
        was_training = self.model.training
        self.model.eval()
        try:
            return {
                vs.name: evaluate_rows(
                    self.model, vs.rows.rows, vs.rows.token_subsets, vs.rows.subset_names,
                    batch_size=self.steps.eval_batch_size, device=self.device,
                    rank=self.global_rank, world_size=self.trainer.world_size, all_reduce=self._all_reduce,
                )
                for vs in self.val_sets
            }
        finally:
            self.model.train(was_training)

    def _run_eval(self, step: int) -> None:
        t0 = time.perf_counter()
        results = self.evaluate()
        averaged = None if self.averager is None else self.averager.evaluate(self.trainer, self.model, self.evaluate)
        for vs in self.val_sets:
            res = results[vs.name]
            if step == 0 and vs.name not in self.start_losses:
                self.start_losses[vs.name] = res.loss
            self._row.update(res.metrics(vs.name, vs.subset_weights))
            self._row.update(role_metrics(vs.name, vs.role, res.loss, self.start_losses.get(vs.name)))
        for name, res in (averaged or {}).items():  # the EMA's weights (rewarm.averaging), same sets
            self._row.update({f"val_avg/{name}/loss": res.loss, f"val_avg/{name}/ppl": perplexity(res.loss)})
        losses = {vs.name: float(results[vs.name].loss) for vs in self.val_sets}
        for listener in self.eval_listeners:
            self._row.update(listener(step, losses))
        if self._t_last is not None:  # keep evaluation (EMA, forecast) time out of perf/tokens_per_sec
            self._t_last += time.perf_counter() - t0
        self._evaluated_step = step

    def add_eval_metrics(self, metrics: dict[str, float], seconds: float) -> None:
        """Metrics measured beside validation (downstream tasks, ``rewarm.tasks``) join this step's row; their
        time is kept out of perf/tokens_per_sec."""
        self._row.update(metrics)
        if self._t_last is not None:
            self._t_last += seconds

    def on_train_end(self) -> None:
        self.flush_metrics()
        step = self.global_step
        if step != self._evaluated_step:
            self._run_eval(step)
        self.final_metrics = dict(self._row)
        if self._row:
            self._emit(step, self.tokens_seen, {**self._row, "data/tokens_seen": self.tokens_seen})
            self._row = {}

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> Any:
        o = self.optim
        fused = o.fused if o.fused is not None else self.device.type == "cuda"
        groups = param_groups(self.model, o.weight_decay)
        opt = torch.optim.AdamW(groups, lr=1.0, betas=o.betas, eps=o.eps, fused=fused or None)
        sched = self.scheduler_factory(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Called on every rank (collectives are safe here). The data state is the one of the last batch
        *trained on*, gathered over ranks; Lightning's own copy of the loader state is replaced by it,
        because Lightning reads the loader after its prefetch (one batch ahead: a resume would skip it)."""
        from rewarm.checkpoints.resume import gather_objects
        from rewarm.data import gather_state

        self.flush_metrics()  # metrics.csv holds every step the checkpoint holds

        data_state = gather_state(self.data_state) if self.data_state is not None else None
        fit_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        fit_state["combined_loader"] = [data_state] if data_state is not None else []
        checkpoint["rewarm"] = {
            "start_losses": self.start_losses,
            "source_tokens": self.source_tokens(),
            "data_state": data_state,
            "evaluated_step": self._evaluated_step,
            "final_metrics": self.final_metrics or None,
            "rng": gather_objects(rng_state(), self.trainer.world_size),
            "nonfinite": self.nonfinite.state_dict(),
            "ema": self.averager.checkpoint_state() if self.averager is not None else None,
            "grad_accum_steps": self.steps.grad_accum_steps,
        }

    def write_sharded_state(self, state_dir: Any) -> None:
        """Called by the checkpoint store on every rank after the strategy wrote ``state_dir``: this rank's part of
        the EMA under sharded strategies (``rewarm.averaging.state``)."""
        if self.averager is not None:
            self.averager.write_shard(state_dir)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("rewarm", {})
        self.start_losses = dict(state.get("start_losses", {}))
        self._source_tokens_base = list(state.get("source_tokens", self._source_tokens_base))
        self._source_rows.zero_()
        self.data_state = self._pending_data_state = state.get("data_state")
        self._evaluated_step = int(state.get("evaluated_step", -1))
        self.nonfinite.load_state_dict(state.get("nonfinite"))
        if state.get("final_metrics") is not None:
            self.final_metrics = dict(state["final_metrics"])
        self._load_ema(state.get("ema"))
        saved_accum = int(state.get("grad_accum_steps", self.steps.grad_accum_steps))
        if saved_accum != self.steps.grad_accum_steps:
            rescale_batch_progress(checkpoint, int(checkpoint.get("global_step", 0)), saved_accum,
                                   self.steps.grad_accum_steps)
        rng = state.get("rng")
        if isinstance(rng, list):  # one state per rank; a different world size reuses them round-robin
            rng = rng[self.global_rank % len(rng)]
        if rng:
            set_rng_state(rng)

    def _load_ema(self, ema: dict[str, Any] | None) -> None:
        if self.averager is None:
            if ema:
                log.info("averaging is off: the checkpoint's EMA (%d updates) is not carried on", ema["updates"])
            return
        from pathlib import Path

        ckpt_path = getattr(self.trainer, "ckpt_path", None)
        self.averager.load(ema, Path(ckpt_path) if ckpt_path else None, self.global_rank)


def rescale_batch_progress(checkpoint: dict[str, Any], steps: int, saved_accum: int, accum: int) -> None:
    """An elastic resume with another gradient accumulation: Lightning decides where an optimizer step ends from
    its count of micro-batches (``batch_progress``: a step ends when the count is a multiple of the accumulation).
    The checkpoint counted ``steps x saved_accum`` of them (each counter may be one behind, mid-batch); every
    counter is moved by ``steps x (accum - saved_accum)``, so the next step starts on a boundary. Called from
    ``on_load_checkpoint``, before Lightning restores its loops from ``checkpoint``."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    progress = loop.get("epoch_loop.batch_progress")
    if not progress:
        return
    shift = steps * (accum - saved_accum)
    for part in ("total", "current"):
        counters = progress.get(part, {})
        for key in ("ready", "started", "processed", "completed"):
            if key in counters:
                counters[key] = int(counters[key]) + shift


def rng_state() -> dict[str, Any]:
    """RNG states of this process as plain types and tensors (loadable by ``torch.load(weights_only=True)``:
    numpy's key array becomes a list). DataLoader workers hold no RNG state to save: the data pipeline's
    randomness is a pure function of (seed, rank, batch index)."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
                           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    version, internal, gauss = state["python"]  # a checkpoint may hand tuples back as lists
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
