"""Evaluation throughput: tokens/s of rewarm's per-set evaluation vs a bare ``torch.no_grad`` loop, same rows.

rewarm: ``rewarm.evaluation.perplexity.evaluate_rows`` (what ``RewarmModule.evaluate`` calls per set) on the rows that
``rewarm.data.build_val_rows`` makes of a validation file, with its per-subset sums (two subsets) on.
bare: the same model in eval mode, the same rows in the same batches, ``torch.no_grad``, logits ->
``cross_entropy(reduction="sum")``. Both return the summed NLL; they are checked to agree.

The two alternate batch by batch (ABBA order): ``evaluate_rows`` is called on one batch of rows at a time, so
its per-call work (sums, subset scatter, the final host copy) is paid per batch -- a stricter test than one
call per set. Each batch is timed once per pass on each side; the result takes, per batch and side, the
fastest of the passes (timeit's rule: the least disturbed run) and divides the sums:
tokens/s(rewarm) / tokens/s(bare). Target >= 0.95.

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
    from rewarm.model.load import load_model, load_tokenizer

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


Mark = tuple[float, float]  # (wall seconds, process CPU seconds)


def rewarm_batch(model: Any, rows: Any, lo: int, hi: int) -> tuple[Mark, float]:
    """evaluate_rows on rows[lo:hi] (one batch): its whole per-call work is on the clock. Returns the time
    and the summed NLL."""
    import torch

    from rewarm.evaluation.perplexity import evaluate_rows

    subsets = rows.token_subsets[lo:hi] if rows.token_subsets is not None else None
    t0 = _mark()
    res = evaluate_rows(model, rows.rows[lo:hi], subsets, rows.subset_names, batch_size=hi - lo,
                        device=torch.device("cpu"))
    return _since(t0), res.nll_sum


def bare_batch(model: Any, rows: Any, lo: int, hi: int) -> tuple[Mark, float]:
    """The plain loop's body on rows[lo:hi]."""
    import torch
    import torch.nn.functional as F

    t0 = _mark()
    with torch.no_grad():
        b = rows.rows[lo:hi]
        logits = model(input_ids=b[:, :-1], use_cache=False).logits
        nll = float(F.cross_entropy(logits.flatten(0, 1), b[:, 1:].flatten(), reduction="sum"))
    return _since(t0), nll


def _mark() -> Mark:
    return time.perf_counter(), time.process_time()


def _since(t0: Mark) -> Mark:
    now = _mark()
    return now[0] - t0[0], now[1] - t0[1]


def one_pass(model: Any, rows: Any, batch: int, r: int) -> tuple[list[Mark], list[Mark], float, float]:
    """Batches of one pass, rewarm and bare interleaved batch by batch (ABBA). Returns the per-batch times
    of rewarm and of bare, and both NLL sums."""
    ta_all, tb_all, na, nb = [], [], 0.0, 0.0
    for k, lo in enumerate(range(0, rows.rows.shape[0], batch)):
        hi = min(lo + batch, rows.rows.shape[0])
        (ta, xa), (tb, xb) = C.abba(r + k, lambda: rewarm_batch(model, rows, lo, hi),  # noqa: B023
                                    lambda: bare_batch(model, rows, lo, hi))  # noqa: B023
        ta_all.append(ta)
        tb_all.append(tb)
        na, nb = na + xa, nb + xb
    return ta_all, tb_all, na, nb


def best_ratio(rewarm: list[list[Mark]], bare: list[list[Mark]], clock: int) -> float:
    """sum over batches of the fastest bare time / the same for rewarm (timeit's min: the least disturbed
    run of each batch, over passes); = tokens/s(rewarm) / tokens/s(bare)."""
    fastest = [[min(col) for col in zip(*[[t[clock] for t in p] for p in side], strict=True)] for side in (rewarm, bare)]
    return sum(fastest[1]) / sum(fastest[0])


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--rounds", type=int, default=3, help="passes over the rows")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    C.quiet_logs()
    s = sizes(args)
    model, rows = prepare(args.cache, s)
    tokens = rows.num_tokens
    C.print_machine()
    print(f"sizes: {s}; rows {tuple(rows.rows.shape)}, {tokens} predicted tokens per pass", flush=True)
    one_pass(model, rows, s["batch"], 0)  # warm-up (allocator, kernels)
    rewarm, bare = [], []
    for r in range(s["rounds"]):
        ta, tb, na, nb = one_pass(model, rows, s["batch"], r)
        if abs(na - nb) > 1e-4 * abs(nb):
            raise SystemExit(f"the two loops disagree: NLL sum {na} vs {nb}")
        rewarm.append(ta)
        bare.append(tb)
        per_batch = C.median([b[0] / a[0] for a, b in zip(ta, tb, strict=True)])
        print(f"pass {r}: rewarm {tokens / sum(t[0] for t in ta):,.0f} tok/s, bare {tokens / sum(t[0] for t in tb):,.0f} "
              f"tok/s; median per-batch ratio {per_batch:.4f}; mean NLL {na / tokens:.4f}", flush=True)
    print(f"CPU-time ratio (fastest of each batch): {best_ratio(rewarm, bare, 1):.4f}", flush=True)
    ratio = best_ratio(rewarm, bare, 0)
    C.print_result("eval_throughput", ratio, f">= 0.95 ({'met' if ratio >= 0.95 else 'MISSED'}); wall clock, "
                   "fastest of each batch over the passes")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
