"""Resume latency: time to the first training batch when resuming deep in a 1 M-document stream vs at its start.

The stream: 1 M short documents in ONE jsonl.zst shard (the worst case for a cursor-based resume, whose cost
is bounded by one shard; a Pile shard holds ~7 M documents), generated once under ``--cache``. The deep
state: the real pipeline is run once from the start to ~90 % of the shard and its ``TrainLoader.state_dict()``
is cached (JSON, keyed by the pipeline's fingerprint; regenerated when that changes).

Measured, alternating (ABBA), in one process, ``data.num_workers=0`` (everything on the clock, nothing hidden
in a prefetching worker): ``build_train_loader`` [+ ``load_state_dict(deep state)``] + the first batch.
Only this part of a start depends on the stream position (imports, model and checkpoint loading do not), so
the ratio is the strictest form of "time to the first step, resumed / fresh". Target <= 2.

    .venv/bin/python benchmarks/resume_latency.py [--quick] [--rounds R] [--docs N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

SEQ, BATCH = 2048, 8  # Pythia's sequence length; 8 rows per device


def sizes(args: argparse.Namespace) -> dict[str, int]:
    if args.quick:
        return {"docs": 5_000, "seq": 128, "batch": 2, "rounds": 1}
    return {"docs": args.docs, "seq": SEQ, "batch": BATCH, "rounds": args.rounds}


def prepare(cache: Path, s: dict[str, int]) -> tuple[Any, Any, Path]:
    """(data config, tokenizer, corpus path); the corpus is generated once."""
    from rewarm.config import load
    from rewarm.model import load_tokenizer

    model_dir = C.build_model_dir(cache / "model_d64_l2", 64, 2, 4, 2048)
    shard = cache / f"resume_{s['docs']}" / "train" / "00.jsonl.zst"
    if not shard.is_file():
        t0 = time.perf_counter()
        C.write_jsonl_zst(shard, C.make_texts(s["docs"], seed=5, words_min=4, words_max=16))
        print(f"generated {shard} ({shard.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s",
              flush=True)
    cfg = load(None, C.base_overrides(model_dir, str(shard), cache, s["seq"], s["batch"], 10, "x")
               + ["data.num_workers=0"])
    return cfg.data, load_tokenizer(str(model_dir), None, None), shard


def loader(data: Any, tok: Any, batch: int) -> Any:
    from rewarm.data import build_train_loader

    return build_train_loader(data, tok, micro_batch_size=batch, seed=0, rank=0, world_size=1)


def deep_state(data: Any, tok: Any, s: dict[str, int], path: Path, fraction: float = 0.9) -> dict[str, Any]:
    """The loader's state after the batch that crosses ``fraction`` of the shard's documents (cached)."""
    fresh = loader(data, tok, s["batch"])
    if path.is_file():
        state = json.loads(path.read_text())
        if state.get("fingerprint") == fresh.fingerprint():
            return state
    t0 = time.perf_counter()
    target, state, n = int(fraction * s["docs"]), None, 0
    for b in fresh:
        state, n = b["data_state"], n + 1
        if _records_done(state) >= target:
            break
    assert state is not None
    path.write_text(json.dumps(state))
    print(f"deep state: record {_records_done(state):,} of {s['docs']:,} after {n} batches "
          f"({time.perf_counter() - t0:.1f} s, cached in {path})", flush=True)
    return state


def _records_done(state: dict[str, Any]) -> int:
    """The highest record cursor of any sub-stream in the state (the position in the shard)."""
    return max((int(c["record"]) for r in state["ranks"].values() for st in r["streams"] for c in st["subs"].values()),
               default=0)


def first_batch(data: Any, tok: Any, batch: int, state: dict[str, Any] | None) -> float:
    """Seconds from building the loader (and loading ``state``) to holding its first batch."""
    t0 = time.perf_counter()
    ld = loader(data, tok, batch)
    if state is not None:
        ld.load_state_dict(state)
    b = next(iter(ld))
    assert b["input_ids"].shape == (batch, data.seq_len)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--rounds", type=int, default=6, help="resumed/fresh pairs, alternated")
    p.add_argument("--docs", type=int, default=1_000_000, help="documents in the stream (one shard)")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    C.quiet_logs()
    s = sizes(args)
    data, tok, shard = prepare(args.cache, s)
    state = deep_state(data, tok, s, shard.parent.parent / f"state_s{s['seq']}_b{s['batch']}.json")
    C.print_machine()
    print(f"sizes: {s}; resuming at record {_records_done(state):,}", flush=True)
    first_batch(data, tok, s["batch"], None)  # warm-up: file cache, tokenizer threads
    ratios = []
    for r in range(s["rounds"]):
        a, b = C.abba(r, lambda: first_batch(data, tok, s["batch"], state),
                      lambda: first_batch(data, tok, s["batch"], None))
        ratios.append(a / b)
        print(f"round {r}: resumed {a * 1e3:.0f} ms, fresh {b * 1e3:.0f} ms, ratio {a / b:.3f}", flush=True)
    ratio = C.median(ratios)
    C.print_result("resume_latency", ratio, f"<= 2 ({'met' if ratio <= 2 else 'MISSED'})")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
