"""Helpers of the pre-tokenized data tests: small MMIDIDX pairs written with rewarm's writer, and raw headers
written byte by byte (for the bad-input cases and Pythia-like indexes)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from rewarm.data.megatron.format import MAGIC
from rewarm.data.megatron.writer import TokenWriter


def write_docs(prefix: Path, docs: list[list[int]], dtype: type = np.uint16) -> Path:
    """PREFIX.bin / .idx holding ``docs`` (one sequence per document)."""
    with TokenWriter(str(prefix), dtype) as w:
        for doc in docs:
            w.add_documents(np.asarray(doc, np.int64), np.asarray([0, len(doc)], np.int64))
    return prefix


def write_raw_index(idx: Path, sizes: list[int], doc_idx: list[int], *, code: int = 8, version: int = 1,
                    magic: bytes = MAGIC, itemsize: int = 2) -> Path:
    """An .idx written from its parts (pointers = cumulative sizes x itemsize)."""
    sz = np.asarray(sizes, np.int32)
    ptr = np.zeros(len(sizes), np.int64)
    np.cumsum(sz[:-1].astype(np.int64) * itemsize, out=ptr[1:])
    head = magic + struct.pack("<Q", version) + struct.pack("<B", code) + struct.pack("<QQ", len(sizes), len(doc_idx))
    idx.write_bytes(head + sz.tobytes() + ptr.tobytes() + np.asarray(doc_idx, np.int64).tobytes())
    return idx


def write_pythia_like(root: Path, n_rows: int, row_len: int = 2049, shards: int = 0, seed: int = 0,
                      eod_every: int = 0) -> np.ndarray:
    """Pythia's pre-shuffled layout: document.idx with every size row_len and doc_idx [0] (D = 1), and
    document.bin or ``shards`` byte-split shards document-000NN-of-000MM.bin. Returns the tokens (uint16)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 300, n_rows * row_len).astype(np.uint16)
    if eod_every:
        tokens[::eod_every] = 0
    root.mkdir(parents=True, exist_ok=True)
    write_raw_index(root / "document.idx", [row_len] * n_rows, [0])
    raw = tokens.tobytes()
    if not shards:
        (root / "document.bin").write_bytes(raw)
        return tokens
    cut = -(-len(raw) // shards) | 1  # an odd shard size: tokens straddle shards, as a byte split allows
    for i in range(shards):
        (root / f"document-{i:05d}-of-{shards - 1:05d}.bin").write_bytes(raw[i * cut : (i + 1) * cut])
    return tokens
