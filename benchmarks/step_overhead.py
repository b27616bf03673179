"""Step overhead: seconds per optimizer step of the rewarm stack vs a bare PyTorch loop, same process.

rewarm: ``rewarm.train.run(cfg)`` exactly as ``rewarm train`` runs it (RewarmModule, Lightning Trainer, the
streaming loader, metrics.csv), evaluation off (no validation sets), wandb disabled, progress off, no
periodic checkpoints. Its step time is read from its own ``perf/tokens_per_sec`` column: the clock runs
from one ``on_train_batch_end`` to the next, so it covers everything done per step (data, hooks, logging).

bare: the same Hugging Face GPT-NeoX loaded from the same directory, the same batches (taken beforehand
from the same rewarm loader, held in memory: the loop pays no data cost at all), the same threads,
AdamW with the same hyper-parameters and weight-decay groups, LambdaLR, grad-norm clipping to 1.0.

Rounds alternate rewarm / bare (ABBA); each round drops its warm-up steps and takes the median step time;
the result is the median over rounds of rewarm / bare. Target <= 1.05.

    .venv/bin/python benchmarks/step_overhead.py [--quick] [--rounds R] [--steps N] [--workers W]
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


def sizes(args: argparse.Namespace) -> dict[str, int]:
    if args.quick:
        return {"d": 64, "layers": 2, "heads": 4, "seq": 64, "batch": 2, "steps": 4, "warmup": 1, "rounds": 1}
    return {"d": 256, "layers": 4, "heads": 4, "seq": 256, "batch": 4, "steps": args.steps, "warmup": 3,
            "rounds": args.rounds}


def prepare(cache: Path, s: dict[str, int]) -> tuple[Path, Path]:
    """Model dir + a training corpus large enough that no round repeats the source."""
    model = C.build_model_dir(cache / f"model_d{s['d']}_l{s['layers']}", s["d"], s["layers"], s["heads"], 2048)
    data = C.corpus(cache / "step_corpus" / "train.jsonl.zst", 20_000, seed=1)
    return model, data


def rewarm_round(model: Path, data: Path, out: Path, s: dict[str, int], workers: int, r: int) -> list[float]:
    """One `rewarm train` run; seconds of each step after the warm-up, from its metrics.csv."""
    from rewarm.config import load
    from rewarm.metrics import read_metrics
    from rewarm.train import run

    overrides = C.base_overrides(model, str(data), out, s["seq"], s["batch"], s["warmup"] + s["steps"], f"r{r}")
    cfg = load(None, overrides + [f"data.num_workers={workers}"])
    run_dir = run(cfg)
    tokens_per_step = s["seq"] * s["batch"]
    rows = read_metrics(run_dir / "metrics.csv")
    tps = [float(row["perf/tokens_per_sec"]) for row in rows if row.get("perf/tokens_per_sec")]
    return [tokens_per_step / x for x in tps[s["warmup"]:]]


def take_batches(model: Path, data: Path, s: dict[str, int], n: int) -> list[dict[str, Any]]:
    """The first ``n`` batches of the same rewarm loader (seed 0, one rank), kept in memory."""
    from rewarm.config import load
    from rewarm.data import build_train_loader
    from rewarm.model import load_tokenizer

    cfg = load(None, C.base_overrides(model, str(data), Path("/tmp"), s["seq"], s["batch"], n, "x")
               + ["data.num_workers=0"])
    tok = load_tokenizer(str(model), None, None)
    it = iter(build_train_loader(cfg.data, tok, micro_batch_size=s["batch"], seed=cfg.run.seed, rank=0, world_size=1))
    return [{"input_ids": b["input_ids"], "labels": b["labels"]} for b, _ in zip(it, range(n), strict=False)]


def bare_setup(model_dir: Path) -> tuple[Any, Any, Any]:
    """HF model (sdpa, fp32, train mode), AdamW (decay on matrices only) and warmup + cosine LambdaLR."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    warm, total = 2, 1000

    def lr_lambda(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warm) / (total - warm))))

    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def bare_round(model_dir: Path, batches: list[dict[str, Any]], s: dict[str, int]) -> list[float]:
    """The bare loop over in-memory batches; seconds of each step after the warm-up."""
    import torch
    import torch.nn.functional as F

    model, opt, sched = bare_setup(model_dir)
    times, t_last = [], time.perf_counter()
    for b in batches[: s["warmup"] + s["steps"]]:
        logits = model(input_ids=b["input_ids"], use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        now = time.perf_counter()
        times.append(now - t_last)
        t_last = now
    return times[s["warmup"]:]


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--rounds", type=int, default=4, help="rewarm/bare pairs, alternated")
    p.add_argument("--steps", type=int, default=8, help="timed steps per round (after 3 warm-up steps)")
    p.add_argument("--workers", type=int, default=1, help="data.num_workers of the rewarm run (default: the config's 1)")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    import torch

    C.quiet_logs(lightning=True)
    threads = args.threads
    s = sizes(args)
    model, data = prepare(args.cache, s)
    batches = take_batches(model, data, s, s["warmup"] + s["steps"])
    C.print_machine()
    print(f"sizes: {s}, data.num_workers={args.workers}", flush=True)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        for r in range(s["rounds"]):
            a, b = C.abba(r, lambda: C.median(rewarm_round(model, data, Path(tmp), s, args.workers, r)),  # noqa: B023
                          lambda: C.median(bare_round(model, batches, s)))
            torch.set_num_threads(threads)  # in case anything changed it
            ratios.append(a / b)
            print(f"round {r}: rewarm {a * 1e3:.1f} ms/step, bare {b * 1e3:.1f} ms/step, ratio {a / b:.4f}", flush=True)
    ratio = C.median(ratios)
    C.print_result("step_overhead", ratio, f"<= 1.05 ({'met' if ratio <= 1.05 else 'MISSED'})")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
