"""``rewarm tokenize CONFIG --source NAME --out PREFIX``: a configured text source, read with the pipeline's
readers (files in the order given, subset filter, bad-record policy) and tokenized with the run's tokenizer,
EOS after each document as in training, written once as PREFIX.bin + PREFIX.idx (+ PREFIX.json, a sidecar
naming the tokenizer, the source files and the counts). With shuffling off, a run on these files sees the
same token stream as on the text source."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rewarm.data.megatron.format import token_dtype
from rewarm.data.megatron.writer import TokenWriter
from rewarm.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class TokenizeResult:
    prefix: str
    documents: int
    tokens: int
    skipped: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def source_key(data: Any, name: str) -> str:
    """The dotted config key of the text source ``--source name`` names: ``train.NAME`` a training source,
    ``val.NAME`` a validation set, and a bare ``NAME`` the training source of that name, else the validation set
    (a name that is both means the training source: the one a user tokenizes once to train on; ``val.NAME``
    reaches the other). E.g. ``data.train.slimpajama``."""
    kind, dot, short = name.partition(".")
    if not dot or kind not in ("train", "val"):
        kind, short = "", name
    sets = {"train": data.train, "val": data.val}
    found = [k for k in ((kind,) if kind else ("train", "val")) if short in sets[k]]
    if not found:
        known = ", ".join([*(f"train.{n}" for n in data.train), *(f"val.{n}" for n in data.val)]) or "none"
        raise ConfigError("--source", f"no data.train / data.val source named {name!r} (known: {known})")
    if len(found) > 1:
        logger.info("--source %s: the training source data.train.%s (the validation set is val.%s)", name, name, name)
    return f"data.{found[0]}.{short}"


def find_source(data: Any, name: str) -> tuple[str, Any]:
    """(its config key, the text source) that ``--source name`` names (``source_key``), checked to be local text."""
    key = source_key(data, name)
    _, kind, short = key.split(".", 2)
    src = getattr(data, kind)[short]
    if src.resolved_format() != "text":
        raise ConfigError("--source", f"{name!r} is already pre-tokenized (format megatron)")
    if src.hf_dataset or any("://" in p and not p.startswith("file://") for p in src.resolved_paths()):
        raise ConfigError("--source", f"{name!r} reads remote data: download the files and list them in paths")
    return key, src


def documents(src: Any, files: list[str], on_bad_record: str, counter: list[int]) -> Iterator[str]:
    """Texts of the source's documents in file order, as the training readers see them (bad records counted)."""
    from rewarm.data.sources import RecordReader

    kept = {k for k, v in getattr(src, "subsets", {}).items() if v > 0}
    for path in files:
        reader = RecordReader(path, src.resolved_text_field(), src.resolved_subset_field(),
                              on_bad_record=on_bad_record, subsets=frozenset(kept) if kept else None)
        for doc in reader:
            yield doc.text
        counter[0] += reader.skipped
        counter[1] += os.path.getsize(path)  # bytes of the files done: the progress bar's position


def batched(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_files(src: Any, files: list[str], tokenizer: Any, prefix: str, *, on_bad_record: str = "skip",
                   batch_docs: int = 256, workers: int = 2, progress: bool = True) -> TokenizeResult:
    """Write PREFIX.bin / .idx of the documents of ``files``; ``workers`` batches are encoded at once."""
    from rewarm.data.loader import _backend, eos_of, vocab_len
    from rewarm.data.packing import encode

    backend, eos = _backend(tokenizer), eos_of(tokenizer)
    counter, start = [0, 0], time.perf_counter()
    bar = _bar(sum(os.path.getsize(f) for f in files), progress)
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max(1, workers)) as pool, TokenWriter(prefix, token_dtype(vocab_len(tokenizer))) as out:
        for batch in batched(documents(src, files, on_bad_record, counter), batch_docs):
            pending.append(pool.submit(encode, backend, batch, eos))
            if len(pending) > workers:
                _write(out, pending.popleft(), bar, start, counter[1])
        while pending:
            _write(out, pending.popleft(), bar, start, counter[1])
        bar.update(bar.total - bar.n)
        result = TokenizeResult(prefix, out.n_docs, out.n_tokens, counter[0], time.perf_counter() - start)
    bar.close()
    return result


def _write(out: TokenWriter, future: Future, bar: Any, start: float, bytes_done: int) -> None:
    flat, starts = future.result()
    out.add_documents(flat, starts)
    elapsed = max(time.perf_counter() - start, 1e-9)
    bar.set_postfix_str(f"{out.n_docs:,} docs, {out.n_tokens:,} tokens, {out.n_tokens / elapsed:,.0f} tok/s",
                        refresh=False)
    bar.update(bytes_done - bar.n)  # ETA from the source bytes done


def _bar(total_bytes: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenize", disable=not enabled,
                mininterval=1.0, dynamic_ncols=True)


def write_sidecar(prefix: str, tokenizer_name: str, tokenizer_hash: str, files: list[str],
                  result: TokenizeResult, dtype: str, eos_id: int) -> str:
    """PREFIX.json beside the pair (written atomically)."""
    meta = {"format": "MMIDIDX", "dtype": dtype, "tokenizer": {"name": tokenizer_name, "hash": tokenizer_hash},
            "eos_id": eos_id, "eos_appended": True,
            "source_files": [{"path": os.path.abspath(f), "bytes": os.path.getsize(f)} for f in files],
            "documents": result.documents, "tokens": result.tokens, "skipped_records": result.skipped}
    tmp = f"{prefix}.json.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)
    os.replace(tmp, prefix + ".json")
    return prefix + ".json"
