"""Run an iterator a few items ahead in a background thread (reading and tokenizing overlap packing)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_END = object()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher(Generic[T]):
    """``next()`` returns the items of ``source`` in order, produced ``depth`` ahead by a daemon thread.
    Exceptions of the source are re-raised in the consumer. The thread starts on the first ``next()`` and
    stops when the Prefetcher is closed or garbage-collected (it never references the Prefetcher)."""

    def __init__(self, source: Iterator[T], depth: int = 1) -> None:
        self._source, self._queue = source, queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=_produce, args=(self._source, self._queue, self._stop),
                                            daemon=True, name="rewarm-data-prefetch")
            self._thread.start()
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Raised):
            self._done = True
            raise item.exc
        return item

    def close(self) -> None:
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()


def _produce(source: Iterator[Any], out: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in source:
            if not _put(out, item, stop):
                return
        _put(out, _END, stop)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
        _put(out, _Raised(e), stop)


def _put(out: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
