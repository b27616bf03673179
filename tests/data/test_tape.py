"""A file read by several streams of one process is decompressed once (rewarm.data.tape): every reader gets the
chunks it would get alone, in order, from threads at once; a reader that falls behind the tape's limit, or comes
after its start is gone, reads on alone from the same place; an error of the file reaches every reader at its
place; and the records of a .zst file read through RecordReader by many residue classes at once are its records."""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from rewarm.data import sources, tape
from rewarm.data.sources import RecordReader


class Counted:
    """A chunk source over real zstd data that counts the chunks it decompressed (over all its iterators)."""

    def __init__(self, path: Path, fail_after: int | None = None) -> None:
        self.path, self.made, self.fail_after, self.lock = path, 0, fail_after, threading.Lock()

    def __call__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            for i, chunk in enumerate(sources._zstd_chunks(fh)):
                if self.fail_after is not None and i == self.fail_after:
                    raise zstandard.ZstdError("corrupt block")
                with self.lock:
                    self.made += 1
                yield chunk


@pytest.fixture()
def zst(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(sources, "_CHUNK", 1000)  # many chunks
    rng = random.Random(0)  # text that compresses little: many chunks
    raw = "".join(json.dumps({"text": f"document {i} {rng.getrandbits(256):x}"}) + "\n" for i in range(3000)).encode()
    path = tmp_path / "f.jsonl.zst"
    with open(path, "wb") as fh, zstandard.ZstdCompressor(level=3).stream_writer(fh) as w:
        for i in range(0, len(raw), 997):
            w.write(raw[i : i + 997])
            w.flush(zstandard.FLUSH_BLOCK)
    return path


def _read_all(n: int, source: Counted, limit: int | None = None) -> list[list[bytes]]:
    out: list[list[bytes]] = [[] for _ in range(n)]

    def read(k: int) -> None:
        out[k] = list(tape.shared_chunks(("k", str(source.path)), source, n, limit))

    threads = [threading.Thread(target=read, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_readers_at_once_share_one_decompression(zst: Path) -> None:
    alone = list(Counted(zst)())
    assert len(alone) > 50
    source = Counted(zst)
    got = _read_all(8, source)
    assert all(g == alone for g in got)
    assert source.made == len(alone)  # once, not 8 times
    assert tape._tapes == {}  # the last reader took the tape away


def test_a_reader_behind_the_limit_reads_on_alone(zst: Path) -> None:
    alone = list(Counted(zst)())
    source, limit = Counted(zst), 3 * max(map(len, alone))  # about three chunks
    first = tape.shared_chunks(("k", str(zst)), source, 2, limit)
    late = tape.shared_chunks(("k", str(zst)), source, 2, limit)
    late_head = next(late)  # both join the tape while it still holds the start of the file
    head = [next(first) for _ in range(30)]  # ~3 chunks kept behind it: the late reader's next one is gone
    assert head == alone[:30] and [late_head, *late] == alone and list(first) == alone[30:]
    assert source.made == 2 * len(alone)  # the late reader decompressed the file again, alone
    assert tape._tapes == {}
    assert list(tape.shared_chunks(("k", str(zst)), source, 2)) == alone  # a new tape, kept for the second reader
    assert list(tape.shared_chunks(("k", str(zst)), source, 2)) == alone and source.made == 3 * len(alone)
    assert tape._tapes == {} and tape._idle == []
    assert list(tape.shared_chunks(("k", str(zst)), source, 1)) == alone  # one reader: no tape
    assert source.made == 4 * len(alone) and tape._tapes == {}


def test_an_error_reaches_every_reader_at_its_place(zst: Path) -> None:
    source = Counted(zst, fail_after=7)
    readers = [tape.shared_chunks(("e", str(zst)), source, 3) for _ in range(3)]
    for r in readers:
        assert len([next(r) for _ in range(7)]) == 7
        with pytest.raises(zstandard.ZstdError, match="corrupt block"):
            next(r)
    assert source.made == 7


def test_record_readers_of_residue_classes_share_the_file(zst: Path, monkeypatch) -> None:
    made = []
    real = sources._line_blocks
    monkeypatch.setattr(sources, "_line_blocks", lambda path: (made.append(path), real(path))[1])
    stride = 13
    docs: list[list[int]] = [[] for _ in range(stride)]

    def read(offset: int) -> None:
        docs[offset] = [d.index for d in RecordReader(str(zst), stride=stride, offset=offset)]

    threads = [threading.Thread(target=read, args=(k,)) for k in range(stride)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(i for d in docs for i in d) == list(range(3000))
    assert all(d == list(range(k, 3000, stride)) for k, d in enumerate(docs))
    assert made == [str(zst)]  # decompressed and split once: the tape keeps the start until all 13 have come
    resumed = list(RecordReader(str(zst), stride=stride, offset=5, start=1001))  # a cursor inside the file
    assert [d.index for d in resumed] == list(range(1006, 3000, stride)) and len(made) == 2
    alone = RecordReader(str(zst), stride=1, start=2990)  # one reader: no tape, the lines before 2990 not split
    assert [d.index for d in alone] == list(range(2990, 3000)) and len(made) == 2


def test_a_forked_process_starts_without_the_parents_tapes(zst: Path) -> None:
    source = Counted(zst)
    reader = tape.shared_chunks(("f", str(zst)), source, 2)
    next(reader)  # a tape in this process, its lock free again
    with tape._tapes_lock:  # held by this thread while the child is forked
        pid = os.fork()
        if pid == 0:  # the child: a lock of its own, no tape
            fresh = tape._tapes == {}
            got = list(tape.shared_chunks(("f", str(zst)), Counted(zst), 2))
            os._exit(0 if fresh and got == list(Counted(zst)()) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert list(reader) == list(Counted(zst)())[1:]
