"""Throughput of the training data pipeline (issue 4 item 8).

Generates a corpus of ``--mb`` MB of jsonl.zst (real text: the running Python's standard library sources,
cut into documents), trains a byte-level BPE on part of it, then measures tokens/s of

* ``tokenizer``: the raw ``tokenizers`` batch encoder (encode_batch_fast, 1000 documents per call) on the same
  texts already in memory, in this process: the limit;
* ``pipeline``: ``rewarm.data.build_train_loader`` with 1 DataLoader worker (read zstd, parse JSON, tokenize,
  pack into rows of seq_len + 1) over the same files, until the source ends;
* ``datasets_map``: the hand-written recipe ``load_dataset("json")`` + ``map(tokenize, batched=True)`` +
  ``map(group_texts, batched=True)`` (as in transformers' run_clm.py);

and peak RSS (this process + its DataLoader worker) of the pipeline over ``--rss-mb`` sizes of input.
Tokens counted: every token of every document + its EOS (pipeline: rows x (seq_len + 1)).

    .venv/bin/python benchmarks/data_throughput.py            # 50 MB; RSS at 10 MB and 1000 MB
    .venv/bin/python benchmarks/data_throughput.py --mb 20 --rss-mb 10,200   # quicker

The last two lines are ``ratio_vs_tokenizer=<x>`` and ``ratio_vs_datasets_map=<x>``.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SHARD_MB = 10  # compressed MB per shard


def stdlib_documents() -> list[str]:
    """Real text available everywhere: the standard library's .py files, cut into ~8 KB documents."""
    root = sysconfig.get_paths()["stdlib"]
    docs: list[str] = []
    for path in sorted(glob.glob(f"{root}/**/*.py", recursive=True)):
        if "site-packages" in path:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs += [text[i : i + 8192] for i in range(0, len(text), 8192) if text[i : i + 8192].strip()]
    return docs


def make_corpus(out: Path, mb: float) -> list[str]:
    """Shards of jsonl.zst totalling >= mb MB on disk (reused when already there)."""
    import zstandard

    out.mkdir(parents=True, exist_ok=True)
    done = out / "DONE"
    if done.exists():
        return sorted(str(p) for p in out.glob("*.jsonl.zst"))
    docs, total, shard, n = stdlib_documents(), 0, 0, 0
    cycle = itertools.cycle(docs)
    while total < mb * 1e6:
        path = out / f"shard_{shard:04d}.jsonl.zst"
        with open(path, "wb") as fh, zstandard.ZstdCompressor(level=3).stream_writer(fh) as zw:
            while fh.tell() < min(SHARD_MB, mb - total / 1e6) * 1e6:
                lines = [json.dumps({"text": f"# document {n + i}\n{next(cycle)}", "meta": {"pile_set_name": "Github"}})
                         for i in range(2000)]
                n += len(lines)
                zw.write(("\n".join(lines) + "\n").encode())
                zw.flush(zstandard.FLUSH_BLOCK)
        total += path.stat().st_size
        shard += 1
    done.write_text(str(total))
    return sorted(str(p) for p in out.glob("*.jsonl.zst"))


def make_tokenizer(work: Path, vocab: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = work / f"tokenizer-{vocab}.json"
    if not path.exists():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(stdlib_documents()[:1000], trainer=trainer)
        tok.save(str(path))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>")


def read_texts(files: list[str]) -> list[str]:
    from rewarm.data.sources import RecordReader

    return [d.text for f in files for d in RecordReader(f)]


def bench_tokenizer(tok: Any, texts: list[str]) -> tuple[float, int]:
    backend, n = tok.backend_tokenizer, 0
    t0 = time.perf_counter()
    for i in range(0, len(texts), 1000):
        n += sum(len(e.ids) + 1 for e in backend.encode_batch_fast(texts[i : i + 1000], add_special_tokens=False))
    return time.perf_counter() - t0, n


def pipeline_cfg(files: list[str], seq_len: int) -> Any:
    from omegaconf import OmegaConf

    from rewarm.data.config import DataConfig

    values = {"seq_len": seq_len, "num_workers": 1, "on_source_end": "stop",
              "train": {"bench": {"paths": files, "shuffle_files": False}}}
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.create(values)))
    cfg.validate()
    return cfg


def bench_pipeline(tok: Any, files: list[str], seq_len: int, batch: int = 8) -> tuple[float, int]:
    from rewarm.data import build_train_loader

    loader = build_train_loader(pipeline_cfg(files, seq_len), tok, micro_batch_size=batch, seed=0, rank=0,
                                world_size=1)
    t0, n = time.perf_counter(), 0
    for b in loader:
        n += b["input_ids"].numel() + b["input_ids"].shape[0]  # rows x (seq_len + 1)
    return time.perf_counter() - t0, n


def bench_datasets_map(tok: Any, files: list[str], seq_len: int) -> tuple[float, int]:
    import datasets

    datasets.disable_progress_bars()
    block = seq_len + 1
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache)

        def tokenize(examples: dict) -> dict:
            out = tok(examples["text"])
            out["input_ids"] = [ids + [tok.eos_token_id] for ids in out["input_ids"]]
            return {"input_ids": out["input_ids"]}

        def group_texts(examples: dict) -> dict:
            ids = list(itertools.chain.from_iterable(examples["input_ids"]))
            n = len(ids) // block * block
            return {"input_ids": [ids[i : i + block] for i in range(0, n, block)]}

        ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names)
        ds = ds.map(group_texts, batched=True)
        n = len(ds) * block
        return time.perf_counter() - t0, n


def rss_child(files: list[str], work: Path, seq_len: int) -> None:
    """Run the pipeline over files, print the peak RSS (MB) of this process + its workers, sampled."""
    import psutil

    tok = make_tokenizer(work, 8192)
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not stop.is_set():
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                rss = 0
            peak[0] = max(peak[0], rss / 1e6)
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    seconds, tokens = bench_pipeline(tok, files, seq_len)
    stop.set()
    thread.join()
    print(json.dumps({"peak_rss_mb": peak[0], "tokens": tokens, "seconds": seconds}))


def measure_rss(work: Path, mb: float, seq_len: int) -> dict:
    files = make_corpus(work / f"corpus-{mb:g}mb", mb)
    cmd = [sys.executable, __file__, "--rss-child", *files, "--work", str(work), "--seq-len", str(seq_len)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=50, help="MB of jsonl.zst for the throughput runs")
    p.add_argument("--rss-mb", default="10,1000", help="comma-separated MB of jsonl.zst input for the RSS runs")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "rewarm-bench"), help="corpus cache")
    p.add_argument("--rss-child", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work = Path(args.work)
    if args.rss_child is not None:
        rss_child(args.rss_child, work, args.seq_len)
        return 0
    files = make_corpus(work / f"corpus-{args.mb:g}mb", args.mb)
    size = sum(os.path.getsize(f) for f in files) / 1e6
    tok = make_tokenizer(work, args.vocab)
    print(f"corpus: {len(files)} jsonl.zst files, {size:.1f} MB; vocab {args.vocab}; seq_len {args.seq_len}; "
          f"cpus {os.cpu_count()}")
    texts = read_texts(files)
    results = {}
    for name, fn in (("tokenizer", lambda: bench_tokenizer(tok, texts)),
                     ("pipeline", lambda: bench_pipeline(tok, files, args.seq_len)),
                     ("datasets_map", lambda: bench_datasets_map(tok, files, args.seq_len))):
        seconds, tokens = fn()
        results[name] = tokens / seconds
        print(f"{name:13s} {tokens / 1e6:8.2f} M tokens in {seconds:7.2f} s = {tokens / seconds / 1e6:6.3f} M tok/s")
    rss = {mb: measure_rss(work, float(mb), args.seq_len) for mb in args.rss_mb.split(",") if mb}
    for mb, r in rss.items():
        print(f"peak RSS, {mb} MB of jsonl.zst input: {r['peak_rss_mb']:.0f} MB "
              f"({r['tokens'] / 1e6:.1f} M tokens in {r['seconds']:.0f} s)")
    if len(rss) >= 2:
        values = [r["peak_rss_mb"] for r in rss.values()]
        print(f"rss_growth_mb={values[-1] - values[0]:.0f}")
    print(f"ratio_vs_tokenizer={results['pipeline'] / results['tokenizer']:.3f}")
    print(f"ratio_vs_datasets_map={results['pipeline'] / results['datasets_map']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
