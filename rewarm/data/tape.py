"""One decompression (and line split) of a file for the readers of this process that read it at about the same time.

With ``data.streams`` logical streams and fewer files than streams, each file is read by several streams, every
one taking its own residue class of records (``units_for``). Each of them used to decompress the whole file for
its share of the records: a file of a 5-file corpus was decompressed 13 times over by 64 streams. A *tape* holds
the decompressed chunks of one file (in the order one decompressor makes them) while its readers need them: the
reader that asks first for a chunk decompresses it, the others take it from the tape. Streams start one after the
other, so the tape keeps the file from its start until as many readers as the file has (its residue classes) have
come, or it holds ``TAPE_BYTES``; after that a chunk is dropped once every reader has passed it, and the tape never
holds more than ``TAPE_BYTES`` (a reader that falls that far behind, or one that comes when the start of the file
is gone, reads the file on its own from there: the same chunks, decompressed again). A tape whose readers have all
finished waits for the readers still to come (one such tape per process at most). A file of one reader (one
residue class) gets no tape. rewarm.data.sources puts blocks of lines on it (each reader takes its residue class
by slicing). Imports nothing of ours.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
TAPE_BYTES = 64 << 20  # decompressed bytes a tape may hold for its readers behind the first
_END = object()
_MISSED = object()
_tapes: dict[Hashable, _Tape] = {}
_tapes_lock = threading.Lock()
_idle: list[Hashable] = []  # the key of the tape without readers kept for the readers still to come


def _forget_after_fork() -> None:
    """A forked process (a DataLoader worker) starts with no tape: the parent's may be locked by its threads."""
    global _tapes_lock
    _tapes.clear()
    _idle.clear()
    _tapes_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


class _Tape:
    """The chunks of one source iterator, made once under a lock and kept from the slowest reader on."""

    def __init__(self, make: Callable[[], Iterator[Any]], limit: int, expected: int,
                 size: Callable[[Any], int]) -> None:
        self._source, self._limit, self._expected, self._joins = make(), limit, expected, 0
        self._size = size
        self._lock = threading.RLock()  # a reader's generator may be finalized (leave) inside get: same thread
        self._chunks: dict[int, tuple[Any, int]] = {}  # index -> (chunk, its size)
        self.first = 0  # lowest chunk index still held (it only grows)
        self._next, self._bytes = 0, 0
        self._end: BaseException | None = None  # the source's StopIteration or error, raised at index _next
        self._readers: dict[int, int] = {}  # reader id -> the next chunk index it asks for
        self._ids = itertools.count()

    def join(self) -> int:
        with self._lock:
            rid = next(self._ids)
            self._readers[rid], self._joins = 0, self._joins + 1
            return rid

    def leave(self, rid: int) -> tuple[bool, bool]:
        """Forget reader ``rid``: (no reader is left, more readers are expected and the start is still held)."""
        with self._lock:
            self._readers.pop(rid, None)
            self._trim()
            return not self._readers, self._waiting()

    def _waiting(self) -> bool:
        return self._joins < self._expected and self.first == 0

    def get(self, rid: int, i: int) -> Any:
        """Chunk ``i`` (made now if no reader has asked for it yet), ``_END`` after the last one, ``_MISSED`` if
        it was dropped; the source's error is raised at its place."""
        with self._lock:
            while self._next <= i and self._end is None:
                try:
                    chunk = next(self._source)
                except StopIteration as e:
                    self._end = e
                except Exception as e:  # raised to every reader that gets there
                    self._end = e
                else:
                    n = self._size(chunk)
                    self._chunks[self._next] = (chunk, n)
                    self._next, self._bytes = self._next + 1, self._bytes + n
            if i < self.first:
                return _MISSED
            if i >= self._next:
                if isinstance(self._end, StopIteration):
                    return _END
                raise copy.copy(self._end)  # type: ignore[misc]
            held = self._chunks.get(i)
            if held is None:
                return _MISSED
            self._readers[rid] = i + 1
            self._trim()
            return held[0]

    def _trim(self) -> None:
        low = 0 if self._waiting() else min(self._readers.values(), default=self._next)
        while self.first < self._next and (self.first < low or self._bytes > self._limit):
            self._bytes -= self._chunks.pop(self.first)[1]
            self.first += 1


def shared_chunks(key: Hashable, make: Callable[[], Iterator[T]], readers: int, limit: int | None = None,
                  size: Callable[[T], int] = len) -> Iterator[T]:
    """The chunks of ``make()``, shared with the other readers of ``key`` in this process (see the module
    docstring): the same sequence as iterating ``make()`` alone. ``readers``: how many read the file in all
    (its residue classes); 1: no tape. ``size``: the bytes a chunk holds (the limit counts them)."""
    if readers <= 1:
        yield from make()
        return
    with _tapes_lock:
        tape = _tapes.get(key)
        if tape is None or tape.first > 0:  # none, or its start is gone: a new tape (the old one keeps its readers)
            tape = _tapes[key] = _Tape(make, TAPE_BYTES if limit is None else limit, readers, size)
        if key in _idle:
            _idle.remove(key)
    rid, i = tape.join(), 0
    try:
        while True:
            chunk = tape.get(rid, i)
            if chunk is _END:
                return
            if chunk is _MISSED:  # fell behind the tape: on alone, from the same place
                yield from itertools.islice(make(), i, None)
                return
            yield chunk
            i += 1
    finally:
        _leave(key, tape, rid)


def _leave(key: Hashable, tape: _Tape, rid: int) -> None:
    empty, waiting = tape.leave(rid)
    if not empty:
        return
    with _tapes_lock:
        if _tapes.get(key) is not tape:
            return
        if not waiting:
            del _tapes[key]
            return
        _idle.append(key)  # kept for the readers to come; the one kept before is let go
        for old in _idle[:-1]:
            _tapes.pop(old, None)
        del _idle[:-1]
