"""Mixing: which sub-stream each row comes from, and how one logical stream makes its rows.

The token stream is made by ``S = data.streams`` logical streams, whatever the number of ranks and
DataLoader workers. Global row ``g`` (row ``r`` of optimizer step ``k`` is ``g = k * G + r``, ``G`` rows per
step) is row ``p = g // S`` of stream ``s = g % S`` (``stream_of``). Rank ``i`` of ``W`` owns the streams
``s % W == i`` and reads the global rows ``g = i + W * j`` (its local row ``j``), so every step's rows are
split evenly over the ranks even when ``G < S``; how the ranks (and their workers) share the streams is in
rewarm.data.loader.

Mixing is **per row**: stream ``s`` draws the sub-stream of its row ``p`` with the weights at that row's
optimizer step, from uniforms seeded by ``(seed, s, p // DRAW_BLOCK)`` only (never the rank), so the mix
does not depend on world size, worker count or timing. Sources with ``subsets`` are split into one
sub-stream per subset (each reads the source's files and keeps its subset); its weight is the source
weight times the subset's share.

Reads are disjoint: stream ``s`` is reader ``s`` of ``S``, owning the *units* ``u`` with ``u % S == s``
among ``F * m`` units (file ``u // m``, records ``i % m == u % m``), where ``F`` = files of the source and
``m = ceil(S / F)``. Every record belongs to exactly one unit, so each pass uses every document exactly
once across streams, hence across ranks and workers. With ``shuffle_files`` (text sources, data order 3) stream
``s`` is reader ``σ(s)`` instead, ``σ`` a permutation of the S readers seeded by ``(seed, source)``: another seed
puts other documents in each step's rows even when a source has fewer files than there are streams.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewarm.data.chunks import key_hash
from rewarm.data.packing import SubStream, SubStreamSpec, tokenize_pool
from rewarm.data.state import DATA_ORDER_VERSION

DRAW_BLOCK = 1024  # rows of a stream whose mixing uniforms come from one generator (made once per block)


@dataclass(frozen=True)
class SubSource:
    """One weighted sub-stream shared by all readers: a source, or one subset of it."""

    key: str
    source_id: int
    files: tuple[str, ...]
    text_field: str
    subset_field: str | None
    subsets: frozenset[str] | None
    shuffle_files: bool
    weight: float
    knots: tuple[tuple[float, float], ...]
    share: float  # fraction of the source's weight (1.0 without subsets)
    backend: str = "plain"  # plain | datasets (see rewarm.data.hf) | megatron (files are .bin/.idx prefixes)
    hf_dataset: str | None = None
    hf_split: str = "train"
    shuffle_docs: bool = False  # megatron: a seeded document order per pass
    append_eos: bool = False
    first_row: int = -1  # megatron: >= 0 reads Pythia's rows from this row on


@dataclass(frozen=True)
class Plan:
    """Everything a logical stream needs; picklable, shipped to DataLoader workers."""

    subs: tuple[SubSource, ...]
    source_names: tuple[str, ...]
    seq_len: int
    micro_batch_size: int
    seed: int
    rank: int
    world_size: int
    streams: int  # S, over all ranks
    workers: int  # DataLoader workers per rank (at least 1: the in-process reader counts as one)
    grad_accum_steps: int
    mix_unit: str
    document_mask: bool
    on_bad_record: str
    on_source_end: str
    batch_docs: int
    eos_id: int
    vocab_size: int = 0  # pre-tokenized ids must be below it (0: unchecked)
    data_order: int = DATA_ORDER_VERSION  # 2: a state written before the seeded readers goes on in its order

    @property
    def rows_per_step(self) -> int:
        """G: rows of one optimizer step over all ranks."""
        return self.world_size * self.micro_batch_size * self.grad_accum_steps

    @property
    def local_streams(self) -> int:
        """L = S / W: the streams of this rank; its local stream t is global stream rank + W * t."""
        return self.streams // self.world_size

    def global_stream(self, t: int) -> int:
        return self.rank + self.world_size * t


def stream_of(g: int, streams: int) -> tuple[int, int]:
    """(stream, row of that stream) of global row ``g``."""
    return g % streams, g // streams


def units_for(n_files: int, reader: int, readers: int) -> tuple[tuple[int, int, int], ...]:
    """(file index, offset, stride) units owned by ``reader`` of ``readers``; see the module docstring."""
    m = math.ceil(readers / n_files)
    return tuple((u // m, u % m, m) for u in range(n_files * m) if u % readers == reader)


def schedule_position(plan: Plan, step: int) -> float:
    """Position of optimizer step ``step`` in the mix-schedule unit: the step, or the tokens before it."""
    if plan.mix_unit == "steps":
        return float(step)
    return float(step * plan.rows_per_step * plan.seq_len)


def weights_at(plan: Plan, step: int) -> np.ndarray:
    """Unnormalised weights (n_subs,) of the sub-streams at optimizer step ``step``."""
    x = schedule_position(plan, step)
    out = np.empty(len(plan.subs))
    for i, sub in enumerate(plan.subs):
        if sub.knots:
            at, w = zip(*sub.knots, strict=True)
            out[i] = float(np.interp(x, at, w)) * sub.share
        else:
            out[i] = sub.weight * sub.share
    return out


class RowDraw:
    """The sub-stream of each row of one stream: deterministic in (seed, stream, row); weights per step."""

    def __init__(self, plan: Plan, stream: int) -> None:
        self.plan, self.stream = plan, stream
        self._block, self._u = -1, np.empty(0)
        self._step, self._cum = -1, np.empty(0)

    def choose(self, p: int) -> int:
        plan = self.plan
        if len(plan.subs) == 1:  # one sub-stream: every draw picks it (the generator is the costly part)
            return 0
        step = (p * plan.streams + self.stream) // plan.rows_per_step
        if step != self._step:
            w = weights_at(plan, step)
            if w.sum() <= 0:
                raise ValueError(f"all source weights are 0 at step {step}; check data.train.*.weight_schedule")
            self._step, self._cum = step, np.cumsum(w)
        block = p // DRAW_BLOCK
        if block != self._block:
            self._block = block
            self._u = np.random.default_rng([plan.seed, self.stream, block]).random(DRAW_BLOCK)
        u = self._u[p % DRAW_BLOCK] * self._cum[-1]
        return min(int(np.searchsorted(self._cum, u, side="right")), len(self._cum) - 1)


class RowMaker:
    """Makes the rows of global stream ``stream``, in order; ``state()`` resumes it exactly."""

    def __init__(self, plan: Plan, stream: int, tokenizer: Any, state: dict[str, Any] | None = None,
                 pool: Any = None, in_process: int = 1, peers: tuple[int, ...] = ()) -> None:
        self.plan, self.stream, self.tokenizer = plan, stream, tokenizer
        state = state or {"pos": 0, "subs": {}}
        self.pos = int(state["pos"])
        self._cursors: dict[str, dict[str, Any]] = {k: dict(v) for k, v in state["subs"].items()}
        self._subs: dict[int, SubStream] = {}
        self._draw = RowDraw(plan, stream)
        self._pool = pool if pool is not None else tokenize_pool()
        self._in_process = in_process  # streams read by this process: their read-ahead is shared out
        self._peers = peers  # the global streams of this process (rewarm.data.shared)

    def state(self) -> dict[str, Any]:
        cursors = dict(self._cursors)
        cursors.update({self.plan.subs[i].key: s.state() for i, s in self._subs.items()})
        return {"pos": self.pos, "subs": cursors}

    def next_row(self) -> tuple[np.ndarray, int, list[int]]:
        """(row (seq_len + 1,), sub-stream index, document starts in it (> 0)) of the stream's next row.
        Raises packing.SourceExhausted when a source ends with on_source_end=stop."""
        i = self._draw.choose(self.pos)
        if self.plan.document_mask:
            row, starts = self._sub(i).next_row()
        else:  # no document starts to find: the sub-stream's fast path (a slice of its chunk)
            row, starts = self._sub(i).take_row(), []
        self.pos += 1
        return row, i, starts

    def sub_cursor(self, i: int) -> dict[str, Any]:
        return self._subs[i].state()

    def _sub(self, i: int) -> SubStream:
        if i not in self._subs:
            sub, plan = self.plan.subs[i], self.plan
            spec = sub_spec(plan, i, self.stream, self._in_process, self._peers)
            self._subs[i] = SubStream(spec, self.tokenizer, plan.eos_id, plan.seq_len,
                                      stream_batch_docs(plan.batch_docs, self._in_process),
                                      self._cursors.get(sub.key), self._pool)
        return self._subs[i]


def sub_spec(plan: Plan, i: int, stream: int, in_process: int, peers: tuple[int, ...] = ()) -> SubStreamSpec:
    """What global stream ``stream`` reads of sub-stream ``i`` (``in_process``: streams read by its process;
    ``peers``: the global streams of that process, which share one decompression of a file)."""
    sub = plan.subs[i]
    units = ((0, 0, 1),) if sub.backend == "datasets" else units_for(len(sub.files), reader_of(plan, sub, stream),
                                                                     plan.streams)
    peers = tuple(reader_of(plan, sub, p) for p in peers)  # the units the peers read are their readers' units
    return SubStreamSpec(sub.key, sub.files, units, sub.text_field, sub.subset_field, sub.subsets,
                         sub.shuffle_files, plan.on_source_end, plan.on_bad_record, plan.seed, sub.backend,
                         sub.hf_dataset, sub.hf_split, stream, plan.streams, shuffle_docs=sub.shuffle_docs,
                         append_eos=sub.append_eos, first_row=sub.first_row, row_len=plan.seq_len + 1,
                         vocab_size=plan.vocab_size, share=in_process, peers=peers)


def reader_of(plan: Plan, sub: SubSource, stream: int) -> int:
    """The reader (of ``plan.streams``) whose file parts global stream ``stream`` reads: a permutation seeded by
    (seed, source) for text sources with ``shuffle_files`` (data order 3), else the stream itself. Pre-tokenized
    sources keep theirs (their documents are shuffled by seed, and Pythia's rows must stay in place)."""
    if plan.data_order < 3 or not sub.shuffle_files or sub.backend != "plain":
        return stream
    return _readers(plan.seed, sub.key, plan.streams)[stream]


@functools.lru_cache(maxsize=64)
def _readers(seed: int, key: str, streams: int) -> tuple[int, ...]:
    return tuple(int(r) for r in np.random.default_rng([seed, key_hash(key), 3]).permutation(streams))


def stream_batch_docs(batch_docs: int, in_process: int) -> int:
    """Documents a stream reads and tokenizes at once when ``in_process`` streams share a process: the
    process's documents in flight stay near ``batch_docs`` x 4 (at least 16 per call)."""
    return max(16, min(batch_docs, math.ceil(4 * batch_docs / in_process)))


def document_positions(starts: list[list[int]], seq_len: int) -> np.ndarray:
    """position_ids (B, T) of the input tokens: 0 at row start and at each document start, then +1."""
    idx = np.arange(seq_len)
    out = np.empty((len(starts), seq_len), np.int64)
    for b, doc_starts in enumerate(starts):
        marks = np.zeros(seq_len, np.int64)
        cut = [p for p in doc_starts if p < seq_len]
        marks[cut] = idx[cut]
        out[b] = idx - np.maximum.accumulate(marks)
    return out
