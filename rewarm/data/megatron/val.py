"""Validation rows of a pre-tokenized set: its documents (or Pythia's rows) in index order, back to back, cut
into rows of ``seq_len + 1`` exactly as text sets are (rewarm.data.val), and cached the same way."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rewarm.data.megatron.sources import check_sidecar, check_source, data_files, first_row
from rewarm.data.megatron.stream import DocView, RowView, check_ids, gather, open_file
from rewarm.data.sources import file_signature
from rewarm.data.valrows import ValRows, load_rows, save_rows
from rewarm.errors import DataError

logger = logging.getLogger(__name__)
CACHE_VERSION = 1
_DOCS = 4096  # documents gathered per step


def megatron_val_rows(val: Any, tokenizer: Any, seq_len: int, n_rows: int, cache_dir: Path,
                      vocab_size: int | None) -> ValRows:
    """ValRows (N, seq_len + 1) of a pre-tokenized set (no subsets), cached as text sets are."""
    import torch

    from rewarm.data.loader import eos_of, tokenizer_hash, vocab_len

    prefixes = check_source(val, "", seq_len)
    for prefix in prefixes:
        check_sidecar(prefix, tokenizer_hash(tokenizer), "paths")
    eos, vocab = eos_of(tokenizer), vocab_size or vocab_len(tokenizer)
    files = [f for p in prefixes for f in data_files(p)]
    payload = {"v": CACHE_VERSION, "files": [file_signature(f) for f in files], "seq_len": seq_len,
               "max_tokens": val.max_tokens, "append_eos": val.append_eos, "eos": eos, "first_row": first_row(val),
               "vocab": vocab}
    path = cache_dir / "val" / f"mm-{hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]}.npz"
    if path.is_file():
        return load_rows(path)
    need = n_rows * (seq_len + 1)
    flat = np.concatenate(list(_take(_pieces(val, prefixes, seq_len, eos, vocab), need)) or [np.zeros(0, np.int32)])
    n = min(n_rows, len(flat) // (seq_len + 1))
    if n == 0:
        raise DataError(f"validation files {prefixes[0]}.bin ...: {len(flat)} tokens, fewer than one row of "
                        f"seq_len + 1 = {seq_len + 1}")
    rows = torch.from_numpy(flat[: n * (seq_len + 1)].astype(np.int64).reshape(n, seq_len + 1))
    out = ValRows(rows, None, [], 0)
    save_rows(path, out)
    logger.info("val rows: %d x %d tokens from %d pre-tokenized file(s), cached in %s", n, seq_len + 1,
                len(prefixes), path)
    return out


def _pieces(val: Any, prefixes: tuple[str, ...], seq_len: int, eos: int, vocab: int) -> Iterator[np.ndarray]:
    start = first_row(val)
    for prefix in prefixes:
        tf = open_file(prefix)
        view = RowView(tf, seq_len + 1, start) if start >= 0 else DocView(tf)
        for a in range(0, view.n_docs, _DOCS):
            docs = np.arange(a, min(view.n_docs, a + _DOCS), dtype=np.int64)
            lo, hi = view.spans(docs)
            flat = gather(tf, lo, hi, eos if val.append_eos else None)
            starts = np.zeros(len(docs) + 1, np.int64)
            np.cumsum(hi - lo + (1 if val.append_eos else 0), out=starts[1:])
            check_ids(flat, starts, vocab, view, docs, lo)
            yield flat


def _take(pieces: Iterator[np.ndarray], need: int) -> Iterator[np.ndarray]:
    have = 0
    for piece in pieces:
        yield piece
        have += len(piece)
        if have >= need:
            return
