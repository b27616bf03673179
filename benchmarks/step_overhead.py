"""Step overhead: seconds per optimizer step of the rewarm stack vs a bare PyTorch loop, interleaved step by step.

rewarm: ``rewarm.training.run.run(cfg)`` exactly as ``rewarm train`` runs it (RewarmModule, Lightning Trainer, the
streaming loader with the config's ``data.num_workers``, metrics.csv written every step), evaluation off
(no validation sets), wandb disabled, progress off, no periodic checkpoints.

bare: a second copy of the same Hugging Face GPT-NeoX (loaded from the same directory), trained on the very
batch rewarm just trained on, with AdamW (same hyper-parameters, no decay on biases / norms), LambdaLR
(warmup + cosine) and grad-norm clipping to 1.0, same torch threads.

Interleaving: a probe callback appended to rewarm's Trainer (``rewarm.training.run.build_trainer`` is wrapped for
that; nothing else changes) runs one bare step inside each ``on_train_batch_end`` -- where rewarm's own
``perf/tokens_per_sec`` clock ticks -- and times it. A rewarm step is the time from the end of the previous
bare step to the next ``on_train_batch_end``: everything rewarm does per step (fetching the batch, hooks,
metrics row, checkpoint checks), nothing of the bare step. Adjacent steps see the same machine load, so the
per-step ratio rewarm/bare cancels the noise of a shared machine; the result is the median over steps after
the warm-up. Target <= 1.05. Also printed: the same on process CPU time, and the absolute extra ms per step.

    .venv/bin/python benchmarks/step_overhead.py [--quick] [--steps N] [--workers W] [--threads T]
    .venv/bin/python benchmarks/step_overhead.py --device cuda --workers 2 --steps 30   # on a GPU machine
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

Mark = tuple[float, float]  # (perf_counter, process_time) seconds


def sizes(args: argparse.Namespace) -> dict[str, int]:
    if args.quick:
        return {"d": 64, "layers": 2, "heads": 4, "seq": 64, "batch": 2, "steps": 4, "warmup": 2}
    return {"d": 256, "layers": 4, "heads": 4, "seq": 256, "batch": 4, "steps": args.steps, "warmup": 4}


def prepare(cache: Path, s: dict[str, int]) -> tuple[Path, Path]:
    """Model dir + a training corpus large enough that the run never repeats the source."""
    model = C.build_model_dir(cache / f"model_d{s['d']}_l{s['layers']}", s["d"], s["layers"], s["heads"], 2048)
    data = C.corpus(cache / "step_corpus" / "train.jsonl.zst", 20_000, seed=1)
    return model, data


class BareStepper:
    """The bare loop, one step per call: HF model (sdpa, fp32, train mode), AdamW with decay on matrices
    only, warmup + cosine LambdaLR, clip to 1.0."""

    def __init__(self, model_dir: Path, device: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.device, self.cuda = device, device.type == "cuda"  # on CUDA: bf16 autocast + fused AdamW, as rewarm
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").to(device)
        self.model.train()
        params = list(self.model.named_parameters())
        groups = [{"params": [p for _, p in params if p.ndim >= 2], "weight_decay": 0.1},
                  {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=self.cuda or None)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _warmup_cosine(2, 1000))

    def step(self, batch: dict[str, Any]) -> None:
        import torch
        import torch.nn.functional as F

        ids, labels = batch["input_ids"].to(self.device), batch["labels"].to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            logits = self.model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


def _warmup_cosine(warm: int, total: int) -> Any:
    def f(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (t - warm) / (total - warm))))

    return f


class Interleave:
    """Probe callback: at each ``on_train_batch_end`` mark the end of the rewarm step, run one bare step on
    the same batch, mark its end. Intervals: rewarm = prev bare end -> this batch end; bare = its own span."""

    def __init__(self, bare: BareStepper) -> None:
        self.bare = bare
        self.rewarm: list[Mark] = []
        self.bare_times: list[Mark] = []
        self._last: Mark | None = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = _mark()
        if self._last is not None:
            self.rewarm.append(_diff(self._last, now))
        self.bare.step(batch)
        self._last = _mark()
        self.bare_times.append(_diff(now, self._last))


def _mark() -> Mark:
    return time.perf_counter(), time.process_time()


def _diff(a: Mark, b: Mark) -> Mark:
    return b[0] - a[0], b[1] - a[1]


def run_interleaved(model: Path, data: Path, out: Path, s: dict[str, int], workers: int) -> Interleave:
    """One `rewarm train` run (``rewarm.training.run.run``) with the Interleave probe in its Trainer's callbacks."""
    import lightning as L
    import torch

    import rewarm.training.run as T
    from rewarm.config import load

    probe = type("InterleaveCallback", (Interleave, L.Callback), {})(BareStepper(model, torch.device("cpu")))
    original = T.build_trainer
    T.build_trainer = lambda cfg, plan, loggers, callbacks, **kw: original(cfg, plan, loggers, [*callbacks, probe], **kw)
    try:
        overrides = C.base_overrides(model, str(data), out, s["seq"], s["batch"], s["warmup"] + s["steps"] + 1, "r")
        T.run(load(None, overrides + [f"data.num_workers={workers}"]))
    finally:
        T.build_trainer = original
    return probe


def report(probe: Interleave, warmup: int) -> float:
    """Per-step ratios after the warm-up; prints the wall and CPU medians; returns the wall ratio."""
    rw, bare = probe.rewarm[warmup:], probe.bare_times[warmup + 1:]  # rewarm step k+1 follows bare step k
    n = min(len(rw), len(bare))
    wall = C.median([rw[i][0] / bare[i][0] for i in range(n)])
    cpu = C.median([rw[i][1] / bare[i][1] for i in range(n)])
    extra_ms = C.median([(rw[i][0] - bare[i][0]) * 1e3 for i in range(n)])
    print(f"{n} interleaved steps: rewarm {C.median([x[0] for x in rw]) * 1e3:.1f} ms/step, bare "
          f"{C.median([x[0] for x in bare]) * 1e3:.1f} ms/step; median extra {extra_ms:.1f} ms/step", flush=True)
    print(f"CPU-time ratio (main process): {cpu:.4f}", flush=True)
    return wall


# ---------------------------------------------------------------- CUDA: timed spans, not interleaving
# On a GPU the host queues work ahead; a host sync per step (``.item()``, ``.tolist()``) stalls that queue.
# Interleaving would need a sync per step and hide exactly that, so on CUDA each side runs alone for
# warmup + steps steps and the clock is read (after ``torch.cuda.synchronize()``) only after the warm-up and
# after the last step. Two rounds, ABBA. Untested here (no GPU on the machine this was written on).


def cuda_sizes(args: argparse.Namespace) -> dict[str, int]:
    """Pythia-160M-shaped (d 768, 12 layers), seq 2048 x 8 rows, bf16-mixed."""
    return {"d": 768, "layers": 12, "heads": 12, "seq": 2048, "batch": 8, "steps": args.steps, "warmup": 5}


class SpanClock:
    """Probe callback: synchronise and read the clock after step ``warmup`` and after step ``warmup + steps``."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.at, self.n, self.times = (warmup, warmup + steps), 0, []

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        import torch

        self.n += 1
        if self.n in self.at:
            torch.cuda.synchronize()
            self.times.append(time.perf_counter())


def rewarm_span(model: Path, data: Path, out: Path, s: dict[str, int], workers: int, r: int) -> float:
    """Seconds per step of one ``rewarm.training.run.run`` on CUDA (bf16-mixed), between the two clock reads."""
    import lightning as L

    import rewarm.training.run as T
    from rewarm.config import load

    clock = type("SpanClockCallback", (SpanClock, L.Callback), {})(s["warmup"], s["steps"])
    original = T.build_trainer
    T.build_trainer = lambda cfg, plan, loggers, callbacks, **kw: original(cfg, plan, loggers, [*callbacks, clock], **kw)
    try:
        overrides = C.base_overrides(model, str(data), out, s["seq"], s["batch"], s["warmup"] + s["steps"], f"r{r}")
        T.run(load(None, overrides + ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                                      f"data.num_workers={workers}"]))
    finally:
        T.build_trainer = original
    return (clock.times[1] - clock.times[0]) / s["steps"]


def bare_span(model: Path, batches: list[dict[str, Any]], s: dict[str, int]) -> float:
    """Seconds per step of the bare loop on CUDA (batches copied to the device each step, as Lightning does)."""
    import torch

    stepper, t0 = BareStepper(model, torch.device("cuda")), 0.0
    for i, b in enumerate(batches[: s["warmup"] + s["steps"]], 1):
        stepper.step(b)
        if i == s["warmup"]:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / s["steps"]


def take_batches(model: Path, data: Path, s: dict[str, int]) -> list[dict[str, Any]]:
    """The first batches of the same rewarm loader (seed 0, one rank), kept in host memory."""
    from rewarm.config import load
    from rewarm.data import build_train_loader
    from rewarm.model.load import load_tokenizer

    n = s["warmup"] + s["steps"]
    cfg = load(None, C.base_overrides(model, str(data), Path("/tmp"), s["seq"], s["batch"], n, "x") + ["data.num_workers=0"])
    it = iter(build_train_loader(cfg.data, load_tokenizer(str(model), None, None), micro_batch_size=s["batch"],
                                 seed=cfg.run.seed, rank=0, world_size=1))
    return [{"input_ids": b["input_ids"], "labels": b["labels"]} for b, _ in zip(it, range(n), strict=False)]


def main_cuda(args: argparse.Namespace) -> float:
    import torch

    if not torch.cuda.is_available():
        print("skipped: --device cuda but no CUDA device here", flush=True)
        print("step_overhead=nan")
        return math.nan
    s = cuda_sizes(args)
    model, data = prepare(args.cache, s)
    batches = take_batches(model, data, s)
    C.print_machine()
    print(f"sizes: {s}, bf16-mixed, data.num_workers={args.workers}", flush=True)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        for r in range(2):
            a, b = C.abba(r, lambda: rewarm_span(model, data, Path(tmp), s, args.workers, r),  # noqa: B023
                          lambda: bare_span(model, batches, s))
            ratios.append(a / b)
            print(f"round {r}: rewarm {a * 1e3:.1f} ms/step, bare {b * 1e3:.1f} ms/step, ratio {a / b:.4f}", flush=True)
    ratio = C.median(ratios)
    C.print_result("step_overhead", ratio, f"<= 1.05 ({'met' if ratio <= 1.05 else 'MISSED'}); CUDA, bf16-mixed")
    return ratio


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--steps", type=int, default=40, help="timed steps (after the warm-up steps)")
    p.add_argument("--workers", type=int, default=1, help="data.num_workers of the rewarm run (the config default: 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: a Pythia-160M shape in bf16-mixed, timed spans instead of interleaving")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    C.quiet_logs(lightning=True)
    if args.device == "cuda":
        return main_cuda(args)
    s = sizes(args)
    model, data = prepare(args.cache, s)
    C.print_machine()
    print(f"sizes: {s}, data.num_workers={args.workers}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        probe = run_interleaved(model, data, Path(tmp), s, args.workers)
    ratio = report(probe, s["warmup"])
    C.print_result("step_overhead", ratio, f"<= 1.05 ({'met' if ratio <= 1.05 else 'MISSED'}); wall-clock, "
                   "median of per-step ratios")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
