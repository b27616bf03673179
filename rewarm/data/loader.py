"""The training loader: logical streams run in DataLoader workers, batches carry the pipeline state.

Per rank there are ``L = max(1, num_workers)`` logical streams; per-rank batch ``k`` is made by stream
``k % L``. torch's DataLoader hands out batches of an IterableDataset round-robin over its workers, so
worker ``w`` runs stream ``(k0 + w) % L`` where ``k0`` is the number of batches already delivered. Each
batch carries its stream's cursor; the loader keeps the cursor of the last *delivered* batch of every
stream, so ``batch["data_state"]`` is exact even though workers run ahead (prefetch).

What a worker sends is cheap to hand over: compact numpy batches (``_compact``: uint16 token ids where they
fit, no separate labels), ``WORKER_BUNDLE`` consecutive batches of its stream per DataLoader item, pickled
through the worker's pipe. torch's default, shared-memory tensors, costs a socket connection and a memory
mapping per tensor. The main process puts the bundles back in per-rank order (``_interleave``) and makes
the model's int64 tensors (``model_inputs``). Measured with benchmarks/data_throughput.py.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import itertools
import json
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from rewarm.data.config import DataConfig
from rewarm.data.mixing import BatchMaker, Plan, SubSource
from rewarm.data.packing import SourceExhausted
from rewarm.data.sources import expand_paths, file_signature, is_remote
from rewarm.errors import ResumeError

logger = logging.getLogger(__name__)
STATE_VERSION = 1
# Batches per item a worker sends: the DataLoader's own cost per item (about 0.3 ms of CPU over the two
# processes: its queues, pickling, a profiler scope) is paid once per WORKER_BUNDLE batches.
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
        self._batches = 0
        self._streams: list[dict[str, Any]] = [{"batches": 0, "subs": {}} for _ in range(plan.streams_per_rank)]

    def fingerprint(self) -> str:
        return self._fingerprint

    def layout(self) -> dict[str, int]:
        p = self.plan
        return {"world_size": p.world_size, "streams_per_rank": p.streams_per_rank, "seed": p.seed,
                "micro_batch_size": p.micro_batch_size, "grad_accum_steps": p.grad_accum_steps,
                "seq_len": p.seq_len}

    def state_dict(self) -> dict[str, Any]:
        """Complete state after the last delivered batch (plain python types; pickle / json friendly)."""
        rank_state = {"batches": self._batches, "streams": _copy_streams(self._streams)}
        return {"version": STATE_VERSION, "fingerprint": self._fingerprint, "layout": self.layout(),
                "source_names": list(self.source_names), "sub_sources": {s.key: s.source_id for s in self.plan.subs},
                "ranks": {str(self.plan.rank): rank_state}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the batch that carried ``state``. Raises ResumeError on a different data config or layout."""
        check_compatible(state, self._fingerprint, self.layout(), self.plan.rank)
        mine = state["ranks"][str(self.plan.rank)]
        self._batches = int(mine["batches"])
        self._streams = copy.deepcopy(mine["streams"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        items = self._iter_in_process() if self.cfg.num_workers == 0 else self._iter_workers()
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

    def _iter_in_process(self) -> Iterator[dict[str, Any]]:
        yield from _stream_items(self.plan, self.tokenizer, 0, self._streams[0])

    def _iter_workers(self) -> Iterator[dict[str, Any]]:
        dataset = _WorkerDataset(self.plan, _backend(self.tokenizer), self._batches, copy.deepcopy(self._streams))
        ctx = _start_method(self.cfg)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.cfg.num_workers,
                                             multiprocessing_context=ctx, worker_init_fn=_worker_init,
                                             prefetch_factor=2, collate_fn=_as_is)
        with _single_threaded_fork(ctx.get_start_method() == "fork"):
            iterator = iter(loader)  # workers start here
        try:
            yield from _interleave(iterator, self.plan.streams_per_rank)
        finally:  # an error or an abandoned iteration: stop the workers now (they ignore SIGTERM, see below)
            getattr(iterator, "_shutdown_workers", lambda: None)()  # torch: the multi-worker iterator


def _copy_streams(streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the streams' cursors (dicts of ints two levels deep): what deepcopy does, 10x cheaper."""
    return [{"batches": s["batches"], "subs": {k: dict(c) for k, c in s["subs"].items()}} for s in streams]


def check_compatible(state: dict[str, Any], fingerprint: str, layout: dict[str, int], rank: int) -> None:
    """Refuse a state from different data, a different layout, or without this rank's part."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ResumeError(f"data state: unknown format (expected version {STATE_VERSION})")
    if state["fingerprint"] != fingerprint:
        raise ResumeError(f"data state was saved with a different data config (fingerprint {state['fingerprint']}, "
                          f"now {fingerprint}): the data.train sources, their files, seq_len, document_mask, "
                          "on_bad_record, on_source_end, reader or the tokenizer changed; resume with the "
                          "original data config, or start a new run")
    diff = {k: (state["layout"].get(k), v) for k, v in layout.items() if state["layout"].get(k) != v}
    if diff:
        text = ", ".join(f"{k}: saved {a}, now {b}" for k, (a, b) in diff.items())
        raise ResumeError(f"data state was saved with a different layout ({text}); streams_per_rank = "
                          "max(1, data.num_workers). Resume with the same settings")
    if str(rank) not in state["ranks"]:
        raise ResumeError(f"data state holds ranks {sorted(state['ranks'])} but not rank {rank}; save the "
                          "state gathered over all ranks (rewarm.data.gather_state)")


def _stream_items(plan: Plan, tokenizer: Any, stream: int, state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Batches of one logical stream in compact form (``BatchMaker.make_batch``, narrowed by ``_compact``),
    each with its stream index and cursor after it; a last item ``{"_end": source}`` when a source ends."""
    maker = BatchMaker(plan, stream, _backend(tokenizer), state)
    while True:
        try:
            item: dict[str, Any] = _compact(maker.make_batch())
        except SourceExhausted as e:
            yield {"_end": str(e), "_stream": stream}
            return
        item["_stream"], item["_state"] = stream, maker.state()
        yield item


def _compact(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The narrowest dtype that holds the values (token ids < 65536: uint16, positions < 32768: int16): what a
    worker pickles through its pipe is then 4x smaller than int64."""
    out = dict(batch)
    if batch["tokens"].dtype != np.uint16 and batch["tokens"].size and int(batch["tokens"].max()) < 1 << 16:
        out["tokens"] = batch["tokens"].astype(np.uint16)
    if "position_ids" in batch and batch["position_ids"].shape[-1] <= 1 << 15:
        out["position_ids"] = batch["position_ids"].astype(np.int16)
    return out


def model_inputs(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The model's int64 tensors of a compact batch: ``input_ids`` and ``labels`` (B, T), the labels being the
    next tokens with -100 at ``masked``; ``source_ids`` (B,); ``position_ids`` (B, T) with document_mask."""
    tokens = torch.from_numpy(batch["tokens"].astype(np.int64))
    # labels get their own storage: with B = 1 the slice is already contiguous, and masking it in place would
    # write -100 into input_ids
    out = {"input_ids": tokens[:, :-1].contiguous(), "labels": tokens[:, 1:].clone(memory_format=torch.contiguous_format),
           "source_ids": torch.from_numpy(batch["source_ids"].astype(np.int64, copy=False))}
    if "position_ids" in batch:
        out["position_ids"] = torch.from_numpy(batch["position_ids"].astype(np.int64))
        out["labels"].view(-1)[torch.from_numpy(batch["masked"])] = -100
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


def _as_is(item: Any) -> Any:
    """The DataLoader's collate_fn: batches stay numpy arrays in the worker (see ``_stream_items``)."""
    return item


def _backend(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer (or the object itself)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def _start_method(cfg: DataConfig) -> Any:
    """auto: one worker -> forkserver, several -> fork. A forked child of a process whose tokenizer already
    ran threads must tokenize single-threaded (tokenizers disables its thread pool there), which halves the
    speed of a lone worker; with several workers each is single-threaded anyway and fork starts fastest.
    The forkserver preloads this module (torch) once, so later worker starts are cheap."""
    import multiprocessing

    method = cfg.worker_start if cfg.worker_start != "auto" else ("forkserver" if cfg.num_workers == 1 else "fork")
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ctx


@contextlib.contextmanager
def _single_threaded_fork(active: bool) -> Iterator[None]:
    """While forking workers, TOKENIZERS_PARALLELISM=false: forked children tokenize single-threaded
    (tokenizers would force it after its threads ran anyway, with a warning per worker)."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    if active:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if active:
            if old is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = old


def _kill_leftover_workers() -> None:
    """Workers ignore SIGTERM (``_worker_init``): multiprocessing's own exit handler would ``terminate()`` a
    worker still alive at interpreter exit and then wait for it forever. This handler is registered after
    multiprocessing's, so it runs first (atexit is last-in first-out) and kills them for good."""
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


atexit.register(_kill_leftover_workers)


def _worker_init(worker_id: int) -> None:
    # SLURM signals every process of the job step: the main process checkpoints, stops and shuts the workers down
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    info = torch.utils.data.get_worker_info()
    if info is not None and info.num_workers > 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # several workers already use the cores
    torch.set_num_threads(1)
    own_tqdm_lock()


def own_tqdm_lock() -> None:
    """Give this (worker) process a tqdm write lock of its own. tqdm's lock is a multiprocessing semaphore that
    forked processes share with their parent, and `datasets` takes it in the worker's reader thread each time it
    opens a stream (a progress bar, even a disabled one). A worker shut down inside that section (the loader
    discarded mid-stream, as every resume and validation does) left the semaphore held for good: every later
    worker and the parent's own tqdm then waited on it forever (seen as a hung test)."""
    import sys
    import threading

    std = sys.modules.get("tqdm.std")
    if std is None:  # not imported yet: the lock this process creates is its own
        return
    lock, classes = threading.RLock(), [std.tqdm]
    while classes:
        cls = classes.pop()
        classes += cls.__subclasses__()
        if cls is std.tqdm or "_lock" in vars(cls):  # a subclass may hold its own (tqdm's ensure_lock sets one)
            cls.set_lock(lock)


def build_plan(cfg: DataConfig, tokenizer: Any, *, micro_batch_size: int, seed: int, rank: int, world_size: int,
               grad_accum_steps: int = 1, vocab_size: int | None = None) -> Plan:
    subs, names = make_subs(cfg)
    vocab = vocab_size or vocab_len(tokenizer)
    if any(s.backend == "megatron" for s in subs):
        _check_pretokenized(cfg, tokenizer, subs)
    return Plan(subs=subs, source_names=names, seq_len=cfg.seq_len, micro_batch_size=micro_batch_size, seed=seed,
                rank=rank, world_size=world_size, streams_per_rank=max(1, cfg.num_workers),
                grad_accum_steps=grad_accum_steps, mix_unit=cfg.mix_schedule_unit, document_mask=cfg.document_mask,
                on_bad_record=cfg.on_bad_record, on_source_end=cfg.on_source_end, batch_docs=cfg.tokenize_batch_docs,
                eos_id=eos_of(tokenizer), vocab_size=vocab)


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
