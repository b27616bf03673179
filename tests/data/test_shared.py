"""rewarm.data.shared: the streams of one process that read a file in the same pass share one decompression,
and each gets exactly the records it would read alone."""

from __future__ import annotations

from data_helpers import records, write_jsonl

from rewarm.data import shared
from rewarm.data.sources import RecordReader


def read(path, offset: int, stride: int, share=None, start: int = 0) -> tuple[list[int], int]:
    reader = RecordReader(str(path), start=start, stride=stride, offset=offset, share=share)
    return [d.index for d in reader], reader.skipped


def test_shared_readers_get_their_own_records_and_errors(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl.zst", records(50), raw_lines={7: b"{bad"})
    alone = [read(path, o, 4) for o in range(4)]
    its = [iter(RecordReader(str(path), stride=4, offset=o, share="k")) for o in range(4)]
    got: list[list[int]] = [[] for _ in range(4)]
    for _ in range(13):  # in turns, as the streams of a worker read
        for o, it in enumerate(its):
            doc = next(it, None)
            if doc is not None:
                got[o].append(doc.index)
    assert got == [ids for ids, _ in alone] and alone[3][1] == 1  # line 7 is reader 3's: counted there
    truncated = tmp_path / "t.jsonl.zst"
    truncated.write_bytes(path.read_bytes()[:-40])
    assert [read(truncated, o, 3, share="t") for o in range(3)] == [read(truncated, o, 3) for o in range(3)]


def test_a_reader_behind_the_window_reads_privately(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "a.jsonl", records(40))
    monkeypatch.setattr(shared, "WINDOW_BYTES", 500)  # a few lines: the laggard falls below the window
    fast = iter(RecordReader(str(path), stride=2, offset=0, share="w"))
    slow = iter(RecordReader(str(path), stride=2, offset=1, share="w"))
    first = next(slow).index
    ahead = [next(fast).index for _ in range(15)]
    rest = [d.index for d in slow]
    assert ahead == list(range(0, 30, 2)) and [first, *rest] == list(range(1, 40, 2))
    assert read(path, 1, 2, share="w2", start=21) == (list(range(21, 40, 2)), 0)
