"""Evaluation throughput: tokens/s of rewarm's per-set evaluation vs a bare ``torch.no_grad`` loop, same rows.

rewarm: ``rewarm.evaluate.evaluate_rows`` (what ``RewarmModule.evaluate`` calls per set) on the rows that
``rewarm.data.build_val_rows`` makes of a validation file, with its per-subset sums (two subsets) on.
bare: the same model in eval mode, the same rows in the same batches, ``torch.no_grad``, logits ->
``cross_entropy(reduction="sum")``. Both return the summed NLL; they are checked to agree.

Rounds alternate the two (ABBA); the result is the median over rounds of tokens/s(rewarm) / tokens/s(bare).
Target >= 0.95.

    .venv/bin/python benchmarks/eval_throughput.py [--quick] [--rounds R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import _common as C


def sizes(args: argparse.Namespace) -> dict[str, int]:
    if args.quick:
        return {"d": 64, "layers": 2, "heads": 4, "seq": 64, "batch": 2, "tokens": 2048, "rounds": 1}
    return {"d": 256, "layers": 4, "heads": 4, "seq": 256, "batch": 8, "tokens": 64 * 256, "rounds": args.rounds}


def prepare(cache: Path, s: dict[str, int]) -> tuple[Any, Any]:
    """(model in eval mode, ValRows) built through rewarm's own loaders."""
    from rewarm.config import load
    from rewarm.data import build_val_rows
    from rewarm.model import load_model, load_tokenizer

    model_dir = C.build_model_dir(cache / f"model_d{s['d']}_l{s['layers']}", s["d"], s["layers"], s["heads"], 2048)
    val = C.corpus(cache / "eval_corpus" / "val.jsonl.zst", 4000, seed=3, subsets=2)
    cfg = load(None, C.base_overrides(model_dir, str(val), cache, s["seq"], s["batch"], 10, "x")
               + [f"data.val.v.paths=[{val}]", "data.val.v.subset_field=meta.pile_set_name",
                  f"data.val.v.max_tokens={s['tokens']}"])
    tok = load_tokenizer(str(model_dir), None, None)
    rows = build_val_rows(cfg.data.val["v"], tok, s["seq"], cache / "val_rows")
    model = load_model(str(model_dir), None, attn_implementation="sdpa")
    model.eval()
    return model, rows


Pass = tuple[float, float, float]  # (wall seconds, process CPU seconds, summed NLL) of one pass over the rows


def rewarm_eval(model: Any, rows: Any, batch: int) -> Pass:
    """One pass of evaluate_rows over all rows."""
    import torch

    from rewarm.evaluate import evaluate_rows

    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate_rows(model, rows.rows, rows.token_subsets, rows.subset_names, batch_size=batch,
                        device=torch.device("cpu"))
    return time.perf_counter() - t0, time.process_time() - c0, res.nll_sum


def bare_eval(model: Any, rows: Any, batch: int) -> Pass:
    """One pass of the plain loop."""
    import torch
    import torch.nn.functional as F

    t0, c0 = time.perf_counter(), time.process_time()
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for b in rows.rows.split(batch):
            logits = model(input_ids=b[:, :-1], use_cache=False).logits
            total += F.cross_entropy(logits.flatten(0, 1), b[:, 1:].flatten(), reduction="sum").double()
    return time.perf_counter() - t0, time.process_time() - c0, float(total)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--rounds", type=int, default=8, help="rewarm/bare pairs, alternated")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    C.quiet_logs()
    s = sizes(args)
    model, rows = prepare(args.cache, s)
    tokens = rows.num_tokens
    C.print_machine()
    print(f"sizes: {s}; rows {tuple(rows.rows.shape)}, {tokens} predicted tokens per pass", flush=True)
    bare_eval(model, rows, s["batch"])  # warm-up (allocator, kernels)
    ratios, cpu_ratios = [], []
    for r in range(s["rounds"]):
        (ta, ca, na), (tb, cb, nb) = C.abba(r, lambda: rewarm_eval(model, rows, s["batch"]),
                                    lambda: bare_eval(model, rows, s["batch"]))
        if abs(na - nb) > 1e-4 * abs(nb):
            raise SystemExit(f"the two loops disagree: NLL sum {na} vs {nb}")
        ratios.append(tb / ta)  # tokens/s ratio = inverse time ratio (same tokens)
        cpu_ratios.append(cb / ca)
        print(f"round {r}: rewarm {tokens / ta:,.0f} tok/s, bare {tokens / tb:,.0f} tok/s, ratio {tb / ta:.4f} "
              f"(CPU-time ratio {cb / ca:.4f})", flush=True)
    print(f"CPU-time ratio (robust to a loaded machine): {C.median(cpu_ratios):.4f}", flush=True)
    ratio = C.median(ratios)
    C.print_result("eval_throughput", ratio, f">= 0.95 ({'met' if ratio >= 0.95 else 'MISSED'})")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
