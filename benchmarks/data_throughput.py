"""Throughput of the training data pipeline (issue 4 item 8).

Generates a corpus of ``--mb`` MB of jsonl.zst (real text: the running Python's standard library sources,
cut into documents), trains a byte-level BPE on part of it, then measures tokens/s of

* ``tokenizer``: the raw ``tokenizers`` batch encoder (encode_batch_fast, 1000 documents per call) on the same
  texts already in memory, in this process: the limit;
* ``pipeline``: ``rewarm.data.build_train_loader`` with 1 DataLoader worker (read zstd, parse JSON, tokenize,
  pack into rows of seq_len + 1) over the same files, until the source ends; timed from its first batch
  (steady state; the time to the first batch - worker start - is printed separately);
* ``datasets_map``: the hand-written recipe of transformers' run_clm.py: ``load_dataset("json")`` +
  ``map(tokenize_function, batched=True)`` + ``map(group_texts, batched=True)`` (input_ids, attention_mask,
  labels), with an EOS appended to each document so the token counts match;

and peak RSS (this process + its DataLoader worker) of the pipeline over ``--rss-mb`` sizes of input.
Tokens counted: every token of every document + its EOS (pipeline: rows x (seq_len + 1)). The three runs
are repeated ``--repeat`` times, alternated; each figure is its best (fastest) round, as timeit does, since
on a shared machine noise only ever slows a run down.

    .venv/bin/python benchmarks/data_throughput.py                      # 50 MB; RSS at 10 MB and 100 MB
    .venv/bin/python benchmarks/data_throughput.py --rss-mb 10,1000     # RSS at 10 MB and 1 GB (issue 4)

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
                         for i in range(200)]
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


def pipeline_cfg(files: list[str], seq_len: int, on_source_end: str = "stop") -> Any:
    from omegaconf import OmegaConf

    from rewarm.data.config import DataConfig

    values = {"seq_len": seq_len, "num_workers": 1, "on_source_end": on_source_end,
              "train": {"bench": {"paths": files, "shuffle_files": False}}}
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.create(values)))
    cfg.validate()
    return cfg


def bench_pipeline(tok: Any, files: list[str], seq_len: int, batch: int = 8,
                   total: int | None = None) -> tuple[float, int, float]:
    """(seconds, tokens) from the first batch on (steady state), and the seconds to the first batch
    (worker start, first read); the startup is reported separately. ``total``: make as many tokens as the corpus
    holds (the tokenizer's count), whole batches: the streams (data.streams) end their parts at different rows,
    so the stream is read with on_source_end=repeat and cut there; None: read until the first stream ends."""
    from rewarm.data import build_train_loader

    cfg = pipeline_cfg(files, seq_len, "stop" if total is None else "repeat")
    loader = build_train_loader(cfg, tok, micro_batch_size=batch, seed=0, rank=0, world_size=1)
    t0, t1, n, made = time.perf_counter(), None, 0, 0
    for b in loader:
        size = b["input_ids"].numel() + b["input_ids"].shape[0]  # rows x (seq_len + 1)
        if total is not None and made + size > total:
            break
        made += size
        if t1 is None:
            t1 = time.perf_counter()
            continue
        n += size
    assert t1 is not None, "the corpus is smaller than one batch"
    return time.perf_counter() - t1, n, t1 - t0


def bench_datasets_map(tok: Any, files: list[str], seq_len: int) -> tuple[float, int]:
    import datasets

    datasets.disable_progress_bars()
    block = seq_len + 1
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache)

        def tokenize(examples: dict) -> dict:  # run_clm.py's tokenize_function, plus an EOS per document
            out = tok(examples["text"])
            for ids, mask in zip(out["input_ids"], out["attention_mask"], strict=True):
                ids.append(tok.eos_token_id)
                mask.append(1)
            return out

        def group_texts(examples: dict) -> dict:  # run_clm.py's group_texts
            concatenated = {k: list(itertools.chain(*examples[k])) for k in examples.keys()}
            total = len(concatenated["input_ids"]) // block * block
            result = {k: [t[i : i + block] for i in range(0, total, block)] for k, t in concatenated.items()}
            result["labels"] = result["input_ids"].copy()
            return result

        ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names)
        ds = ds.map(group_texts, batched=True)
        n = len(ds) * block
        return time.perf_counter() - t0, n


class Sampler:
    """Samples this process and its descendants (DataLoader workers, forkserver) every ``interval`` s: peak RSS
    (MB) and CPU seconds (user + system, last value seen per process) used inside the ``with`` block. Each
    sample walks /proc; at 0.2 s it costs well under 1 % of a core (at 50 ms it took ~6 % of one)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        import psutil

        self.me, self.peak_mb, self._stop = psutil.Process(), 0.0, threading.Event()
        self._cpu0 = self._cpu_now()
        self._cpu_last = dict(self._cpu0)

    def _cpu_now(self) -> dict[int, float]:
        import psutil

        out = {}
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            rss = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, rss / 1e6)
            self._cpu_last.update(self._cpu_now())
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._cpu_last.update(self._cpu_now())

    @property
    def cpu_seconds(self) -> float:
        return sum(v - self._cpu0.get(pid, 0.0) for pid, v in self._cpu_last.items())


def rss_child(files: list[str], work: Path, seq_len: int) -> None:
    """Run the pipeline over files, print the peak RSS (MB) of this process + its workers."""
    tok = make_tokenizer(work, 8192)
    with Sampler() as sampler:
        seconds, tokens, _ = bench_pipeline(tok, files, seq_len)
    print(json.dumps({"peak_rss_mb": sampler.peak_mb, "tokens": tokens, "seconds": seconds}))


def measure_rss(work: Path, mb: float, seq_len: int) -> dict:
    files = make_corpus(work / f"corpus-{mb:g}mb", mb)
    cmd = [sys.executable, __file__, "--rss-child", *files, "--work", str(work), "--seq-len", str(seq_len)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=50, help="MB of jsonl.zst for the throughput runs")
    p.add_argument("--rss-mb", default="10,100",
                   help="comma-separated MB of jsonl.zst input for the RSS runs (issue 4: 10,1000; slow on 2 cores)")
    p.add_argument("--repeat", type=int, default=2,
                   help="rounds of the three throughput runs, alternated; each figure is its best round")
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
    results: dict[str, float] = {}
    per_cpu: dict[str, float] = {}
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    corpus_tokens = bench_tokenizer(tok, texts)[1]  # the pipeline makes as many (whole batches), untimed here
    for round_ in range(1, args.repeat + 1):  # alternated, so that a slow spell of the machine hits all three
        for name, fn in (("tokenizer", lambda: bench_tokenizer(tok, texts)),
                         ("pipeline", lambda: bench_pipeline(tok, files, args.seq_len, total=corpus_tokens)),
                         ("datasets_map", lambda: bench_datasets_map(tok, files, args.seq_len))):
            with Sampler() as sampler:
                seconds, tokens, *startup = fn()
            results[name] = max(results.get(name, 0.0), tokens / seconds)
            per_cpu[name] = max(per_cpu.get(name, 0.0), tokens / sampler.cpu_seconds)
            extra = f" (after {startup[0]:.1f} s to the first batch)" if startup else ""
            print(f"[{round_}] {name:13s} {tokens:11d} tokens in {seconds:7.2f} s = "
                  f"{tokens / seconds / 1e6:6.3f} M tok/s; {tokens / sampler.cpu_seconds / 1e6:6.3f} M tok per CPU-s"
                  f"{extra}", flush=True)
    if args.repeat > 1:
        best = ", ".join(f"{k} {v / 1e6:.3f} M tok/s" for k, v in results.items())
        print(f"best of {args.repeat} rounds: {best}")
    rss = {mb: measure_rss(work, float(mb), args.seq_len) for mb in args.rss_mb.split(",") if mb}
    for mb, r in rss.items():
        print(f"peak RSS, {mb} MB of jsonl.zst input: {r['peak_rss_mb']:.0f} MB "
              f"({r['tokens'] / 1e6:.1f} M tokens in {r['seconds']:.0f} s)")
    if len(rss) >= 2:
        values = [r["peak_rss_mb"] for r in rss.values()]
        print(f"rss_growth_mb={values[-1] - values[0]:.0f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"cpu_efficiency_vs_tokenizer={per_cpu['pipeline'] / per_cpu['tokenizer']:.3f}")
    print(f"cpu_efficiency_vs_datasets_map={per_cpu['pipeline'] / per_cpu['datasets_map']:.3f}")
    print(f"ratio_vs_tokenizer={results['pipeline'] / results['tokenizer']:.3f}")
    print(f"ratio_vs_datasets_map={results['pipeline'] / results['datasets_map']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
