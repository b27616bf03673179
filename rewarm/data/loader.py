"""The training loader: ``data.streams`` logical streams over all ranks, read in DataLoader workers; batches
carry the pipeline state.

The rows do not depend on the world size or the worker count (rewarm.data.mixing: global row ``g`` is row
``g // S`` of stream ``g % S``; rank ``i`` of ``W`` reads the global rows ``i + W * j``). A rank's streams are
split over its ``K = max(1, data.num_workers)`` reading processes in blocks (rewarm.data.rows); each process
makes its rows in order and sends them as items of several rows; the loader puts the rows back in order by
their row number and cuts micro-batches of ``micro_batch_size`` rows. Each row carries its stream's cursor;
the loader keeps the cursor of the last *delivered* row of every stream, so ``batch["data_state"]`` is exact
even though workers run ahead (prefetch), and it holds one cursor per global stream: a state saved by N ranks
loads on M ranks (rewarm.data.state).

What a worker sends is cheap to hand over: compact numpy rows (uint16 token ids where they fit, no separate
labels), ``WORKER_BUNDLE`` micro-batches' worth of rows per DataLoader item, pickled through the worker's
pipe. torch's default, shared-memory tensors, costs a socket connection and a memory mapping per tensor. The
main process makes the model's int64 tensors (``model_inputs``). Measured with benchmarks/data_throughput.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import Any

import torch

from rewarm.data.config import DataConfig, check_streams
from rewarm.data.legacy import LegacyLoader
from rewarm.data.legacy import Plan as LegacyPlan
from rewarm.data.mixing import Plan, SubSource
from rewarm.data.rows import micro_batch, process_items
from rewarm.data.sources import expand_paths, file_signature, is_remote
from rewarm.data.state import DATA_ORDER_VERSION, STATE_VERSION, rank_start, saved_world_size
from rewarm.data.workers import _backend, model_inputs, run_workers
from rewarm.errors import ConfigError, ResumeError

logger = logging.getLogger(__name__)
# Micro-batches' worth of rows per item a worker sends: the DataLoader's own cost per item (about 0.3 ms of
# CPU over the two processes: its queues, pickling, a profiler scope) is paid once per WORKER_BUNDLE batches.
WORKER_BUNDLE = 4


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of the fast tokenizer's JSON (vocabulary, merges, normalizer, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return hashlib.sha256(backend.to_str().encode()).hexdigest()[:16]


def vocab_len(tokenizer: Any) -> int:
    """Entries of a transformers tokenizer (added tokens included) or of a ``tokenizers.Tokenizer``."""
    return len(tokenizer) if hasattr(tokenizer, "__len__") else int(tokenizer.get_vocab_size())


def eos_of(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; documents must be separated by EOS")
    return int(eos)


def make_subs(cfg: DataConfig) -> tuple[tuple[SubSource, ...], tuple[str, ...]]:
    """Sub-streams of the training sources (sorted by source name, then subset) and the source names."""
    names = tuple(sorted(cfg.train))
    subs: list[SubSource] = []
    for sid, name in enumerate(names):
        src = cfg.train[name]
        if src.resolved_format() == "megatron":
            subs.append(_megatron_sub(cfg, name, sid))
            continue
        files = tuple(expand_paths(src.resolved_paths(), key=f"train.{name}.paths"))
        knots = tuple((k.at, k.weight) for k in src.weight_schedule)
        common = dict(source_id=sid, files=files, text_field=src.resolved_text_field(),
                      subset_field=src.resolved_subset_field(), shuffle_files=src.shuffle_files,
                      weight=src.weight, knots=knots, backend=backend_of(cfg, src.hf_dataset, files),
                      hf_dataset=src.hf_dataset, hf_split=src.hf_split)
        kept = {k: v for k, v in sorted(src.subsets.items()) if v > 0}
        if not kept:
            subs.append(SubSource(key=name, subsets=None, share=1.0, **common))  # type: ignore[arg-type]
        for subset, w in kept.items():
            share = w / sum(kept.values())
            subs.append(SubSource(key=f"{name}/{subset}", subsets=frozenset([subset]), share=share,
                                  **common))  # type: ignore[arg-type]
    return tuple(subs), names


def _megatron_sub(cfg: DataConfig, name: str, sid: int) -> SubSource:
    """A pre-tokenized source: its files are path prefixes, checked here (headers, sizes, Pythia's start row)."""
    from rewarm.data.megatron.sources import check_source, first_row

    src = cfg.train[name]
    prefixes = check_source(src, f"train.{name}", cfg.seq_len)
    shuffle = src.resolved_shuffle() == "documents"
    return SubSource(key=name, source_id=sid, files=prefixes, text_field="", subset_field=None, subsets=None,
                     shuffle_files=shuffle, weight=src.weight, knots=tuple((k.at, k.weight) for k in src.weight_schedule),
                     share=1.0, backend="megatron", shuffle_docs=shuffle, append_eos=src.append_eos,
                     first_row=first_row(src))


def sub_files(sub: SubSource) -> list[str]:
    """The files a sub-stream reads (a pre-tokenized prefix stands for its .idx and .bin or shards)."""
    if sub.backend != "megatron":
        return list(sub.files)
    from rewarm.data.megatron.sources import data_files

    return [f for prefix in sub.files for f in data_files(prefix)]


def backend_of(cfg: DataConfig, hf_dataset: str | None, files: tuple[str, ...]) -> str:
    """datasets for hub ids, remote files or data.reader=datasets; else the plain reader (faster on local files)."""
    if cfg.reader == "datasets" or hf_dataset or (cfg.reader == "auto" and any(is_remote(f) for f in files)):
        return "datasets"
    return "plain"


def data_fingerprint(cfg: DataConfig, tokenizer: Any, files: list[str]) -> str:
    """What the token stream depends on: the train sources (without their directories, so data moved to
    another mount still resumes), each file's name and size, seq_len, masking, policies, the tokenizer."""
    train = {n: {k: v for k, v in asdict(s).items() if k not in ("paths", "root")} for n, s in sorted(cfg.train.items())}
    payload = {"train": train, "files": [(os.path.basename(f), file_signature(f)[1]) for f in files],
               "seq_len": cfg.seq_len, "document_mask": cfg.document_mask, "on_source_end": cfg.on_source_end,
               "on_bad_record": cfg.on_bad_record, "mix_unit": cfg.mix_schedule_unit, "reader": cfg.reader,
               "tokenizer": tokenizer_hash(tokenizer)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TrainLoader:
    """Iterable of training batches (dicts of tensors + ``data_state``); see the module docstring."""

    def __init__(self, cfg: DataConfig, tokenizer: Any, plan: Plan) -> None:
        self.cfg, self.tokenizer, self.plan = cfg, tokenizer, plan
        self.source_names: list[str] = list(plan.source_names)
        files = list(dict.fromkeys(f for s in plan.subs for f in sub_files(s)))  # in source order
        self._fingerprint = data_fingerprint(cfg, tokenizer, files)
        self._row = 0  # the rank's next local row
        empty: dict[str, Any] = {"pos": 0, "subs": {}}
        self._streams: dict[int, dict[str, Any]] = dict.fromkeys(range(plan.local_streams), empty)
        self._keys = {t: str(plan.global_stream(t)) for t in range(plan.local_streams)}  # a state's stream keys
        self._legacy: LegacyLoader | None = None  # a version-1 state goes on in its own order

    def fingerprint(self) -> str:
        return self._fingerprint

    def layout(self) -> dict[str, int]:
        """What the token stream depends on besides the data config: must match on resume."""
        p = self.plan
        return {"streams": p.streams, "seed": p.seed, "seq_len": p.seq_len, "rows_per_step": p.rows_per_step}

    def world(self) -> dict[str, int]:
        """How this run reads the stream (may change on resume)."""
        p = self.plan
        return {"world_size": p.world_size, "workers": p.workers, "micro_batch_size": p.micro_batch_size,
                "grad_accum_steps": p.grad_accum_steps}

    def state_dict(self) -> dict[str, Any]:
        """State after the last delivered batch: this rank's streams (plain python types; pickle / json friendly).
        Stream states are never changed in place, so the copy is shallow."""
        if self._legacy is not None:
            return self._legacy.state_dict()
        p = self.plan
        return {"version": STATE_VERSION, "data_order": p.data_order, "fingerprint": self._fingerprint,
                "layout": self.layout(), "world": self.world(), "source_names": list(self.source_names),
                "sub_sources": {s.key: s.source_id for s in p.subs},
                "streams": {self._keys[t]: s for t, s in self._streams.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the rows ``state`` covers, on any world size that divides them. Raises ResumeError on a
        different data config or layout, or a state without every stream. A version-1 state (before data.streams)
        continues in its own order on the world size that wrote it (rewarm.data.legacy), and is refused on another."""
        if isinstance(state, dict) and state.get("version") == 1 and saved_world_size(state) == self.plan.world_size:
            self._legacy = LegacyLoader(self.cfg, self.tokenizer, legacy_plan(self.plan, self.cfg), self._fingerprint,
                                        state)
            logger.info("data state of version 1 (before data.streams): this run continues in its data order")
            return
        check_compatible(state, self._fingerprint, self.layout(), self.plan.world_size)
        order = int(state.get("data_order", 2))
        if order != self.plan.data_order:
            self.plan = replace(self.plan, data_order=order)
            logger.info("data state of data order %d (now %d): this run continues in its data order", order,
                        DATA_ORDER_VERSION)
        self._row, mine = rank_start(state, self.plan.streams, self.plan.world_size, self.plan.rank)
        self._streams = {t: {"pos": int(s["pos"]), "subs": {k: dict(c) for k, c in s["subs"].items()}}
                         for t, s in mine.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._legacy is not None:
            yield from self._legacy
            return
        items = self._iter_in_process() if self.cfg.num_workers == 0 else self._iter_workers()
        for refs in _in_row_order(items, self._row, self.plan.micro_batch_size, self.plan.rank):
            batch: dict[str, Any] = model_inputs(micro_batch(refs, self.plan.seq_len, self.plan.document_mask))
            self._advance(refs)
            batch["data_state"] = self.state_dict()
            yield batch

    def _advance(self, refs: list[tuple[dict[str, Any], int]]) -> None:
        for item, i in refs:
            t, key, cursor = item["cursors"][i]
            old = self._streams[t]
            if cursor is None:  # not the stream's last row in this (whole) item: its state follows
                self._streams[t] = {"pos": old["pos"] + 1, "subs": old["subs"]}
            elif key is None:  # all the stream's sub-stream cursors (rows.cursors_of)
                self._streams[t] = {"pos": old["pos"] + 1, "subs": {**old["subs"], **cursor}}
            else:
                self._streams[t] = {"pos": old["pos"] + 1, "subs": {**old["subs"], key: cursor}}
        self._row += len(refs)

    def _iter_in_process(self) -> Iterator[dict[str, Any]]:
        yield from process_items(self.plan, _backend(self.tokenizer), 0, self._row, self._streams,
                                 self.plan.micro_batch_size, compact=False, aligned=True)

    def _iter_workers(self) -> Iterator[dict[str, Any]]:
        yield from run_workers(_WorkerDataset(self.plan, _backend(self.tokenizer), self._row, dict(self._streams)),
                               self.cfg)


def _in_row_order(items: Iterator[dict[str, Any]], j0: int, size: int,
                  rank: int) -> Iterator[list[tuple[dict[str, Any], int]]]:
    """Micro-batches of ``size`` rows from ``j0`` on, as (item, index) references in row order, from items
    that arrive in any order. Ends at the first row a source could not make (on_source_end=stop)."""
    pending: dict[int, tuple[dict[str, Any], int]] = {}
    end: int | None = None
    j = j0
    while True:
        for row in range(j, j + size):
            while row not in pending:
                item = next(items, None) if end is None or row < end else None
                if item is None:
                    if end is not None:
                        logger.info("training stream of rank %d ended: a source is exhausted (data.on_source_end=stop)",
                                    rank)
                    return
                if "_end" in item:
                    end = item["row"] if end is None else min(end, item["row"])
                    continue
                rows = item["rows"].tolist()
                pending.update(zip(rows, zip(itertools.repeat(item), range(len(rows))), strict=True))  # row: (item, i)
        yield [pending.pop(row) for row in range(j, j + size)]
        j += size


def check_compatible(state: dict[str, Any], fingerprint: str, layout: dict[str, int], world_size: int) -> None:
    """Refuse a state of an unknown format, of the old data order (version 1), from different data, or of a
    different layout."""
    if not isinstance(state, dict) or state.get("version") not in (1, STATE_VERSION):
        raise ResumeError(f"data state: unknown format (expected version {STATE_VERSION})")
    if state["version"] == STATE_VERSION and state.get("data_order", 2) not in (2, DATA_ORDER_VERSION):
        raise ResumeError(f"data state of data order {state['data_order']}: this version reads orders 2 and "
                          f"{DATA_ORDER_VERSION}; resume with the rewarm version that wrote it")
    if state["version"] == 1:
        saved = saved_world_size(state)
        raise ResumeError(f"data state was written before data.streams (data order 1, per-rank streams) by {saved} "
                          f"rank(s): it resumes only on the world size it was written with ({saved} rank(s), now "
                          f"{world_size}); resume with {saved} rank(s), or start a new run")
    if state["fingerprint"] != fingerprint:
        raise ResumeError(f"data state was saved with a different data config (fingerprint {state['fingerprint']}, "
                          f"now {fingerprint}): the data.train sources, their files, seq_len, document_mask, "
                          "on_bad_record, on_source_end, reader or the tokenizer changed; resume with the "
                          "original data config, or start a new run")
    diff = {k: (state["layout"].get(k), v) for k, v in layout.items() if state["layout"].get(k) != v}
    if diff:
        text = ", ".join(f"{k}: saved {a}, now {b}" for k, (a, b) in diff.items())
        raise ResumeError(f"data state was saved with a different layout ({text}); data.streams, run.seed, "
                          "data.seq_len and the rows per optimizer step must stay. Resume with the same settings")


class _WorkerDataset(torch.utils.data.IterableDataset):
    """Worker w makes the rows of its block of the rank's streams (rewarm.data.rows), from local row j0 on."""

    def __init__(self, plan: Plan, tokenizer: Any, j0: int, streams: dict[int, dict[str, Any]]) -> None:
        self.plan, self.tokenizer, self.j0, self.streams = plan, tokenizer, j0, streams

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        w = 0 if info is None else info.id
        yield from process_items(self.plan, self.tokenizer, w, self.j0, self.streams,
                                 WORKER_BUNDLE * self.plan.micro_batch_size)


def build_plan(cfg: DataConfig, tokenizer: Any, *, micro_batch_size: int, seed: int, rank: int, world_size: int,
               grad_accum_steps: int = 1, vocab_size: int | None = None) -> Plan:
    subs, names = make_subs(cfg)
    vocab = vocab_size or vocab_len(tokenizer)
    if any(s.backend == "megatron" for s in subs):
        _check_pretokenized(cfg, tokenizer, subs)
    try:
        check_streams(cfg.streams, world_size, cfg.num_workers)
    except ConfigError as e:
        raise ConfigError(e.key.removeprefix("data."), e.message) from None
    return Plan(subs=subs, source_names=names, seq_len=cfg.seq_len, micro_batch_size=micro_batch_size, seed=seed,
                rank=rank, world_size=world_size, streams=cfg.streams, workers=max(1, cfg.num_workers),
                grad_accum_steps=grad_accum_steps, mix_unit=cfg.mix_schedule_unit, document_mask=cfg.document_mask,
                on_bad_record=cfg.on_bad_record, on_source_end=cfg.on_source_end, batch_docs=cfg.tokenize_batch_docs,
                eos_id=eos_of(tokenizer), vocab_size=vocab)


def legacy_plan(plan: Plan, cfg: DataConfig) -> LegacyPlan:
    """The version-1 plan of the same run (``max(1, num_workers)`` streams per rank)."""
    p = plan
    return LegacyPlan(subs=p.subs, source_names=p.source_names, seq_len=p.seq_len, micro_batch_size=p.micro_batch_size,
                      seed=p.seed, rank=p.rank, world_size=p.world_size, streams_per_rank=max(1, cfg.num_workers),
                      grad_accum_steps=p.grad_accum_steps, mix_unit=p.mix_unit, document_mask=p.document_mask,
                      on_bad_record=p.on_bad_record, on_source_end=p.on_source_end, batch_docs=p.batch_docs,
                      eos_id=p.eos_id, vocab_size=p.vocab_size)


def _check_pretokenized(cfg: DataConfig, tokenizer: Any, subs: tuple[SubSource, ...]) -> None:
    """Sidecars naming another tokenizer; document_mask on Pythia's rows without EOD tokens."""
    from rewarm.data.megatron.sources import check_sidecar, check_source

    digest = tokenizer_hash(tokenizer)
    for sub in subs:
        if sub.backend != "megatron":
            continue
        for prefix in sub.files:
            check_sidecar(prefix, digest, f"train.{sub.key}.paths")
        if sub.first_row >= 0 and cfg.document_mask:
            check_source(cfg.train[sub.key], f"train.{sub.key}", cfg.seq_len, eos_id=eos_of(tokenizer),
                         document_mask=True)
