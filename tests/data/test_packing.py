"""Tokenizing a batch of documents into one flat int32 array, and the threaded read -> tokenize stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import records, write_jsonl

from rewarm.data.packing import (
    ChunkReader,
    SourceExhausted,
    SubStream,
    SubStreamSpec,
    encode,
    encoded,
    flatten_ids,
    reading_cores,
    single_threaded_tokenizer,
    tokenize_ahead,
    tokenize_pool,
)


def test_encode_is_each_document_then_eos(tokenizer):
    texts = ["doc one, short", "a second document\nwith two lines", "x"]
    flat, starts = encode(tokenizer.backend_tokenizer, texts, eos_id=0)
    assert flat.dtype == np.int32 and starts.dtype == np.int64
    expect = [tokenizer(t, add_special_tokens=False)["input_ids"] + [0] for t in texts]
    assert starts.tolist() == np.cumsum([0] + [len(e) for e in expect]).tolist()
    assert [flat[a:b].tolist() for a, b in zip(starts[:-1], starts[1:], strict=True)] == expect


def test_flatten_ids_of_no_documents():
    flat, starts = flatten_ids([], eos_id=7)
    assert flat.shape == (0,) and flat.dtype == np.int32 and starts.tolist() == [0]


def spec_of(path, **kw) -> SubStreamSpec:
    values = dict(key="a", files=(str(path),), units=((0, 0, 1),), text_field="text", subset_field=None,
                  subsets=None, shuffle_files=False, on_source_end="stop", on_bad_record="skip", seed=0)
    values.update(kw)
    return SubStreamSpec(**values)


def test_read_and_tokenize_stages_give_the_document_stream(tokenizer, tmp_path):
    """Batches of 7 documents: the chunks, concatenated, are every document + EOS in file order, and each
    batch's end cursor points at the next record."""
    recs = records(30)
    path = write_jsonl(tmp_path / "a.jsonl.zst", recs)
    backend = tokenizer.backend_tokenizer
    batches = ChunkReader(spec_of(path), batch_docs=7).batches({"epoch": 0, "unit": 0, "record": 0, "skipped": 0})
    chunks = []
    with pytest.raises(SourceExhausted):  # on_source_end=stop: the end of the pass
        for chunk in encoded(batches, backend, 0, tokenize_pool(), ahead=3):
            chunks.append(chunk)
    ends = [c.end_state["record"] for c in chunks]
    flat, _ = encode(backend, [r["text"] for r in recs], eos_id=0)
    assert np.concatenate([c.flat for c in chunks]).tolist() == flat.tolist()
    assert [len(c.records) for c in chunks] == [7, 7, 7, 7, 2]
    assert ends[:4] == [7, 14, 21, 28]


def data_threads() -> set:
    import threading

    return {t for t in threading.enumerate()
            if t.is_alive() and t.name.startswith(("rewarm-data-prefetch", "rewarm-tokenize"))}


def test_a_dropped_substream_stops_its_threads(tokenizer, tmp_path):
    """The reading thread and the tokenizing pool hold neither the SubStream nor its consumer: dropping the
    SubStream (with its own pool: none was given) ends them (a worker must not accumulate threads)."""
    import gc
    import time

    path = write_jsonl(tmp_path / "a.jsonl.zst", records(400))
    before = data_threads()
    sub = SubStream(spec_of(path, on_source_end="repeat"), tokenizer.backend_tokenizer, 0, seq_len=16, batch_docs=4)
    for _ in range(5):
        sub.next_row()
    started = data_threads() - before
    assert {t.name.split("_")[0] for t in started} == {"rewarm-data-prefetch", "rewarm-tokenize"}
    del sub
    gc.collect()
    deadline = time.monotonic() + 10
    while data_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not data_threads() - before


def test_encoded_hands_out_the_batches_read_before_an_error(tokenizer):
    from rewarm.data.packing import TextBatch
    from rewarm.errors import DataError

    def batches():
        for i in range(5):
            yield TextBatch([f"text {i}"], [i], [0], 0, 0, {})
        raise DataError("f.jsonl:6: malformed JSON")

    got = []
    with pytest.raises(DataError, match="f.jsonl:6"):
        for chunk in encoded(batches(), tokenizer.backend_tokenizer, 0, tokenize_pool(), ahead=3):
            got.append((chunk.records[0], chunk.flat.tolist()))
    assert got == [(i, tokenizer(f"text {i}", add_special_tokens=False)["input_ids"] + [0]) for i in range(5)]


@pytest.mark.parametrize("value,ahead", [(None, 3), ("true", 3), ("false", 2), ("0", 2), ("OFF", 2)])
def test_tokenize_ahead_follows_the_tokenizers_parallelism(monkeypatch, value, ahead):
    """Several workers tokenize single-threaded (TOKENIZERS_PARALLELISM=false): two batches at once then."""
    if value is None:
        monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    else:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", value)
    assert tokenize_ahead() == ahead


def test_sub_streams_share_their_stream_pool(tokenizer, tmp_path, data_cfg):
    """A mix of 4 subsets: one pool of tokenize_ahead() threads for the logical stream, not one per subset."""
    from data_helpers import write_jsonl as write

    from rewarm.data import build_train_loader

    recs = [{"text": f"doc{i} " + "word " * (i % 50 + 5), "meta": {"pile_set_name": f"set{i % 4}"}}
            for i in range(400)]
    path = write(tmp_path / "a.jsonl", recs)
    subsets = {f"set{i}": 1.0 for i in range(4)}
    cfg = data_cfg(seq_len=16, num_workers=0, train={"a": {"paths": [str(path)], "subset_field": "meta.pile_set_name",
                                                           "subsets": subsets}})
    loader = build_train_loader(cfg, tokenizer, micro_batch_size=8, seed=0, rank=0, world_size=1)
    before = data_threads()
    batches = iter(loader)
    for _ in range(10):
        next(batches)
    started = data_threads() - before
    assert sum(t.name == "rewarm-data-prefetch" for t in started) == 4  # a reading thread per subset
    assert 1 <= sum(t.name.startswith("rewarm-tokenize") for t in started) <= tokenize_ahead()  # in-process


class _WhatAWorkerSees(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[int, bool, int, int]:
        import os

        pool = tokenize_pool()
        threads = pool.threads
        pool.shutdown()
        return reading_cores(), single_threaded_tokenizer(), threads, os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_tokenizes_single_threaded_on_its_share_of_the_cores(monkeypatch, workers):
    """Every DataLoader worker (rewarm.data.workers) turns the tokenizer's own threads off and runs one pool thread
    per core it has: the cores this process may use, divided among the rank's workers."""
    import os

    from rewarm.data.workers import _worker_init

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    loader = torch.utils.data.DataLoader(_WhatAWorkerSees(), batch_size=None, num_workers=workers,
                                         worker_init_fn=_worker_init, multiprocessing_context="spawn")
    seen = list(loader)
    want = max(1, len(os.sched_getaffinity(0)) // workers)
    assert {(cores, single, threads) for cores, single, threads, _ in seen} == {(want, True, want)}
    assert len({pid for *_, pid in seen}) == workers
    assert reading_cores() == len(os.sched_getaffinity(0))  # this process is no worker
