"""One decompression of a text file for the many streams of one process that read it in the same pass.

With fewer files than ``data.streams``, each stream owns 1 record in ``m`` of a file (rewarm.data.mixing):
read privately, every stream would decompress and split the whole file for its share (``m`` times the work).
The streams of one process (a DataLoader worker) that read the same file for the same sub-stream and pass
progress at about the same rate (rows are taken from the streams in turn), so they share a window of the
file's lines instead: one decompressor reads ahead on demand, each reader takes its own lines from the
window, and lines below the slowest reader are dropped. A reader that falls below the window (it started
behind, on a resume, or lagged beyond ``WINDOW_BYTES``) reads the rest of its part privately: the lines are
the same, only the cost differs.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

WINDOW_BYTES = 64 << 20  # lines kept for the slower readers at most; a reader left below reads privately
_registry: weakref.WeakValueDictionary[Any, SharedLines] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


class Behind(Exception):
    """The line asked for was dropped from the window."""


class SharedLines:
    """The lines of one file from line ``base`` on, read on demand by one decompressor."""

    def __init__(self, lines: Iterator[tuple[int, bytes]], expected: int = 0) -> None:
        self._source, self._lines = lines, deque()
        # readers still to come: until they have registered, lines below the registered readers are kept (up to
        # WINDOW_BYTES), else the first reader's read-ahead would drop the lines the later ones start with
        self._expected = expected
        self._base = self._next = 0  # line index of _lines[0]; of the next line to read
        self._bytes, self._error, self._done = 0, None, False
        self._readers: dict[int, int] = {}  # reader id -> the lowest line it may still ask for
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def register(self, start: int) -> int:
        with self._lock:
            if start < self._base:
                raise Behind
            rid = next(self._ids)
            self._readers[rid] = start
            self._expected -= 1
            return rid

    def leave(self, rid: int) -> None:
        with self._lock:
            self._readers.pop(rid, None)
            self._trim()

    def line(self, rid: int, n: int) -> bytes | None:
        """Line ``n`` (None past the end of the file); raises the file's read error where the file breaks."""
        with self._lock:
            if n < self._base:
                raise Behind
            while self._next <= n and not self._done:
                self._read_one()
            if n >= self._next:
                if self._error is not None:
                    raise self._error
                return None
            self._readers[rid] = n + 1
            raw = self._lines[n - self._base]
            self._trim()
            return raw

    @property
    def lines_read(self) -> int:
        return self._next

    def _read_one(self) -> None:
        try:
            _, raw = next(self._source)
        except StopIteration:
            self._done = True
            return
        except Exception as e:  # noqa: BLE001 - raised to every reader that reaches this point
            self._error, self._done = e, True
            return
        self._lines.append(raw)
        self._bytes += len(raw)
        self._next += 1

    def _trim(self) -> None:
        low = min(self._readers.values(), default=self._next) if self._expected <= 0 else self._base
        while self._lines and (self._base < low or self._bytes > WINDOW_BYTES):
            self._bytes -= len(self._lines.popleft())
            self._base += 1


def shared_lines(key: Any, open_lines: Callable[[], Iterator[tuple[int, bytes]]], start: int, stride: int,
                 offset: int, expected: int = 0) -> Iterator[tuple[int, bytes | None]]:
    """(n, raw line) of the lines ``n >= start`` with ``n % stride == offset`` of the file ``key`` names, from
    the window shared in this process under ``key``; last ``(lines - 1, None)`` at the end of the file.
    ``open_lines()`` reads the file privately from line 0 (the decompressor of a new window); ``expected``: the
    readers of this process that will share it (0: unknown)."""
    with _registry_lock:
        shared = _registry.get(key)
        if shared is None or shared._base > start:
            shared = SharedLines(open_lines(), expected)
            _registry[key] = shared
    n = start + (offset - start) % stride
    try:
        rid = shared.register(start)
    except Behind:
        yield from _private(open_lines, n, stride, offset)
        return
    try:
        while True:
            try:
                raw = shared.line(rid, n)
            except Behind:
                yield from _private(open_lines, n, stride, offset)
                return
            if raw is None:
                yield shared.lines_read - 1, None
                return
            yield n, raw
            n += stride
    finally:
        shared.leave(rid)


def _private(open_lines: Callable[[], Iterator[tuple[int, bytes]]], n0: int, stride: int,
             offset: int) -> Iterator[tuple[int, bytes | None]]:
    last = -1
    for last, raw in open_lines():
        if last >= n0 and last % stride == offset:
            yield last, raw
    yield last, None
