"""Validation rows (the skeleton issue, item 6), tokenized once and cached on disk.

The documents of a set, in file order (paths in the order given, each glob's matches sorted), each
followed by EOS, are concatenated and cut into consecutive non-overlapping rows of ``seq_len + 1`` tokens.
``N = min(full rows available, max_tokens // seq_len)``: a partial last row is dropped, and no row is
included that would take the predicted tokens past ``max_tokens``. Row r predicts ``rows[r, 1:]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rewarm.data.config import ValSetConfig
from rewarm.data.loader import _backend, eos_of, tokenizer_hash
from rewarm.data.packing import encode
from rewarm.data.sources import Doc, RecordReader, expand_paths, file_signature, is_remote
from rewarm.data.valrows import ValRows, load_rows, save_rows
from rewarm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)
CACHE_VERSION = 1
_BATCH_DOCS = 256


def build_val_rows(val: ValSetConfig, tokenizer: Any, seq_len: int, cache_dir: str | Path, *,
                   on_bad_record: str = "skip", reader: str = "auto", vocab_size: int | None = None) -> ValRows:
    """The rows of one validation set, from the cache when its key matches (tokenizer, files, seq_len, budget).
    Pre-tokenized sets (format megatron) are read from their memmaps, ids checked below ``vocab_size``."""
    n_rows = val.max_tokens // seq_len
    if n_rows < 1:
        raise ConfigError("max_tokens", f"{val.max_tokens} is less than one row of data.seq_len={seq_len} tokens")
    if val.resolved_format() == "megatron":
        from rewarm.data.megatron.val import megatron_val_rows

        return megatron_val_rows(val, tokenizer, seq_len, n_rows, Path(cache_dir), vocab_size)
    files = expand_paths(val.resolved_paths(), key="paths") if not val.hf_dataset else []
    key = _cache_key(val, tokenizer, seq_len, files, on_bad_record)
    path = Path(cache_dir) / "val" / f"{key}.npz"
    if path.is_file():
        try:
            return load_rows(path)
        except (OSError, ValueError, KeyError) as e:  # a damaged cache file is rebuilt
            logger.warning("val cache %s is unreadable (%s); rebuilding", path, e)
    use_datasets = reader == "datasets" or bool(val.hf_dataset) or (reader == "auto" and any(map(is_remote, files)))
    rows = _tokenize_rows(val, tokenizer, seq_len, files, n_rows, on_bad_record, use_datasets)
    save_rows(path, rows)
    logger.info("val rows: %d x %d tokens from %d file(s), cached in %s", rows.rows.shape[0], seq_len + 1,
                len(files), path)
    return rows


def _cache_key(val: ValSetConfig, tokenizer: Any, seq_len: int, files: list[str], on_bad_record: str) -> str:
    payload = {"v": CACHE_VERSION, "tokenizer": tokenizer_hash(tokenizer), "eos": eos_of(tokenizer),
               "files": [file_signature(f) for f in files], "seq_len": seq_len, "max_tokens": val.max_tokens,
               "text_field": val.resolved_text_field(), "subset_field": val.resolved_subset_field(),
               "on_bad_record": on_bad_record}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _documents(val: ValSetConfig, files: list[str], on_bad_record: str, counter: list[int],
               use_datasets: bool) -> Iterator[Doc]:
    """Documents of the set in file order; bad records counted into counter[0]. Hub ids and remote files
    are read through `datasets` streaming (rewarm.data.hf), local files with the plain reader."""
    if use_datasets:
        from rewarm.data.hf import HFReader

        reader = HFReader(files, val.hf_dataset, val.hf_split, val.resolved_text_field(), val.resolved_subset_field(),
                          None, on_bad_record, 0, 1, None)
        yield from (doc for _, doc in reader)
        counter[0] += reader.skipped
        return
    for f in files:
        reader = RecordReader(f, val.resolved_text_field(), val.resolved_subset_field(), on_bad_record=on_bad_record)
        yield from reader
        counter[0] += reader.skipped


def _tokenize_rows(val: ValSetConfig, tokenizer: Any, seq_len: int, files: list[str], n_rows: int,
                   on_bad_record: str, use_datasets: bool) -> ValRows:
    need = n_rows * (seq_len + 1)  # tokens of the rows wanted
    eos, backend = eos_of(tokenizer), _backend(tokenizer)
    ids: list[np.ndarray] = []
    subs: list[np.ndarray] = []
    names: dict[str, int] = {}
    have, texts, labels, counter = 0, [], [], [0]
    docs = _documents(val, files, on_bad_record, counter, use_datasets)
    for doc in docs:
        texts.append(doc.text)
        labels.append(names.setdefault(doc.subset or "unknown", len(names)))
        if len(texts) == _BATCH_DOCS:
            have += _flush(backend, eos, texts, labels, ids, subs)
            texts, labels = [], []
            if have >= need:
                break
    if texts:
        _flush(backend, eos, texts, labels, ids, subs)
    docs.close()
    flat = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)
    n = min(n_rows, len(flat) // (seq_len + 1))
    if n == 0:
        raise DataError(f"validation files {files[:3]} hold {len(flat)} tokens: fewer than one row of "
                        f"seq_len + 1 = {seq_len + 1}")
    rows = torch.from_numpy(flat[: n * (seq_len + 1)].reshape(n, seq_len + 1).copy())
    token_subsets = None
    order = sorted(names)
    if val.resolved_subset_field():
        remap = np.asarray([order.index(k) for k in names], np.int64)  # first-seen index -> sorted index
        sub = remap[np.concatenate(subs)[: n * (seq_len + 1)]].reshape(n, seq_len + 1)
        token_subsets = torch.from_numpy(sub[:, 1:].copy())
    return ValRows(rows, token_subsets, order if token_subsets is not None else [], counter[0])


def _flush(backend: Any, eos: int, texts: list[str], labels: list[int], ids: list, subs: list) -> int:
    flat, starts = encode(backend, texts, eos)
    ids.append(flat)
    subs.append(np.repeat(np.asarray(labels, np.int64), np.diff(starts)))
    return len(flat)
