"""One tokenizing pool per process: batches waiting together are encoded in one call, each gets its own tokens."""

from __future__ import annotations

import threading

import pytest

from rewarm.data.encode_pool import EncodePool
from rewarm.data.packing import encode


def test_grouped_batches_get_the_tokens_of_their_own_call(tokenizer):
    backend = tokenizer.backend_tokenizer
    batches = [[f"doc {b}.{d} " * (d + 1) for d in range(b % 3 + 1)] for b in range(12)] + [[]]
    calls, gate = [], threading.Event()

    def counted(tok, texts, eos):  # the first call waits, so that the next batches queue up behind it
        gate.wait(5)
        calls.append(len(texts))
        return encode(tok, texts, eos)

    pool = EncodePool(1)
    futures = [pool.submit(counted, backend, texts, 0) for texts in batches]
    gate.set()
    for texts, future in zip(batches, futures, strict=True):
        flat, starts = future.result(timeout=10)
        want_flat, want_starts = encode(backend, texts, 0)
        assert flat.tolist() == want_flat.tolist() and starts.tolist() == want_starts.tolist()
    assert len(calls) < len(batches) and sum(calls) == sum(map(len, batches))
    pool.shutdown()


def test_without_gathering_each_batch_is_its_own_call(tokenizer):
    """gather_docs=0 (a single-threaded tokenizer, one pool thread per core): one call per batch, even when
    batches wait."""
    backend = tokenizer.backend_tokenizer
    batches = [[f"doc {b}.{d} " * (d + 1) for d in range(b % 3 + 1)] for b in range(8)]
    calls, gate = [], threading.Event()

    def counted(tok, texts, eos):
        gate.wait(5)
        calls.append(len(texts))
        return encode(tok, texts, eos)

    pool = EncodePool(2, gather_docs=0)
    futures = [pool.submit(counted, backend, texts, 0) for texts in batches]
    gate.set()
    for texts, future in zip(batches, futures, strict=True):
        assert future.result(timeout=10)[0].tolist() == encode(backend, texts, 0)[0].tolist()
    assert sorted(calls) == sorted(map(len, batches)) and pool.threads == 2
    pool.shutdown()


def test_an_error_goes_to_its_own_batch_only(tokenizer):
    backend = tokenizer.backend_tokenizer
    gate = threading.Event()

    def picky(tok, texts, eos):
        gate.wait(5)
        if "bad" in texts:
            raise ValueError("bad document")
        return encode(tok, texts, eos)

    pool = EncodePool(1)
    good = [pool.submit(picky, backend, ["fine"], 0) for _ in range(2)]
    bad = pool.submit(picky, backend, ["bad"], 0)
    gate.set()
    assert all(f.result(timeout=10)[0].size for f in good)
    with pytest.raises(ValueError, match="bad document"):
        bad.result(timeout=10)
    pool.shutdown()
