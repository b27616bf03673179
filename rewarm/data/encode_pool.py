"""One tokenizing pool per reading process, shared by all its logical streams.

With ``data.streams`` streams in a process each stream reads small batches (rewarm.data.mixing
``stream_batch_docs``: 16 documents with 64 streams). Two ways to keep the cores busy with them:

* the tokenizer's own threads (TOKENIZERS_PARALLELISM on; reading in the training process): a Rust call has a
  fixed cost and splits its batch over the cores, so one call per small batch keeps those threads starved. The
  pool's threads each take every request waiting (up to ``gather_docs`` documents), encode them in one call and
  hand each request its own share;
* a single-threaded tokenizer (every DataLoader worker, rewarm.data.workers): one pool thread per core, each
  encoding one request per call (``gather_docs=0``). No call waits for a batch to gather and none is split.

Tokenization is per document, so each request's result is what its own call would give: how the requests are
grouped changes the speed only, never a token.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

MAX_DOCS = 1024  # documents per encode call at most (the bare tokenizer reaches its speed at a few hundred)


class _Work:
    """What the pool's threads share (they never reference the pool, so a dropped pool stops them)."""

    def __init__(self, gather_docs: int) -> None:
        self.gather_docs = gather_docs
        self.cond = threading.Condition()
        self.queue: deque[tuple[Any, list[str], int, Future, Callable]] = deque()
        self.stop = False


class EncodePool:
    """``submit(encode, tokenizer, texts, eos_id)`` like a ThreadPoolExecutor's, for ``encode``-like functions
    ``fn(tokenizer, texts, eos_id) -> (flat, starts)``; requests of the same tokenizer and function waiting at
    once are encoded in one call of ``fn`` on the concatenated texts (up to ``gather_docs`` documents; 0: one
    request per call), then cut back per request."""

    def __init__(self, threads: int, thread_name_prefix: str = "rewarm-tokenize", gather_docs: int = MAX_DOCS) -> None:
        self._work = _Work(gather_docs)
        self._threads = [threading.Thread(target=_run, args=(self._work,), daemon=True,
                                          name=f"{thread_name_prefix}_{i}") for i in range(threads)]
        self._started = False
        weakref.finalize(self, _stop, self._work)

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, fn: Callable, tokenizer: Any, texts: list[str], eos_id: int) -> Future:
        future: Future = Future()
        with self._work.cond:
            if not self._started:
                for t in self._threads:
                    t.start()
                self._started = True
            self._work.queue.append((tokenizer, texts, eos_id, future, fn))
            self._work.cond.notify()
        return future

    def shutdown(self) -> None:
        _stop(self._work)


def _stop(work: _Work) -> None:
    with work.cond:
        work.stop = True
        work.cond.notify_all()


def _take(work: _Work) -> list[tuple[Any, list[str], int, Future, Callable]] | None:
    """The requests waiting (same tokenizer, eos and function as the first), up to ``gather_docs`` documents
    (at least the first request)."""
    with work.cond:
        while not work.queue and not work.stop:
            work.cond.wait()
        if work.stop:
            return None
        group = [work.queue.popleft()]
        tok, _, eos, _, fn = group[0]
        n = len(group[0][1])
        while work.queue and n + len(work.queue[0][1]) <= work.gather_docs:
            nxt = work.queue[0]
            if nxt[0] is not tok or nxt[2] != eos or nxt[4] is not fn:
                break
            group.append(work.queue.popleft())
            n += len(nxt[1])
        return group


def _run(work: _Work) -> None:
    while True:
        group = _take(work)
        if group is None:
            return
        tok, _, eos, _, fn = group[0]
        try:
            flat, starts = fn(tok, [t for g in group for t in g[1]], eos)
        except Exception:  # noqa: BLE001 - each request alone, so that the error goes to its own request
            _one_by_one(group)
            continue
        d = 0
        for _, texts, _, future, _ in group:
            lo, hi = int(starts[d]), int(starts[d + len(texts)])
            future.set_result((flat[lo:hi], starts[d : d + len(texts) + 1] - lo))
            d += len(texts)


def _one_by_one(group: list[tuple[Any, list[str], int, Future, Callable]]) -> None:
    for tok, texts, eos, future, fn in group:
        try:
            future.set_result(fn(tok, texts, eos))
        except Exception as e:  # noqa: BLE001 - raised in the request's consumer
            future.set_exception(e)
