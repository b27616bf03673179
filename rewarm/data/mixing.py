"""Mixing: which sub-stream each row comes from, and how one logical stream makes its batches.

Mixing is **per row**: row j of per-rank batch k is drawn from the sources with probabilities given by the
(possibly scheduled) weights at batch k, using a generator seeded by ``(seed, rank, k)`` only, so the mix
does not depend on worker count or timing. Sources with ``subsets`` are split into one sub-stream per
subset (each reads the source's files and keeps its subset); its weight is the source weight times the
subset's share.

Reads are disjoint: reader ``rank * L + s`` (``L`` logical streams per rank) owns the *units* ``u`` with
``u % R == reader`` among ``F * m`` units (file ``u // m``, records ``i % m == u % m``), where ``R`` =
readers over all ranks, ``F`` = files of the source and ``m = ceil(R / F)``. Every record belongs to
exactly one unit, so each pass uses every document exactly once across ranks and workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewarm.data.packing import SubStream, SubStreamSpec, tokenize_pool


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
    streams_per_rank: int
    grad_accum_steps: int
    mix_unit: str
    document_mask: bool
    on_bad_record: str
    on_source_end: str
    batch_docs: int
    eos_id: int
    vocab_size: int = 0  # pre-tokenized ids must be below it (0: unchecked)

    @property
    def readers(self) -> int:
        return self.world_size * self.streams_per_rank


def units_for(n_files: int, reader: int, readers: int) -> tuple[tuple[int, int, int], ...]:
    """(file index, offset, stride) units owned by ``reader`` of ``readers``; see the module docstring."""
    m = math.ceil(readers / n_files)
    return tuple((u // m, u % m, m) for u in range(n_files * m) if u % readers == reader)


def schedule_position(plan: Plan, k: int) -> float:
    """Position of per-rank batch ``k`` in the mix-schedule unit: optimizer step, or tokens before it."""
    if plan.mix_unit == "steps":
        return float(k // plan.grad_accum_steps)
    return float(k * plan.world_size * plan.micro_batch_size * plan.seq_len)


def weights_at(plan: Plan, k: int) -> np.ndarray:
    """Unnormalised weights (n_subs,) of the sub-streams for per-rank batch ``k``."""
    x = schedule_position(plan, k)
    out = np.empty(len(plan.subs))
    for i, sub in enumerate(plan.subs):
        if sub.knots:
            at, w = zip(*sub.knots, strict=True)
            out[i] = float(np.interp(x, at, w)) * sub.share
        else:
            out[i] = sub.weight * sub.share
    return out


def choose_rows(plan: Plan, k: int) -> np.ndarray:
    """Sub-stream index (B,) of each row of per-rank batch ``k``; deterministic in (seed, rank, k)."""
    w = weights_at(plan, k)
    if w.sum() <= 0:
        raise ValueError(f"all source weights are 0 at batch {k}; check data.train.*.weight_schedule")
    if len(w) == 1:  # one sub-stream: every draw picks it (the generator is the costly part)
        return np.zeros(plan.micro_batch_size, np.int64)
    cum = np.cumsum(w)
    u = np.random.default_rng([plan.seed, plan.rank, k]).random(plan.micro_batch_size) * cum[-1]
    return np.minimum(np.searchsorted(cum, u, side="right"), len(w) - 1)


class BatchMaker:
    """Makes the batches of logical stream ``s`` of this rank: per-rank batch indices s, s + L, s + 2L, ..."""

    def __init__(self, plan: Plan, stream: int, tokenizer: Any, state: dict[str, Any] | None = None) -> None:
        self.plan, self.stream, self.tokenizer = plan, stream, tokenizer
        state = state or {"batches": 0, "subs": {}}
        self.batches = int(state["batches"])
        self._cursors: dict[str, dict[str, int]] = {k: dict(v) for k, v in state["subs"].items()}
        self._subs: dict[int, SubStream] = {}
        self._pool = tokenize_pool()  # shared by the sub-streams: a bound on tokenizing threads and memory

    def state(self) -> dict[str, Any]:
        cursors = dict(self._cursors)
        cursors.update({self.plan.subs[i].key: s.state() for i, s in self._subs.items()})
        return {"batches": self.batches, "subs": cursors}

    @property
    def next_index(self) -> int:
        """Per-rank index of the next batch this stream makes."""
        return self.stream + self.batches * self.plan.streams_per_rank

    def make_batch(self) -> dict[str, np.ndarray]:
        """The next per-rank batch, compact (what a worker sends; ``loader.model_inputs`` makes the model's
        tensors of it): ``tokens`` (B, T + 1) int32, the rows; ``source_ids`` (B,) int64; with document_mask
        also ``position_ids`` (B, T) int64 and ``masked`` (n,) int64, the flat indices into the (B, T) labels
        of the predictions that cross a document boundary (the next token starts a document).
        Raises packing.SourceExhausted when a source ends with on_source_end=stop."""
        plan, k = self.plan, self.next_index
        choice = choose_rows(plan, k)
        # each sub-stream's rows in one call (a sub-stream's rows do not depend on the others')
        first = int(choice[0])
        if (choice == first).all():  # one sub-stream: its rows are the batch (a view; model_inputs copies it)
            tokens, starts = self._sub(first).next_rows(len(choice), plan.document_mask)
        else:
            tokens, starts = self._gather_rows(choice)
        source_ids = np.asarray([sub.source_id for sub in self.plan.subs], np.int64)[choice]
        batch = {"tokens": tokens, "source_ids": source_ids}
        if plan.document_mask:
            batch["position_ids"] = document_positions(starts, plan.seq_len)
            batch["masked"] = np.asarray([b * plan.seq_len + p - 1 for b, doc_starts in enumerate(starts)
                                          for p in doc_starts if p >= 1], np.int64)
        self.batches += 1
        return batch

    def _gather_rows(self, choice: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
        """Rows of several sub-streams, placed by ``choice``."""
        parts = [(np.flatnonzero(choice == i), i) for i in np.unique(choice).tolist()]
        got = [(idx, *self._sub(i).next_rows(len(idx), self.plan.document_mask)) for idx, i in parts]
        tokens = np.empty((len(choice), self.plan.seq_len + 1), np.result_type(*(r.dtype for _, r, _ in got)))
        starts: list[list[int]] = [[] for _ in range(len(choice))]
        for idx, rows, doc_starts in got:
            tokens[idx] = rows
            for j, s in zip(idx.tolist(), doc_starts, strict=True):
                starts[j] = s
        return tokens, starts

    def _sub(self, i: int) -> SubStream:
        if i not in self._subs:
            sub, plan = self.plan.subs[i], self.plan
            reader = plan.rank * plan.streams_per_rank + self.stream
            units = ((0, 0, 1),) if sub.backend == "datasets" else units_for(len(sub.files), reader, plan.readers)
            spec = SubStreamSpec(sub.key, sub.files, units, sub.text_field, sub.subset_field, sub.subsets,
                                 sub.shuffle_files, plan.on_source_end, plan.on_bad_record, plan.seed, sub.backend,
                                 sub.hf_dataset, sub.hf_split, reader, plan.readers, shuffle_docs=sub.shuffle_docs,
                                 append_eos=sub.append_eos, first_row=sub.first_row, row_len=plan.seq_len + 1,
                                 vocab_size=plan.vocab_size)
            self._subs[i] = SubStream(spec, self.tokenizer, plan.eos_id, plan.seq_len, plan.batch_docs,
                                      self._cursors.get(sub.key), self._pool)
        return self._subs[i]


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
