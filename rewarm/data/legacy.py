"""The data order of version 1 (before data.streams): kept so that a checkpoint written then resumes, on the
world size it was written with, exactly as it would have (its batches, and its states of version 1).

Per rank there were ``L = max(1, num_workers)`` logical streams; per-rank batch ``k`` was made by stream
``k % L``, its rows drawn from generators seeded by ``(seed, rank, k)``; reader ``rank * L + s`` of ``W * L``
owned the units ``u % (W * L) == reader``. torch's DataLoader hands out items round-robin over its workers, so
worker ``w`` ran stream ``(k0 + w) % L``, ``k0`` batches being already delivered; each sent ``WORKER_BUNDLE``
consecutive batches of its stream per item, put back in per-rank order by ``_interleave``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rewarm.data.config import DataConfig
from rewarm.data.mixing import SubSource, document_positions, units_for
from rewarm.data.packing import SourceExhausted, SubStream, SubStreamSpec, tokenize_pool
from rewarm.data.workers import model_inputs, run_workers
from rewarm.errors import ResumeError

logger = logging.getLogger(__name__)
STATE_VERSION = 1
WORKER_BUNDLE = 4


@dataclass(frozen=True)
class Plan:
    """Everything a version-1 logical stream needs; picklable, shipped to DataLoader workers."""

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
    vocab_size: int = 0

    @property
    def readers(self) -> int:
        return self.world_size * self.streams_per_rank


def weights_at(plan: Plan, k: int) -> np.ndarray:
    """Unnormalised weights (n_subs,) for per-rank batch ``k`` (its optimizer step, or the tokens before it)."""
    x = float(k // plan.grad_accum_steps) if plan.mix_unit == "steps" else float(
        k * plan.world_size * plan.micro_batch_size * plan.seq_len)
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
    if len(w) == 1:
        return np.zeros(plan.micro_batch_size, np.int64)
    cum = np.cumsum(w)
    u = np.random.default_rng([plan.seed, plan.rank, k]).random(plan.micro_batch_size) * cum[-1]
    return np.minimum(np.searchsorted(cum, u, side="right"), len(w) - 1)


class BatchMaker:  # the version-1 BatchMaker, unchanged
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


class LegacyLoader:
    """The version-1 loader of one rank, continuing ``state`` (a version-1 state of this world size)."""

    def __init__(self, cfg: DataConfig, tokenizer: Any, plan: Plan, fingerprint: str, state: dict[str, Any]) -> None:
        self.cfg, self.tokenizer, self.plan, self._fingerprint = cfg, tokenizer, plan, fingerprint
        check_compatible(state, fingerprint, self.layout(), plan.rank)
        mine = state["ranks"][str(plan.rank)]
        self._batches = int(mine["batches"])
        self._streams = _copy_streams(mine["streams"])

    def layout(self) -> dict[str, int]:
        p = self.plan
        return {"world_size": p.world_size, "streams_per_rank": p.streams_per_rank, "seed": p.seed,
                "micro_batch_size": p.micro_batch_size, "grad_accum_steps": p.grad_accum_steps, "seq_len": p.seq_len}

    def state_dict(self) -> dict[str, Any]:
        rank_state = {"batches": self._batches, "streams": _copy_streams(self._streams)}
        return {"version": STATE_VERSION, "fingerprint": self._fingerprint, "layout": self.layout(),
                "source_names": list(self.plan.source_names), "sub_sources": {s.key: s.source_id for s in self.plan.subs},
                "ranks": {str(self.plan.rank): rank_state}}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        backend = getattr(self.tokenizer, "backend_tokenizer", self.tokenizer)
        if self.cfg.num_workers == 0:
            items: Iterator[dict[str, Any]] = _stream_items(self.plan, backend, 0, self._streams[0])
        else:
            dataset = _WorkerDataset(self.plan, backend, self._batches, _copy_streams(self._streams))
            items = _interleave(run_workers(dataset, self.cfg), self.plan.streams_per_rank)
        for item in items:
            if "_end" in item:
                logger.info("training stream of rank %d ended: source %s is exhausted (data.on_source_end=stop)",
                            self.plan.rank, item["_end"])
                return
            self._streams[item.pop("_stream")] = item.pop("_state")
            batch: dict[str, Any] = model_inputs(item)
            self._batches += 1
            batch["data_state"] = self.state_dict()
            yield batch


def _copy_streams(streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"batches": s["batches"], "subs": {k: dict(c) for k, c in s["subs"].items()}} for s in streams]


def check_compatible(state: dict[str, Any], fingerprint: str, layout: dict[str, int], rank: int) -> None:
    """Refuse a version-1 state from different data, a different layout, or without this rank's part."""
    if state["fingerprint"] != fingerprint:
        raise ResumeError(f"data state was saved with a different data config (fingerprint {state['fingerprint']}, "
                          f"now {fingerprint}): resume with the original data config, or start a new run")
    diff = {k: (state["layout"].get(k), v) for k, v in layout.items() if state["layout"].get(k) != v}
    if diff:
        text = ", ".join(f"{k}: saved {a}, now {b}" for k, (a, b) in diff.items())
        raise ResumeError(f"data state (version 1, before data.streams) was saved with a different layout ({text}); "
                          "it resumes only with the same devices, num_workers, micro_batch_size and accumulation")
    if str(rank) not in state["ranks"]:
        raise ResumeError(f"data state holds ranks {sorted(state['ranks'])} but not rank {rank}; save the "
                          "state gathered over all ranks (rewarm.data.gather_state)")


def _stream_items(plan: Plan, tokenizer: Any, stream: int, state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Batches of one logical stream in compact form (``BatchMaker.make_batch``, narrowed by ``_compact``),
    each with its stream index and cursor after it; a last item ``{"_end": source}`` when a source ends."""
    maker = BatchMaker(plan, stream, getattr(tokenizer, "backend_tokenizer", tokenizer), state)
    while True:
        try:
            item: dict[str, Any] = _compact(maker.make_batch())
        except SourceExhausted as e:
            yield {"_end": str(e), "_stream": stream}
            return
        item["_stream"], item["_state"] = stream, maker.state()
        yield item


def _compact(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The narrowest dtypes (uint16 token ids, int16 positions where they fit), as version 1 sent them."""
    out = dict(batch)
    if batch["tokens"].dtype != np.uint16 and batch["tokens"].size and int(batch["tokens"].max()) < 1 << 16:
        out["tokens"] = batch["tokens"].astype(np.uint16)
    if "position_ids" in batch and batch["position_ids"].shape[-1] <= 1 << 15:
        out["position_ids"] = batch["position_ids"].astype(np.int16)
    return out


class _WorkerDataset(torch.utils.data.IterableDataset):
    """Worker w runs logical stream (k0 + w) % L, so the round-robin order continues at batch k0."""

    def __init__(self, plan: Plan, tokenizer: Any, k0: int, streams: list[dict[str, Any]]) -> None:
        self.plan, self.tokenizer, self.k0, self.streams = plan, tokenizer, k0, streams

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        w = 0 if info is None else info.id
        s = (self.k0 + w) % self.plan.streams_per_rank
        yield from _bundles(_stream_items(self.plan, self.tokenizer, s, self.streams[s]), WORKER_BUNDLE)


def _bundles(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Lists of ``size`` consecutive items (fewer at the end, or before an error, which is raised after them)."""
    bundle: list[dict[str, Any]] = []
    try:
        for item in items:
            bundle.append(item)
            if len(bundle) == size:
                yield bundle
                bundle = []
    except Exception:
        if bundle:
            yield bundle
        raise
    if bundle:
        yield bundle


def _interleave(bundles: Iterator[list[dict[str, Any]]], streams: int) -> Iterator[dict[str, Any]]:
    """Per-rank batch order from the workers' bundles. The DataLoader hands out items round-robin over the
    workers, so a round of ``streams`` bundles holds batches k .. k + streams * size - 1, worker w's bundle the
    ones of stream (k + w) % streams: batch k + w + streams * t is its item t."""
    while True:
        round_ = list(itertools.islice(bundles, streams))
        if not round_:
            return
        for t in range(max(len(b) for b in round_)):
            for bundle in round_:
                if t < len(bundle):
                    yield bundle[t]
