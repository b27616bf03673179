"""Config edge of pre-tokenized sources: their path prefixes, header checks (``rewarm check`` and the start
of a run), Pythia's start row, the sidecar written by ``rewarm tokenize`` and the data files of a fingerprint.
Every refusal is a ConfigError naming the key and the file."""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import numpy as np

from rewarm.data.megatron.format import bin_files, prefix_of
from rewarm.data.megatron.stream import open_file
from rewarm.errors import ConfigError, DataError

SAMPLE_TOKENS = 1 << 16  # ids checked at each end of a file by `rewarm check`
EOD_SCAN_ROWS = 64  # rows scanned for an EOD token before document_mask is allowed on Pythia's rows


def prefixes_of(src: Any, key: str) -> tuple[str, ...]:
    """Path prefixes of a pre-tokenized source (``dir/name`` for dir/name.bin + .idx), in the order given."""
    out: list[str] = []
    for path in src.resolved_paths():
        path = os.path.expanduser(path[len("file://"):] if path.startswith("file://") else path)
        if set("*?[") & set(path):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise ConfigError(key, f"the glob {path!r} matches no file; fix the path or the pattern")
            out += [prefix_of(m) for m in matches]
        else:
            out.append(prefix_of(path))
    return tuple(dict.fromkeys(out))


def first_row(src: Any) -> int:
    """Pythia's first row (start_step x rows_per_step), or -1: documents, not rows."""
    return src.start_step * src.rows_per_step if src.preset == "pythia_preshuffled" else -1


def open_checked(prefix: str, key: str) -> Any:
    """The TokenFile of ``prefix``; its format errors as ConfigError(key, ...)."""
    try:
        return open_file(prefix)
    except DataError as e:
        raise ConfigError(key, str(e)) from None


def check_source(src: Any, key: str, seq_len: int, *, vocab_size: int | None = None, eos_id: int | None = None,
                 document_mask: bool = False) -> tuple[str, ...]:
    """Headers, .bin sizes, ids sampled at both ends (with ``vocab_size``), Pythia's start row and (with
    ``document_mask`` and ``eos_id``) its EOD tokens. Returns the prefixes."""
    paths_key = _key(key, "paths")
    prefixes = prefixes_of(src, paths_key)
    for prefix in prefixes:
        tf = open_checked(prefix, paths_key)
        if vocab_size:
            _sample_ids(tf, vocab_size, paths_key)
        if src.preset == "pythia_preshuffled":
            _check_start(src, tf, seq_len + 1, key)
            if document_mask and eos_id is not None:
                _check_eod(tf, first_row(src), seq_len + 1, eos_id)
    return prefixes


def _key(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


def _sample_ids(tf: Any, vocab_size: int, key: str) -> None:
    n = min(SAMPLE_TOKENS, tf.n_tokens)
    for lo in (0, tf.n_tokens - n):
        ids = tf.tokens(lo, lo + n)
        bad = np.flatnonzero((ids >= vocab_size) | (ids < 0)) if ids.size else ids
        if len(bad):
            at = lo + int(bad[0])
            doc = _doc_at(tf, at)
            raise ConfigError(key, f"{tf.bin_of(at)}: token id {int(ids[bad[0]])} at token {at}{doc} is outside "
                                   f"the model's vocabulary of {vocab_size}; the file was tokenized with another "
                                   "tokenizer (re-run `rewarm tokenize` with this model's tokenizer)")


def _doc_at(tf: Any, token: int) -> str:
    """' (document j)' holding token offset ``token`` (pointers are sorted byte offsets)."""
    seq = int(np.searchsorted(tf.pointers, token * tf.dtype.itemsize, side="right")) - 1
    doc = int(np.searchsorted(tf.doc_idx, seq, side="right")) - 1 if tf.by_doc_idx else seq
    return f" (document {doc})"


def _check_start(src: Any, tf: Any, row_len: int, key: str) -> None:
    rows = tf.n_tokens // row_len
    start = first_row(src)
    if start >= rows:
        raise ConfigError(_key(key, "start_step"), f"{src.start_step} starts at row {start:,} (start_step x rows_per_step "
                          f"= {src.start_step} x {src.rows_per_step}), but {tf.prefix} holds {rows:,} rows of {row_len} "
                          f"tokens ({rows // src.rows_per_step:,} steps); choose a smaller start_step")


def _check_eod(tf: Any, start: int, row_len: int, eos_id: int) -> None:
    lo = start * row_len
    ids = tf.tokens(lo, min(tf.n_tokens, lo + EOD_SCAN_ROWS * row_len))
    if not np.any(ids == eos_id):
        raise ConfigError("document_mask", f"{tf.prefix}: no EOD token (id {eos_id}) in {EOD_SCAN_ROWS} rows from row "
                          f"{start:,}: Pythia's rows carry no document boundaries to mask; set data.document_mask=false")


def check_sidecar(prefix: str, tokenizer_hash: str, key: str) -> None:
    """Refuse files whose sidecar ``PREFIX.json`` (written by `rewarm tokenize`) names another tokenizer."""
    path = prefix + ".json"
    if not os.path.isfile(path):
        return
    try:
        meta = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as e:
        raise ConfigError(key, f"{path}: unreadable sidecar ({e})") from None
    tok = meta.get("tokenizer", {}) if isinstance(meta, dict) else {}
    if tok.get("hash") and tok["hash"] != tokenizer_hash:
        raise ConfigError(key, f"{path}: the files were tokenized with {tok.get('name')!r} (hash {tok['hash']}), "
                               f"not the model's tokenizer (hash {tokenizer_hash}); re-run `rewarm tokenize`")


def data_files(prefix: str) -> list[str]:
    """The files a prefix stands for (for fingerprints and cache keys): its .idx, then its .bin or shards."""
    try:
        return [prefix + ".idx", *bin_files(prefix)]
    except DataError:
        return [prefix + ".idx"]
