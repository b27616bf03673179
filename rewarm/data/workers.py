"""DataLoader plumbing shared by the training loader and its version-1 twin (rewarm.data.legacy): worker
start method and init, the model's int64 tensors of a compact batch, and a DataLoader run over a dataset of
items that stops its workers when abandoned."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from rewarm.data.config import DataConfig


def run_workers(dataset: Any, cfg: DataConfig) -> Iterator[Any]:
    """The items of ``dataset`` (an IterableDataset) from ``cfg.num_workers`` DataLoader workers, in the
    DataLoader's order; an error or an abandoned iteration stops the workers at once."""
    ctx = _start_method(cfg)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=cfg.num_workers,
                                         multiprocessing_context=ctx, worker_init_fn=_worker_init,
                                         prefetch_factor=2, collate_fn=_as_is)
    with _single_threaded_fork(ctx.get_start_method() == "fork"):
        iterator = iter(loader)  # workers start here
    try:
        yield from iterator
    finally:  # they ignore SIGTERM, see _worker_init
        getattr(iterator, "_shutdown_workers", lambda: None)()  # torch: the multi-worker iterator


def model_inputs(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The model's int64 tensors of a compact batch: ``input_ids`` and ``labels`` (B, T), the labels being the
    next tokens with -100 at ``masked``; ``source_ids`` (B,); ``position_ids`` (B, T) with document_mask."""
    tokens = batch["tokens"]
    # each made int64 straight from the compact rows (one pass each, no int64 copy of the whole rows first);
    # labels get their own storage, so masking them never writes into input_ids
    out = {"input_ids": torch.from_numpy(tokens[:, :-1].astype(np.int64, order="C")),
           "labels": torch.from_numpy(tokens[:, 1:].astype(np.int64, order="C")),
           "source_ids": torch.from_numpy(batch["source_ids"].astype(np.int64, copy=False))}
    if "position_ids" in batch:
        out["position_ids"] = torch.from_numpy(batch["position_ids"].astype(np.int64))
        out["labels"].view(-1)[torch.from_numpy(batch["masked"])] = -100
    return out


def _as_is(item: Any) -> Any:
    """The DataLoader's collate_fn: batches stay numpy arrays in the worker (see ``_stream_items``)."""
    return item


def _backend(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer (or the object itself)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def _start_method(cfg: DataConfig) -> Any:
    """auto: one worker -> forkserver, several -> fork. Every worker tokenizes single-threaded on its own
    threads (``_worker_init``), so fork costs none of a lone worker's speed; the forkserver keeps a lone worker
    out of the threads of the training process (wandb, the tokenizer's pool) and preloads this module (torch)
    once, so later worker starts are cheap. With several workers fork starts fastest."""
    import multiprocessing

    method = cfg.worker_start if cfg.worker_start != "auto" else ("forkserver" if cfg.num_workers == 1 else "fork")
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["rewarm.data.loader"])
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
    # A worker tokenizes single-threaded on threads of its own, one per core it has (rewarm.data.packing
    # tokenize_pool): faster than the tokenizer's own threads, which split each small call over the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
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


