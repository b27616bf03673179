"""What text packing (``rewarm.data.packing``) and the pre-tokenized reader (``rewarm.data.megatron.stream``) share:
a sub-stream's spec, the order of its units in a pass, the Chunk of tokens both yield, and ``SourceExhausted``.

Below both, so neither imports the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np


class SourceExhausted(Exception):
    """A source ended with on_source_end=stop."""


@dataclass(frozen=True)
class SubStreamSpec:
    """What one sub-stream reads: ``units`` are (file index, offset, stride) triples into ``files``."""

    key: str
    files: tuple[str, ...]
    units: tuple[tuple[int, int, int], ...]
    text_field: str
    subset_field: str | None
    subsets: frozenset[str] | None
    shuffle_files: bool
    on_source_end: str
    on_bad_record: str
    seed: int
    backend: str = "plain"  # plain (RecordReader over units) | datasets (HFReader, one unit per pass)
    hf_dataset: str | None = None
    hf_split: str = "train"
    reader: int = 0  # this reader's index, and the number of readers over all ranks and streams
    readers: int = 1
    # pre-tokenized sources (backend megatron, rewarm.data.megatron.stream): files are path prefixes
    shuffle_docs: bool = False
    append_eos: bool = False
    first_row: int = -1  # >= 0: Pythia's rows of row_len tokens from this row on, instead of documents
    row_len: int = 0
    vocab_size: int = 0  # ids must be below it (0: unchecked)
    share: int = 1  # logical streams read by this process: their read-ahead and chunks are cut to match
    peers: tuple[int, ...] = ()  # the global streams read by this process (who shares a file's decompression)


@dataclass
class Chunk:
    """Tokens of a TextBatch: ``flat[starts[d]:starts[d+1]]`` is document d + EOS."""

    flat: np.ndarray  # (n_tokens,) int32
    starts: np.ndarray  # (n_docs + 1,) int64 offsets into flat
    records: list[Any]
    skipped: np.ndarray  # (n_docs,) int64
    epoch: int
    unit: int
    end_state: dict[str, Any]
    boundaries: np.ndarray | None = None  # document starts when they differ from ``starts`` (Pythia's rows: after EOD)


def unit_order(spec: SubStreamSpec, epoch: int) -> list[int]:
    """Indices into spec.units in the order visited during pass ``epoch`` (seeded shuffle, or file order)."""
    order = list(range(len(spec.units)))
    if spec.shuffle_files and len(order) > 1:
        np.random.default_rng([spec.seed, key_hash(spec.key), epoch]).shuffle(order)
    return order


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
