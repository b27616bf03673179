"""Throughput of pre-tokenized (.bin + .idx) training data (issue 14 item 5).

Builds, once (cached under ``--work``), real-text documents (the running Python's standard library, as
benchmarks/data_throughput.py), a byte-level BPE, the documents as jsonl.zst, and a ``.bin`` of >= ``--gb`` GB
written by rewarm's writer (the tokenized documents, repeated). Then measures, alternated over ``--repeat``
rounds, each figure its best round:

* ``memmap``: the limit, a bare loop slicing the same rows (seq_len + 1 tokens, consecutive) from an
  ``np.memmap`` of the .bin and making the int64 ``input_ids`` / ``labels`` tensors (B, seq_len);
* ``pipeline``: ``rewarm.data.build_train_loader`` on the .bin (``shuffle: none``), in the configuration it
  picks for pre-tokenized sources: ``num_workers: 0`` (nothing is tokenized, a worker would only add a
  pickling hop), over the whole .bin;
* ``text``: the same pipeline on the same documents as jsonl.zst (1 worker, tokenizing), for ``--text-mb``;
* ``tokenize``: ``rewarm tokenize``'s writer loop (tokenize_files) against the bare batch tokenizer
  (``encode_batch_fast``, 1000 documents per call) on the same texts.

Also: resume latency (loader built + state loaded + first batch) at row 10 M against row 0 (a .bin of
>= 10 M rows is a sparse file: its pages are zeros the kernel never stores), and the peak RSS of a run over
100 MB against 1 GB of .bin (subprocesses).

    .venv/bin/python benchmarks/pretokenized_throughput.py            # 1 GB .bin, 3 rounds
    .venv/bin/python benchmarks/pretokenized_throughput.py --quick    # smoke test (ratios mean nothing)

The last three lines are ``ratio_vs_memmap=``, ``ratio_vs_text=`` and ``ratio_tokenize_vs_tokenizer=``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_throughput import Sampler, make_tokenizer, stdlib_documents  # noqa: E402


def data_cfg(values: dict) -> Any:
    from omegaconf import OmegaConf

    from rewarm.data.config import DataConfig

    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.create(values)))
    cfg.validate()
    return cfg


def build_world(work: Path, gb: float, text_mb: float, vocab: int) -> dict[str, Any]:
    """Tokenizer, documents as jsonl.zst (>= text_mb MB of text) and a .bin of >= gb GB (cached)."""
    from rewarm.data.megatron.writer import TokenWriter
    from rewarm.data.packing import encode

    work.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(work, vocab)
    texts, size = [], 0
    for doc in itertools.cycle(stdlib_documents()):
        if size >= text_mb * 1e6:
            break
        texts.append(doc)
        size += len(doc)
    jsonl = work / f"text-{text_mb:g}mb.jsonl.zst"
    if not jsonl.is_file():
        import zstandard

        raw = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
        jsonl.write_bytes(zstandard.ZstdCompressor(level=3).compress(raw))
    prefix = work / f"tokens-{gb:g}gb"
    if not (prefix.with_suffix(".idx")).is_file():
        flat, starts = encode(tok.backend_tokenizer, texts, tok.eos_token_id)
        with TokenWriter(str(prefix), np.uint16) as w:
            while w.n_tokens * 2 < gb * 1e9:
                w.add_documents(flat, starts)
    return {"tok": tok, "texts": texts, "jsonl": str(jsonl), "prefix": str(prefix)}


def bench_memmap(prefix: str, row_len: int, batch: int, block: bool = False) -> tuple[float, int]:
    """The bare loop: each row sliced from the memmap and made an int64 tensor, B rows stacked, input_ids /
    labels (B, seq_len) cut from them. ``block``: the B rows of a batch sliced at once instead (consecutive
    rows only: a lower bound no row-by-row reader reaches)."""
    import torch

    mm = np.memmap(prefix + ".bin", np.uint16, "r")
    n = len(mm) // row_len // batch
    t0 = time.perf_counter()
    for k in range(n):
        if block:
            x = torch.from_numpy(mm[k * batch * row_len : (k + 1) * batch * row_len].reshape(batch, row_len)
                                 .astype(np.int64))
        else:
            x = torch.stack([torch.from_numpy(mm[i * row_len : (i + 1) * row_len].astype(np.int64))
                             for i in range(k * batch, (k + 1) * batch)])
        inputs, labels = x[:, :-1].contiguous(), x[:, 1:].contiguous()
        del inputs, labels
    return time.perf_counter() - t0, n * batch


def bench_pipeline(values: dict, tok: Any, batch: int, max_rows: int | None = None) -> tuple[float, int]:
    """(seconds, rows) after the first batch (steady state), until the source ends or max_rows."""
    from rewarm.data import build_train_loader

    loader = build_train_loader(data_cfg(values), tok, micro_batch_size=batch, seed=0, rank=0, world_size=1)
    t1, rows = None, 0
    for b in loader:
        if t1 is None:
            t1 = time.perf_counter()
            continue
        rows += b["input_ids"].shape[0]
        if max_rows is not None and rows >= max_rows:
            break
    assert t1 is not None
    return time.perf_counter() - t1, rows


def mm_values(prefix: str, seq_len: int) -> dict:
    return {"seq_len": seq_len, "num_workers": 0, "on_source_end": "stop",
            "train": {"mm": {"paths": [prefix + ".bin"], "shuffle": "none"}}}


def bench_tokenize(world: dict, work: Path, rounds: int) -> tuple[float, float]:
    """Best tok/s of ``rounds`` alternated runs (ABBA): (tokenize_files, bare encode_batch_fast) on the same texts."""
    from rewarm.data.megatron.cli import TOKENIZE_BATCH_DOCS
    from rewarm.data.megatron.tokenize import tokenize_files

    tok, texts = world["tok"], world["texts"]
    src = data_cfg({"train": {"t": {"paths": [world["jsonl"]]}}}).train["t"]

    def bare() -> tuple[float, int]:
        backend, n = tok.backend_tokenizer, 0
        t0 = time.perf_counter()
        for i in range(0, len(texts), 1000):
            n += sum(len(e.ids) + 1 for e in backend.encode_batch_fast(texts[i : i + 1000], add_special_tokens=False))
        return n / (time.perf_counter() - t0), n

    def written() -> tuple[float, int]:
        res = tokenize_files(src, [world["jsonl"]], tok, str(work / "tokenized"), batch_docs=TOKENIZE_BATCH_DOCS,
                             workers=2, progress=False)
        return res.tokens_per_second, res.tokens

    best, per_cpu = [0.0, 0.0], [0.0, 0.0]
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            cpu0 = time.process_time()  # all threads of this process (the Rust tokenizer's included)
            rate, n = (written, bare)[i]()
            cpu = n / (time.process_time() - cpu0)
            best[i], per_cpu[i] = max(best[i], rate), max(per_cpu[i], cpu)
            print(f"[{r + 1}] {('rewarm tokenize', 'bare encode_batch')[i]:17s} {n:9d} tokens, {rate / 1e6:.3f} M tok/s, "
                  f"{cpu / 1e6:.3f} M tok per CPU-s", flush=True)
    print(f"tokenize_cpu_efficiency={per_cpu[0] / per_cpu[1]:.3f} (tokens per CPU-second: rewarm tokenize / bare)")
    return best[0], best[1]


def resume_latency(world: dict, work: Path, seq_len: int, batch: int, row: int, n_rows: int) -> float:
    """Seconds to build a loader, load a state at ``row`` and get the first batch (a sparse .bin of n_rows rows)."""
    from rewarm.data import build_train_loader
    from rewarm.data.megatron.writer import TokenWriter

    prefix = work / f"sparse-rows-{n_rows}"
    if not (prefix.with_suffix(".idx")).is_file():  # one 'document' per row; the .bin holds zero pages
        with TokenWriter(str(prefix), np.uint16) as w:
            w.add_documents(np.zeros(0, np.uint16), np.asarray([0], np.int64))
            w._bin.truncate(n_rows * (seq_len + 1) * 2)
            w._bin.seek(0, os.SEEK_END)
            w._sizes.extend([seq_len + 1] * n_rows)
            w.n_tokens = n_rows * (seq_len + 1)
    values = {"seq_len": seq_len, "num_workers": 0, "train": {"mm": {"paths": [str(prefix) + ".bin"],
                                                                     "shuffle": "none"}}}
    cfg = data_cfg(values)
    first = build_train_loader(cfg, world["tok"], micro_batch_size=batch, seed=0, rank=0, world_size=1)
    state = next(iter(first))["data_state"]
    per = row // cfg.streams  # row `row` of the run: row row // S of every stream (stream s reads rows s, s + S, ...)
    cursor = {"epoch": 0, "unit": 0, "record": per, "token": 0, "skipped": 0, "rows": per}
    state["streams"] = {s: {"pos": per, "subs": {"mm": cursor}} for s in state["streams"]}
    t0 = time.perf_counter()
    loader = build_train_loader(cfg, world["tok"], micro_batch_size=batch, seed=0, rank=0, world_size=1)
    loader.load_state_dict(state)
    next(iter(loader))
    return time.perf_counter() - t0


def rss_child(prefix: str, seq_len: int, batch: int, vocab: int, work: str) -> None:
    tok = make_tokenizer(Path(work), vocab)
    with Sampler() as sampler:
        seconds, rows = bench_pipeline(mm_values(prefix, seq_len), tok, batch)
    print(json.dumps({"peak_rss_mb": sampler.peak_mb, "rows": rows, "seconds": seconds}))


def measure_rss(work: Path, gb: float, seq_len: int, batch: int, vocab: int) -> dict:
    world_prefix = build_world(work, gb, 1, vocab)["prefix"]
    cmd = [sys.executable, __file__, "--rss-child", world_prefix, "--work", str(work), "--seq-len", str(seq_len),
           "--batch", str(batch), "--vocab", str(vocab)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="GB of .bin for the throughput run (issue 14: >= 1)")
    p.add_argument("--text-mb", type=float, default=20, help="MB of text for the text pipeline and tokenize runs")
    p.add_argument("--rss-gb", default="0.1,1.0", help="GB of .bin of the two RSS runs")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=16, help="micro batch (rows)")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "rewarm-bench-pretok"))
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test): the ratios mean nothing")
    p.add_argument("--cache", help="with --quick: the work directory")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.gb, args.text_mb, args.rss_gb, args.repeat, args.seq_len = 0.002, 0.3, "0.001,0.002", 1, 128
        args.work = args.cache or args.work
    work = Path(args.work)
    if args.rss_child:
        rss_child(args.rss_child, args.seq_len, args.batch, args.vocab, args.work)
        return 0
    world = build_world(work, args.gb, args.text_mb, args.vocab)
    row_len = args.seq_len + 1
    print(f".bin: {os.path.getsize(world['prefix'] + '.bin') / 1e9:.2f} GB; text {args.text_mb:g} MB; seq_len "
          f"{args.seq_len}; micro batch {args.batch}; cpus {os.cpu_count()}; load {os.getloadavg()[0]:.1f}")
    best: dict[str, float] = {}
    text_rows = int(args.text_mb * 1e6 / 4 / row_len)  # ~4 characters a token: the text run's rows
    for r in range(1, args.repeat + 1):
        runs = (("memmap", lambda: bench_memmap(world["prefix"], row_len, args.batch)),
                ("memmap_block", lambda: bench_memmap(world["prefix"], row_len, args.batch, block=True)),
                ("pipeline", lambda: bench_pipeline(mm_values(world["prefix"], args.seq_len), world["tok"], args.batch)),
                ("text", lambda: bench_pipeline({"seq_len": args.seq_len, "num_workers": 1, "on_source_end": "stop",
                                                 **({"streams": 2} if args.quick else {}),  # 0.3 MB: a few documents
                                                 "train": {"t": {"paths": [world["jsonl"]], "shuffle_files": False}}},
                                                world["tok"], args.batch, text_rows)))
        for name, fn in runs:
            seconds, rows = fn()
            best[name] = max(best.get(name, 0.0), rows / seconds)
            print(f"[{r}] {name:9s} {rows:9d} rows in {seconds:7.2f} s = {rows / seconds:10.0f} rows/s "
                  f"({rows * row_len / seconds / 1e6:7.1f} M tok/s)", flush=True)
    tok_rate, bare_rate = bench_tokenize(world, work, args.repeat)
    print(f"tokenize: rewarm tokenize {tok_rate / 1e6:.3f} M tok/s, bare encode_batch {bare_rate / 1e6:.3f} M tok/s")
    far = 100_000 if args.quick else 10_000_000
    lat = {row: min(resume_latency(world, work, args.seq_len, args.batch, row, far + 100) for _ in range(3))
           for row in (0, far)}
    print(f"resume latency: row 0 {lat[0] * 1e3:.1f} ms, row {far:,} {lat[far] * 1e3:.1f} ms; "
          f"resume_latency_ratio={lat[far] / lat[0]:.3f}")
    rss = [measure_rss(work, float(gb), args.seq_len, args.batch, args.vocab) for gb in args.rss_gb.split(",")]
    for gb, res in zip(args.rss_gb.split(","), rss, strict=True):
        print(f"peak RSS over {gb} GB of .bin: {res['peak_rss_mb']:.0f} MB ({res['rows']} rows)")
    print(f"rss_growth_mb={rss[-1]['peak_rss_mb'] - rss[0]['peak_rss_mb']:.0f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"ratio_vs_memmap_block={best['pipeline'] / best['memmap_block']:.3f} (B rows sliced at once: no reader "
          "of rows gets there)")
    print(f"ratio_vs_memmap={best['pipeline'] / best['memmap']:.3f}")
    print(f"ratio_vs_text={best['pipeline'] / best['text']:.3f}")
    print(f"ratio_tokenize_vs_tokenizer={tok_rate / bare_rate:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
