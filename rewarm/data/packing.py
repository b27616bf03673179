"""Tokenize documents in batches and cut the token stream of one reader into rows of ``seq_len + 1``.

A ``SubStream`` is the documents one reader (rank, stream) owns in one source (or one subset of it): its
*units* (file, record residue class) visited pass after pass. Its state is a cursor, not tokens:
``(epoch, unit, record, token)`` = the document at the current position and the offset in its tokens
(EOS included), plus counters. Restoring re-opens that unit and re-reads it up to ``record`` (cost: at most
one shard) and re-tokenizes from there; tokenization is per document, so rows come out identical.

Three stages overlap: per sub-stream a thread reads and parses batches of documents; one pool per reading
process tokenizes the next batches into int32 arrays (the Rust tokenizer releases the GIL; in a DataLoader
worker one pool thread per core, each call single-threaded: ``tokenize_pool``); the caller cuts rows.
Batches are consumed in the order they were read, so threads change no result. Token arrays are int32 until
the loader makes the model's int64 tensors.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewarm.data.chunks import Chunk, SourceExhausted, SubStreamSpec, key_hash, unit_order
from rewarm.data.encode_pool import EncodePool
from rewarm.data.prefetch import Prefetcher
from rewarm.data.sources import Doc, RecordReader
from rewarm.errors import DataError

logger = logging.getLogger(__name__)
__all__ = ["Chunk", "ChunkReader", "SourceExhausted", "SubStream", "SubStreamSpec", "encode", "encoded", "flatten_ids",
           "dataloader_workers", "initial_cursor", "reading_cores", "single_threaded_tokenizer", "tokenize_ahead",
           "tokenize_pool", "unit_order"]


TOKEN_DTYPE = np.int32


def single_threaded_tokenizer() -> bool:
    """Whether ``tokenizers`` runs each call on this thread alone (TOKENIZERS_PARALLELISM off, as in every
    DataLoader worker: rewarm.data.workers)."""
    return os.environ.get("TOKENIZERS_PARALLELISM", "true").strip().lower() in {"", "off", "false", "f", "no", "n", "0"}


def tokenize_ahead() -> int:
    """Batches of documents a lone logical stream has in flight: 3 while the tokenizer runs its own threads, so
    that they never wait while a finished call hands its results over under the GIL (1 -> 3: 1.97 -> 2.11 M
    tokens/s on 2 cores, the bare tokenizer 2.13; benchmarks/data_throughput.py); 2 when it is single-threaded.
    A batch holds ~100 bytes per token of encodings until it is flattened to int32."""
    return 2 if single_threaded_tokenizer() else 3


def reading_cores() -> int:
    """The cores of this reading process: those it may run on (a SLURM allocation or taskset limits them),
    shared out among the DataLoader workers of its rank when it is one of them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = dataloader_workers()
    return max(1, cores // (workers or 1))


def dataloader_workers() -> int | None:
    """The number of DataLoader workers of this rank when this process is one of them, else None."""
    data = sys.modules.get("torch.utils.data")  # only a DataLoader worker (torch loaded) has worker info
    info = data.get_worker_info() if data is not None else None
    return None if info is None else info.num_workers


def tokenize_pool() -> EncodePool:
    """The threads of one reading process that tokenize (``encode``) for all its streams and sub-streams
    (rewarm.data.encode_pool). A DataLoader worker (single-threaded tokenizer, rewarm.data.workers): one thread
    per core of ``reading_cores()``, each encoding one batch per call. Reading in the training process: 3
    threads whose calls take every batch waiting, so that the tokenizer's own threads get large calls to split
    (2 if the user turned those off). With one worker on 2 cores the first raised the pipeline's tokens/s
    against the bare tokenizer from 0.857 to 0.937 (median of 5 rounds; benchmarks/data_throughput_ab.py)."""
    if single_threaded_tokenizer() and dataloader_workers() is not None:
        return EncodePool(reading_cores(), thread_name_prefix="rewarm-tokenize", gather_docs=0)
    return EncodePool(tokenize_ahead(), thread_name_prefix="rewarm-tokenize")


@dataclass
class TextBatch:
    """Consecutive documents of one unit, read but not yet tokenized."""

    texts: list[str]
    records: list[Any]  # (n_docs,) position of each document: record index (plain) or datasets state
    skipped: list[int]  # (n_docs,) bad records counted up to (and before) each document
    epoch: int
    unit: int
    end_state: dict[str, Any]  # cursor once the whole batch is consumed


def encode(tokenizer: Any, texts: list[str], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``texts`` with a ``tokenizers.Tokenizer`` in one batch; each document followed by EOS.
    Returns (flat ids (n_tokens,) int32, starts (n_docs + 1,) int64)."""
    fast = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # no offsets: same ids, faster
    return flatten_ids(fast(texts, add_special_tokens=False) if texts else [], eos_id)


def flatten_ids(encodings: Sequence[Any], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids (n_tokens,) int32 with EOS after each document, starts (n_docs + 1,) int64)."""
    n = len(encodings)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(e) + 1 for e in encodings), dtype=np.int64, count=n), out=starts[1:])
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=TOKEN_DTYPE,
                      count=int(starts[-1]) - n)
    return np.insert(ids, starts[1:] - 1 - np.arange(n), eos_id), starts  # each EOS where its document ends


def chunk_of(batch: TextBatch, flat: np.ndarray, starts: np.ndarray) -> Chunk:
    return Chunk(flat, starts, batch.records, np.asarray(batch.skipped, np.int64), batch.epoch, batch.unit,
                 batch.end_state)


def encoded(batches: Iterator[TextBatch], tokenizer: Any, eos_id: int, pool: EncodePool,
            ahead: int) -> Iterator[Chunk]:
    """The Chunk of each batch, in order, tokenized on ``pool`` up to ``ahead`` batches ahead. A finished
    batch waits as int32 arrays (``encode`` flattens in the pool's thread), not as encodings. An error of
    ``batches`` is raised after the chunks of the batches read before it."""
    pending: deque[tuple[TextBatch, Future]] = deque()
    error: Exception | None = None
    exhausted = False
    while True:
        while not exhausted and len(pending) < ahead:
            try:
                batch = next(batches)
            except StopIteration:
                exhausted = True
            except Exception as e:  # raised below, once the batches read before it are out
                error, exhausted = e, True
            else:
                pending.append((batch, pool.submit(encode, tokenizer, batch.texts, eos_id)))
        if not pending:
            break
        batch, future = pending.popleft()
        yield chunk_of(batch, *future.result())
    if error is not None:
        raise error


def initial_cursor() -> dict[str, int]:
    return {"epoch": 0, "unit": 0, "record": 0, "token": 0, "skipped": 0, "rows": 0}


class SubStream:
    """Rows of ``seq_len + 1`` tokens from one sub-stream; ``state()`` / ``__init__(state=...)`` resume exactly."""

    def __init__(self, spec: SubStreamSpec, tokenizer: Any, eos_id: int, seq_len: int, batch_docs: int,
                 state: dict[str, int] | None = None, pool: EncodePool | None = None) -> None:
        self.spec, self.tokenizer, self.eos_id = spec, tokenizer, eos_id
        self.row_len, self.batch_docs = seq_len + 1, batch_docs
        self.cursor = dict(state or initial_cursor())
        self._skip_tokens = self.cursor["token"]  # tokens of the first document already used before a restore
        # Reading runs ahead in a thread, tokenizing on the stream's pool (see the module docstring). The
        # reading thread holds its iterator only, so a dropped SubStream stops it.
        if spec.backend == "megatron":  # pre-tokenized: chunks are slices of memmaps
            from rewarm.data.megatron.stream import token_chunks

            self._chunks: Iterator[Chunk] = token_chunks(spec, self.cursor, eos_id, batch_docs)  # no thread: memcpy
        else:
            alone = spec.share <= 1  # one stream in this process; else each of many reads 1 batch ahead
            texts = Prefetcher(ChunkReader(spec, batch_docs).batches(self.cursor), depth=2 if alone else 1)
            self._chunks = encoded(texts, tokenizer, eos_id, pool or tokenize_pool(), tokenize_ahead() if alone else 2)
        self._chunk: Chunk | None = None
        self._pos = 0  # token offset in the current chunk
        self._taken = 0  # rows taken by take_row since the cursor was last worked out

    def state(self) -> dict[str, int]:
        """The cursor of the next token (plus counters): small, picklable."""
        self._settle()
        return dict(self.cursor)

    def take_row(self) -> np.ndarray:
        """``next_rows(1, False)[0][0]`` for the caller that needs no document starts, cheaper: a row inside
        the current chunk is a slice of it, and the cursor is worked out when ``state()`` asks for it."""
        c, lo = self._chunk, self._pos
        if c is None or lo + self.row_len > len(c.flat):
            return self.next_rows(1, False)[0][0]
        self._pos, self._taken = lo + self.row_len, self._taken + 1
        return c.flat[lo : self._pos]

    def _settle(self) -> None:
        if self._taken:
            self.cursor = {**self._cursor_at(), "rows": self.cursor["rows"] + self._taken}
            self._taken = 0

    def next_row(self) -> tuple[np.ndarray, list[int]]:
        """One row (seq_len + 1,) and the offsets in it where a document starts (> 0)."""
        self._settle()
        parts, doc_starts, filled = [], [], 0
        while filled < self.row_len:
            chunk = self._current_chunk()
            take = min(self.row_len - filled, len(chunk.flat) - self._pos)
            lo, hi = self._pos, self._pos + take
            # document starts strictly inside (lo, hi), plus lo itself when it is a start and not row offset 0
            marks = chunk.starts if chunk.boundaries is None else chunk.boundaries
            inner = marks[(marks > lo) & (marks < hi)]
            if filled and _is_start(marks, lo):  # a chunk boundary at a document start
                doc_starts.append(filled)
            doc_starts += (inner - lo + filled).tolist()
            parts.append(chunk.flat[lo:hi])
            filled, self._pos = filled + take, hi
        self.cursor = self._cursor_at()
        self.cursor["rows"] += 1
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy(), sorted(set(doc_starts))

    def next_rows(self, k: int, with_starts: bool) -> tuple[np.ndarray, list[list[int]]]:
        """``k`` rows (k, seq_len + 1) and their document starts, as ``k`` calls of ``next_row``. Without
        starts, the whole rows inside the current chunk are one slice of it (pre-tokenized chunks are memmap
        slices: nothing is copied per row); only a row that spans two chunks is assembled."""
        self._settle()
        if with_starts:
            rows, starts = zip(*(self.next_row() for _ in range(k)), strict=True)
            return np.stack(rows), list(starts)
        parts: list[np.ndarray] = []
        while k:
            chunk = self._current_chunk()
            whole = min(k, (len(chunk.flat) - self._pos) // self.row_len)
            if whole:
                lo, self._pos = self._pos, self._pos + whole * self.row_len
                self.cursor = {**self._cursor_at(), "rows": self.cursor["rows"] + whole}
                parts.append(chunk.flat[lo : self._pos].reshape(whole, self.row_len))
            else:
                parts.append(self.next_row()[0][None])
            k -= max(whole, 1)
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), [[] for _ in range(sum(map(len, parts)))]

    def _current_chunk(self) -> Chunk:
        while self._chunk is None or self._pos >= len(self._chunk.flat):
            self._chunk, self._pos = next(self._chunks), 0
            if self._chunk.flat.size and self._pos == 0 and self._skip_tokens:
                self._pos, self._skip_tokens = self._skip_tokens, 0
        return self._chunk

    def _cursor_at(self) -> dict[str, int]:
        c = self._chunk
        assert c is not None
        rows = self.cursor["rows"]
        if self._pos >= len(c.flat):
            return {**c.end_state, "rows": rows}
        d = int(np.searchsorted(c.starts, self._pos, side="right")) - 1
        return {"epoch": c.epoch, "unit": c.unit, "record": c.records[d],
                "token": self._pos - int(c.starts[d]), "skipped": int(c.skipped[d]), "rows": rows}


class ChunkReader:
    """Reads the units of a sub-stream from a cursor on, in batches of documents."""

    def __init__(self, spec: SubStreamSpec, batch_docs: int) -> None:
        self.spec, self.batch_docs = spec, batch_docs

    def batches(self, cursor: dict[str, Any]) -> Iterator[TextBatch]:
        """TextBatches from the cursor on: passes over the units, a unit's documents in record order."""
        epoch, unit, record, skipped = cursor["epoch"], cursor["unit"], cursor["record"], cursor["skipped"]
        while True:
            order = unit_order(self.spec, epoch)
            full_pass, produced = unit == 0 and record == 0, False
            while unit < len(order):
                for batch in self._unit_batches(epoch, unit, order[unit], record, skipped):
                    produced = produced or bool(batch.texts)
                    skipped = batch.end_state["skipped"]
                    yield batch
                unit, record = unit + 1, 0
            if full_pass and not produced:
                raise DataError(f"source {self.spec.key}: a whole pass over {len(order)} file part(s) gave no "
                                f"usable document (files: {', '.join(self.spec.files[:3])}...){few(self.spec)}")
            if self.spec.on_source_end == "stop":
                logger.log(_pass_level(self.spec), "source %s: end of pass %d, stopping (data.on_source_end=stop)%s",
                           self.spec.key, epoch, _which(self.spec))
                raise SourceExhausted(self.spec.key)
            epoch, unit, record = epoch + 1, 0, 0
            logger.log(_pass_level(self.spec), "source %s: starting pass %d (files in a new order)%s", self.spec.key,
                       epoch, _which(self.spec))

    def _unit_batches(self, epoch: int, unit: int, u: int, start: Any, skipped: int) -> Iterator[TextBatch]:
        reader = self._open(epoch, u, start)
        texts: list[str] = []
        records: list[Any] = []
        skips: list[int] = []
        for pos, doc in reader:
            texts.append(doc.text)
            records.append(pos)
            skips.append(skipped + reader.skipped)
            if len(texts) == self.batch_docs:
                end = {"epoch": epoch, "unit": unit, "record": reader.position(), "token": 0, "skipped": skips[-1]}
                yield TextBatch(texts, records, skips, epoch, unit, end)
                texts, records, skips = [], [], []
        next_unit = {"epoch": epoch, "unit": unit + 1, "record": 0, "token": 0, "skipped": skipped + reader.skipped}
        yield TextBatch(texts, records, skips, epoch, unit, next_unit)

    def _open(self, epoch: int, u: int, start: Any) -> _PlainUnit | Any:
        spec = self.spec
        if spec.backend == "datasets":
            from rewarm.data.hf import HFReader

            files = [spec.files[i] for i in _file_order(spec, epoch)]
            return HFReader(files, spec.hf_dataset, spec.hf_split, spec.text_field, spec.subset_field, spec.subsets,
                            spec.on_bad_record, spec.reader, spec.readers, start or None)
        file_idx, offset, stride = spec.units[u]
        share = (spec.key, epoch, peers_of(spec, file_idx, stride)) if spec.share > 1 else None  # rewarm.data.shared
        return _PlainUnit(RecordReader(spec.files[file_idx], spec.text_field, spec.subset_field,
                                       on_bad_record=spec.on_bad_record, start=start or 0, stride=stride,
                                       offset=offset, subsets=spec.subsets, share=share))


class _PlainUnit:
    """A RecordReader as (position before the document, Doc) pairs; positions are record indices."""

    def __init__(self, reader: RecordReader) -> None:
        self.reader, self._next = reader, reader.start

    @property
    def skipped(self) -> int:
        return self.reader.skipped

    def position(self) -> int:
        return self._next

    def __iter__(self) -> Iterator[tuple[int, Doc]]:
        for doc in self.reader:
            self._next = doc.index + 1
            yield doc.index, doc


def _pass_level(spec: SubStreamSpec) -> int:
    """A pass's start or end is logged at INFO by stream 0 only (the others at DEBUG): one line per pass, not one per
    stream (``data/<source>/passes`` counts the furthest stream)."""
    return logging.INFO if spec.reader == 0 else logging.DEBUG


def _which(spec: SubStreamSpec) -> str:
    return f" (stream {spec.reader} of {spec.readers})" if spec.readers > 1 else ""


def peers_of(spec: SubStreamSpec, file_idx: int, stride: int) -> int:
    """Readers in this process of file ``file_idx`` at ``stride``: its units ``file_idx * stride + o`` owned by
    one of ``spec.peers`` (unit ``u`` is read by stream ``u % readers``, rewarm.data.mixing). 0: unknown."""
    if not spec.peers:
        return 0
    mine = set(spec.peers)
    return sum((file_idx * stride + o) % spec.readers in mine for o in range(stride))


def few(spec: SubStreamSpec) -> str:
    """The hint of an empty pass when the source is shared by several streams."""
    if spec.readers <= 1:
        return ""
    return (f"; stream {spec.reader} reads 1 in {spec.readers} of its documents: a source with fewer documents "
            "than data.streams leaves streams empty, lower data.streams")


def _file_order(spec: SubStreamSpec, epoch: int) -> list[int]:
    """File indices of a datasets-reader pass: a seeded shuffle per pass, or the given order."""
    order = list(range(len(spec.files)))
    if spec.shuffle_files and len(order) > 1:
        np.random.default_rng([spec.seed, key_hash(spec.key), epoch]).shuffle(order)
    return order


def _is_start(starts: np.ndarray, pos: int) -> bool:
    i = int(np.searchsorted(starts, pos))
    return i < len(starts) - 1 and int(starts[i]) == pos
