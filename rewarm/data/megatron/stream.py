"""Pre-tokenized documents as the pipeline's Chunks: nothing is tokenized, a chunk is a slice of a memmap.

A sub-stream's units are (file, offset, stride) as for text: the documents ``j`` of file ``file`` with
``j % stride == offset``. Pass ``epoch`` visits a unit's documents in index order, or (``shuffle: documents``)
in a permutation seeded by (seed, source, epoch, unit). The cursor ``(epoch, unit, record, token)`` names the
position ``record`` in that order and the token offset in its document: a restore computes the document and
its byte offset directly (O(1), no data read before it). Pythia's pre-shuffled rows are the documents of a
``RowView``: row i = tokens[i * 2049:(i + 1) * 2049], from the start row on.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from rewarm.data.chunks import Chunk, SourceExhausted, key_hash, unit_order
from rewarm.data.megatron.format import TokenFile, prefix_of
from rewarm.errors import DataError

logger = logging.getLogger(__name__)
CHUNK_TOKENS = 1 << 20  # a chunk stops after the document that reaches this many tokens
MIN_BATCH_DOCS = 4096  # documents looked at per chunk at least (a chunk of consecutive documents is a view)


def open_file(prefix: str) -> TokenFile:
    """One TokenFile per prefix and process (its memmaps are shared by the sub-streams reading it); a file
    replaced on disk (another size, mtime or inode) is opened anew."""
    return _open(prefix, _signature(prefix))


@functools.lru_cache(maxsize=64)
def _open(prefix: str, signature: tuple) -> TokenFile:
    return TokenFile(prefix)


def _signature(prefix: str) -> tuple:
    base = prefix_of(prefix)
    out = []
    for path in [base + ".idx", *sorted(glob.glob(glob.escape(base) + "*.bin"))]:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append((path, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


class DocView:
    """The documents of a TokenFile: ``n_docs``, ``spans(docs)`` -> token (lo, hi), ``label`` for errors."""

    label = "document"

    def __init__(self, tf: TokenFile) -> None:
        self.tf, self.n_docs = tf, tf.n_docs

    def spans(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.tf.doc_spans(docs)

    def number(self, doc: int) -> int:
        """The document's number in the file (for messages)."""
        return doc


class RowView(DocView):
    """Rows of ``row_len`` tokens from row ``first`` on, as documents (Pythia's pre-shuffled layout)."""

    label = "row"

    def __init__(self, tf: TokenFile, row_len: int, first: int) -> None:
        self.tf, self.row_len, self.first = tf, row_len, first
        self.n_docs = max(0, tf.n_tokens // row_len - first)

    def spans(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = (docs + self.first) * self.row_len
        return lo, lo + self.row_len

    def number(self, doc: int) -> int:
        return doc + self.first


def view_of(spec: Any, file_idx: int) -> DocView:
    tf = open_file(spec.files[file_idx])
    return RowView(tf, spec.row_len, spec.first_row) if spec.first_row >= 0 else DocView(tf)


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, key: int, epoch: int, unit: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, key, epoch, unit]).permutation(count)


def unit_docs(spec: Any, epoch: int, u: int, n_docs: int, lo: int, hi: int) -> np.ndarray:
    """Document numbers at positions [lo, hi) of unit ``u``'s order in pass ``epoch``."""
    _, offset, stride = spec.units[u]
    if spec.shuffle_docs:
        count = len(range(offset, n_docs, stride))
        pos = _permutation(spec.seed, key_hash(spec.key), epoch, u, count)[lo:hi]
    else:
        pos = np.arange(lo, hi, dtype=np.int64)
    return offset + stride * pos.astype(np.int64)


def token_chunks(spec: Any, cursor: dict[str, Any], eos_id: int, batch_docs: int) -> Iterator[Any]:
    """Chunks from the cursor on: passes over the units, ``on_source_end`` at the end of each pass."""
    epoch, unit, record = cursor["epoch"], cursor["unit"], cursor["record"]
    while True:
        order = unit_order(spec, epoch)
        full_pass, produced = unit == 0 and record == 0, False
        while unit < len(order):
            for chunk in _unit_chunks(spec, epoch, unit, order[unit], record, eos_id, batch_docs):
                produced = produced or bool(chunk.flat.size)
                yield chunk
            unit, record = unit + 1, 0
        if full_pass and not produced:
            hint = "" if spec.readers <= 1 else (f"; stream {spec.reader} reads 1 in {spec.readers} of its documents: "
                                                 "with fewer documents than data.streams, lower data.streams")
            raise DataError(f"source {spec.key}: a whole pass over {', '.join(spec.files[:3])} gave no token{hint}")
        if spec.on_source_end == "stop":
            logger.info("source %s: end of pass %d, stopping (data.on_source_end=stop)", spec.key, epoch)
            raise SourceExhausted(spec.key)
        epoch, unit, record = epoch + 1, 0, 0
        logger.info("source %s: starting pass %d", spec.key, epoch)


def _unit_chunks(spec: Any, epoch: int, unit: int, u: int, start: int, eos_id: int,
                 batch_docs: int) -> Iterator[Any]:
    view = view_of(spec, spec.units[u][0])
    _, offset, stride = spec.units[u]
    count = len(range(offset, view.n_docs, stride))
    p = start
    share = max(1, getattr(spec, "share", 1))  # streams of this process: each holds a chunk
    look, most = max(batch_docs, MIN_BATCH_DOCS // share, 256), max(CHUNK_TOKENS // share, 1 << 18)
    while p < count:
        docs = unit_docs(spec, epoch, u, view.n_docs, p, min(count, p + look))
        lo, hi = view.spans(docs)
        lens = hi - lo + (1 if spec.append_eos else 0)
        k = min(len(docs), int(np.searchsorted(np.cumsum(lens), most)) + 1)
        flat = gather(view.tf, lo[:k], hi[:k], eos_id if spec.append_eos else None)
        starts = np.zeros(k + 1, np.int64)
        np.cumsum(lens[:k], out=starts[1:])
        if spec.vocab_size:
            check_ids(flat, starts, spec.vocab_size, view, docs[:k], lo[:k])
        p += k
        end = ({"epoch": epoch, "unit": unit, "record": p, "token": 0, "skipped": 0} if p < count
               else {"epoch": epoch, "unit": unit + 1, "record": 0, "token": 0, "skipped": 0})
        # Pythia's rows: documents start after each EOD (a row start is never marked); the end is a sentinel
        boundaries = np.append(np.flatnonzero(flat[:-1] == eos_id) + 1, len(flat)) if spec.first_row >= 0 else None
        yield Chunk(flat, starts, list(range(p - k, p)), np.zeros(k, np.int64), epoch, unit, end, boundaries)
        view.tf.consumed(int(lens[:k].sum()) * view.tf.dtype.itemsize)  # its pages leave this process's RSS


def gather(tf: TokenFile, lo: np.ndarray, hi: np.ndarray, eos_id: int | None) -> np.ndarray:
    """(n_tokens,): the documents [lo, hi) back to back, each followed by ``eos_id`` unless None. Consecutive
    documents without EOS are one slice of the memmap, in the file's dtype (a view: nothing is copied); other
    documents without EOS one copy in the file's dtype; with EOS an int32 copy."""
    if len(lo) and eos_id is None and np.array_equal(lo[1:], hi[:-1]):
        return tf.tokens(int(lo[0]), int(hi[-1]))
    flat = tf.token_array()
    if flat is not None and len(lo):  # one .bin: plain slices of one array (np.memmap's slicing costs ~10 us)
        return _concat([flat[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)], eos_id)
    if eos_id is None:  # documents apart (a shuffle, or one stream of several on a file): one copy, file dtype
        return np.concatenate([tf.tokens(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]) \
            if len(lo) else np.zeros(0, np.int32)
    parts: list[np.ndarray] = []
    eos = np.asarray([eos_id], np.int32)
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        parts.append(tf.tokens(a, b).astype(np.int32))
        parts.append(eos)
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def check_ids(flat: np.ndarray, starts: np.ndarray, vocab_size: int, view: DocView, docs: np.ndarray,
              lo: np.ndarray) -> None:
    """DataError naming the file and the document when an id is outside [0, vocab_size) (one max / min per chunk)."""
    if not flat.size or (flat.dtype.kind == "u" and np.iinfo(flat.dtype).max < vocab_size):
        return  # e.g. uint16 ids under a vocabulary of 65,536 or more: nothing to check
    if int(flat.max()) < vocab_size and (flat.dtype.kind == "u" or int(flat.min()) >= 0):
        return
    at = int(np.flatnonzero((flat >= vocab_size) | (flat < 0))[0])
    d = int(np.searchsorted(starts, at, side="right")) - 1
    raise DataError(f"{view.tf.bin_of(int(lo[d]))}: {view.label} {view.number(int(docs[d]))} holds token id "
                    f"{int(flat[at])}, outside the model's vocabulary of {vocab_size}; the file was tokenized "
                    "with another tokenizer (re-run `rewarm tokenize` with this model's tokenizer)")


def _concat(parts: list[np.ndarray], eos_id: int | None) -> np.ndarray:
    """The parts back to back (file dtype), or with ``eos_id`` after each as an int32 copy (as ``gather``)."""
    if eos_id is None:
        return np.concatenate(parts)
    lens = np.fromiter((len(x) + 1 for x in parts), np.int64, len(parts))
    ends = np.cumsum(lens)
    out = np.empty(int(ends[-1]), np.int32)
    for part, end in zip(parts, ends.tolist(), strict=True):
        out[end - 1 - len(part) : end - 1] = part
    out[ends - 1] = eos_id
    return out
