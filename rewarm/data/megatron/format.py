"""The MMIDIDX indexed dataset of GPT-NeoX / Megatron, read and written with numpy memmaps.

``.idx`` (little-endian): 9-byte magic ``MMIDIDX\\0\\0``, ``<Q`` version 1, ``<B`` dtype code, ``<Q`` N
sequences, ``<Q`` D = len(doc_idx); then ``sizes`` int32[N], ``pointers`` int64[N] (byte offsets into the
``.bin``) and ``doc_idx`` int64[D]: 34 + 12 N + 8 D bytes. ``.bin``: the token arrays back to back, no header;
it may be split into shards ``PREFIX-000NN-of-000MM.bin`` (Pythia's release), read here as one byte stream.
Dtype codes are gpt-neox's (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16); 6 and 7 are floats, whose
codes Megatron-core swaps, and are refused: token ids are integers.

A *document* is ``sizes[doc_idx[j]:doc_idx[j+1]]`` when ``doc_idx`` runs from 0 to N (what the writers of
gpt-neox and Megatron produce); otherwise (Pythia's pre-shuffled index, whose ``doc_idx`` need not end at N)
every sequence is its own document.
"""

from __future__ import annotations

import glob
import mmap
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

from rewarm.errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_BYTES = 34
RELEASE_BYTES = 4 << 20  # bytes read between two TokenFile.release calls: about the .bin pages a run keeps mapped
DTYPES: dict[int, type] = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
FLOAT_CODES = (6, 7)
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.bin$")


def code_of(dtype: type) -> int:
    """The gpt-neox dtype code of an integer numpy dtype."""
    for code, dt in DTYPES.items():
        if np.dtype(dt) == np.dtype(dtype):
            return code
    raise ValueError(f"no MMIDIDX code for dtype {dtype}")


def token_dtype(vocab_size: int) -> type:
    """uint16 below 65,500 ids (as gpt-neox's preprocess_data.py), else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


def prefix_of(path: str) -> str:
    """``dir/name`` of ``dir/name.bin``, ``dir/name.idx``, a shard ``dir/name-00000-of-00020.bin`` or ``dir/name``."""
    m = _SHARD.search(path)
    if m:
        return path[: m.start()]
    for ext in (".bin", ".idx"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def bin_files(prefix: str) -> list[str]:
    """``PREFIX.bin``, else its shards ``PREFIX-000NN-of-000MM.bin`` in order (all M + 1 must be present)."""
    if os.path.isfile(prefix + ".bin"):
        return [prefix + ".bin"]
    shards = sorted(glob.glob(glob.escape(prefix) + "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].bin"))
    if not shards:
        raise DataError(f"{prefix}.bin: file not found (nor shards {os.path.basename(prefix)}-000NN-of-000MM.bin); "
                        "download the .bin next to the .idx")
    last = int(_SHARD.search(shards[0]).group(2))  # type: ignore[union-attr]
    want = [f"{prefix}-{i:05d}-of-{last:05d}.bin" for i in range(last + 1)]
    missing = sorted(set(want) - set(shards))
    if missing:
        raise DataError(f"{missing[0]}: shard missing ({len(missing)} of {last + 1} absent); download every shard")
    return want


@dataclass(frozen=True)
class Header:
    """The fixed part of an ``.idx``."""

    path: str
    dtype: type
    n_seqs: int
    n_docs_idx: int  # D = len(doc_idx)


def read_header(idx_path: str) -> Header:
    """Check magic, version, dtype code and the file size of an ``.idx``; DataError naming the file otherwise."""
    if not os.path.isfile(idx_path):
        raise DataError(f"{idx_path}: index file not found; the .idx must lie next to the .bin")
    with open(idx_path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:9] != MAGIC:
        raise DataError(f"{idx_path}: not an MMIDIDX index (magic {head[:9]!r}, expected {MAGIC!r}); only "
                        "GPT-NeoX / Megatron mmap indexed datasets are read (fairseq's cached format is not)")
    (version,) = struct.unpack("<Q", head[9:17])
    if version != VERSION:
        raise DataError(f"{idx_path}: unknown index version {version} (only version 1 is known)")
    code = head[17]
    if code not in DTYPES:
        kind = "a float dtype (token ids must be integers)" if code in FLOAT_CODES else "unknown"
        raise DataError(f"{idx_path}: dtype code {code} is {kind}; known token codes: "
                        + ", ".join(f"{c} {np.dtype(t).name}" for c, t in DTYPES.items()))
    n, d = struct.unpack("<QQ", head[18:34])
    if n == 0:
        raise DataError(f"{idx_path}: empty index (0 sequences); re-run the tokenization")
    want = HEADER_BYTES + 12 * n + 8 * d
    size = os.path.getsize(idx_path)
    if size < want:
        raise DataError(f"{idx_path}: {size} bytes, but its header announces {n} sequences and {d} doc_idx entries "
                        f"({want} bytes); the index is truncated")
    return Header(idx_path, DTYPES[code], int(n), int(d))


class TokenFile:
    """One pre-tokenized dataset: its index memory-mapped (never read whole) and its ``.bin`` (or shards) as
    memmaps. Token offsets count tokens from the start of the concatenated ``.bin``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix_of(prefix)
        self.idx_path = self.prefix + ".idx"
        self.header = read_header(self.idx_path)
        self.bins = bin_files(self.prefix)
        self.dtype = np.dtype(self.header.dtype)
        n, d = self.header.n_seqs, self.header.n_docs_idx
        self.sizes = np.memmap(self.idx_path, np.int32, "r", HEADER_BYTES, (n,))
        self.pointers = np.memmap(self.idx_path, np.int64, "r", HEADER_BYTES + 4 * n, (n,))
        self.doc_idx = np.memmap(self.idx_path, np.int64, "r", HEADER_BYTES + 12 * n, (d,)) if d else np.zeros(0, np.int64)
        # shards are a byte stream (Pythia's unshard is a byte concatenation): mapped as bytes, viewed as tokens
        self._maps = [np.memmap(b, np.uint8, "r") if os.path.getsize(b) else np.zeros(0, np.uint8) for b in self.bins]
        self._ends = np.cumsum([len(m) for m in self._maps])  # byte offset where each .bin ends
        self.n_tokens = int(self._ends[-1]) // self.dtype.itemsize
        self._check_size()
        self._unreleased = 0  # bytes read since the last release
        self.by_doc_idx = d >= 2 and int(self.doc_idx[0]) == 0 and int(self.doc_idx[-1]) == n

    def _check_size(self) -> None:
        """The .bin must end where the last sequence ends (a truncated download does not)."""
        last = self.header.n_seqs - 1
        want = int(self.pointers[last]) + int(self.sizes[last]) * self.dtype.itemsize
        have = int(self._ends[-1])
        if have != want:
            names = self.bins[0] if len(self.bins) == 1 else f"{self.bins[0]} .. {self.bins[-1]} ({len(self.bins)} shards)"
            raise DataError(f"{names}: {have} bytes, but {self.idx_path} says the sequences end at byte {want}; "
                            f"the .bin is {'truncated' if have < want else 'longer than its index'} "
                            "(download it again, or rebuild both files)")

    @property
    def n_docs(self) -> int:
        """Documents: doc_idx ranges when doc_idx spans 0..N, else sequences."""
        return len(self.doc_idx) - 1 if self.by_doc_idx else self.header.n_seqs

    def doc_spans(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token offsets (lo, hi) of documents ``docs`` (k,) int64: the sequences of a document lie back to back."""
        first, last = (self.doc_idx[docs], self.doc_idx[docs + 1] - 1) if self.by_doc_idx else (docs, docs)
        lo = self.pointers[first] // self.dtype.itemsize
        hi = self.pointers[last] // self.dtype.itemsize + self.sizes[last]
        empty = last < first  # a document without sequences
        return lo, np.where(empty, lo, hi)

    def token_array(self) -> np.ndarray | None:
        """The whole .bin as one plain array of tokens (a view: slicing it skips np.memmap's Python
        ``__getitem__``), or None for shards, which a token may straddle."""
        if len(self._maps) != 1 or len(self._maps[0]) % self.dtype.itemsize:
            return None
        return self._maps[0].view(np.ndarray).view(self.dtype)

    def tokens(self, lo: int, hi: int) -> np.ndarray:
        """Tokens [lo, hi) of the concatenated .bin: a view into one memmap, or a copy across shards."""
        return np.asarray(self._bytes(lo * self.dtype.itemsize, hi * self.dtype.itemsize)).view(self.dtype)

    def _bytes(self, lo: int, hi: int) -> np.ndarray:
        i = int(np.searchsorted(self._ends, lo, side="right"))
        if i >= len(self._maps):
            return np.zeros(0, np.uint8)
        start = 0 if i == 0 else int(self._ends[i - 1])
        if hi <= int(self._ends[i]):
            return self._maps[i][lo - start : hi - start]
        return np.concatenate([self._bytes(lo, int(self._ends[i])), self._bytes(int(self._ends[i]), hi)])

    def consumed(self, n_bytes: int) -> None:
        """``n_bytes`` of the files were read and are done with: ``release`` once RELEASE_BYTES have been (each
        call walks the page tables of the whole mapping, ~0.1 ms for a 0.5 GB .bin: not once per chunk of each of
        64 streams, and pages mapped ahead for the neighbouring streams' documents stay mapped meanwhile)."""
        self._unreleased += n_bytes
        if self._unreleased >= RELEASE_BYTES:
            self._unreleased = 0
            self.release()

    def release(self) -> None:
        """Unmap the pages this process has touched (MADV_DONTNEED; the kernel's page cache keeps them, a later
        read maps them again): resident memory stays flat however much of the files a run reads."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        for arr in (*self._maps, self.sizes, self.pointers, self.doc_idx):
            handle = getattr(arr, "_mmap", None)
            if handle is not None:
                handle.madvise(mmap.MADV_DONTNEED)

    def bin_of(self, token: int) -> str:
        """The .bin (shard) holding token offset ``token``, for error messages."""
        at = token * self.dtype.itemsize
        return self.bins[min(int(np.searchsorted(self._ends, at, side="right")), len(self.bins) - 1)]
