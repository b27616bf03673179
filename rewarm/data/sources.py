"""Files and records: path expansion, path checks, and record readers for jsonl / .zst / .gz / parquet.

A *record* is one line of a jsonl file (or one parquet row), numbered from 0 in file order; bad records
(malformed JSON, invalid UTF-8, missing / non-string / empty text, truncated compressed stream, unreadable
file) are skipped and counted, or raise DataError naming file and line, per ``on_bad_record``.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from rewarm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes read from a compressed file per call
_GLOB_CHARS = set("*?[")
_warned: set[tuple[str, str]] = set()  # (what, file) warned about in this process since the run started
_warned_lock = threading.Lock()  # readers run in prefetch threads


def reset_warnings() -> None:
    """Start of a run: each file's bad-record and empty-file warnings may be logged once again."""
    with _warned_lock:
        _warned.clear()


def first_warning(what: str, name: str) -> bool:
    """True the first time ``what`` is met for file ``name`` in this run: a reader is made per pass over a
    file, so its own flag would warn once per pass. The set lives in the process: each reading process (a
    rank, a DataLoader worker) warns at most once per file; every record has one reader, so a bad record
    is warned about by one process at most."""
    with _warned_lock:
        if (what, name) in _warned:
            return False
        _warned.add((what, name))
        return True


def is_remote(path: str) -> bool:
    """True for fsspec URLs (s3://, https://, hf://, ...); file:// and plain paths are local."""
    return "://" in path and not path.startswith("file://")


def expand_paths(patterns: Iterable[str], key: str = "paths") -> list[str]:
    """Files of ``patterns`` in the order given; each glob's matches sorted. Raises ConfigError when a local
    path does not exist or a glob matches nothing (``key`` names the config key)."""
    out: list[str] = []
    for pattern in patterns:
        if is_remote(pattern):
            out += _expand_remote(pattern)
            continue
        local = pattern[len("file://") :] if pattern.startswith("file://") else pattern
        local = os.path.expanduser(local)
        if _GLOB_CHARS & set(local):
            matches = sorted(p for p in glob.glob(local, recursive=True) if os.path.isfile(p))
            if not matches:
                raise ConfigError(key, f"the glob {pattern!r} matches no file; fix the path or the pattern")
            out += matches
        elif os.path.isfile(local):
            out.append(local)
        else:
            raise ConfigError(key, f"file not found: {pattern!r}; fix the path (globs like dir/*.jsonl.zst are allowed)")
    return out


def _expand_remote(pattern: str) -> list[str]:
    """Remote globs are expanded through fsspec; a remote path without glob characters is kept as is."""
    if not (_GLOB_CHARS & set(pattern)):
        return [pattern]
    import fsspec

    fs, _, _ = fsspec.get_fs_token_paths(pattern)
    protocol = pattern.split("://", 1)[0]
    return [f"{protocol}://{p}" for p in sorted(fs.glob(pattern))]


def get_field(record: Any, dotted: str) -> Any:
    """``record["meta"]["pile_set_name"]`` for ``"meta.pile_set_name"``; None when absent."""
    for part in dotted.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


@dataclass(frozen=True)
class Doc:
    """One usable document: its record index in the file, its text and subset (None without a subset field)."""

    index: int
    text: str
    subset: str | None


class RecordReader:
    """Reads the documents of one file: records ``i >= start`` with ``i % stride == offset``.

    ``skipped`` counts the bad records met so far (among the records this reader owns). Iterate once.
    The first bad record of a file is logged once per run (``first_warning``), however many passes read it.
    """

    def __init__(
        self,
        path: str,
        text_field: str = "text",
        subset_field: str | None = None,
        *,
        on_bad_record: str = "skip",
        start: int = 0,
        stride: int = 1,
        offset: int = 0,
        subsets: frozenset[str] | None = None,
        share: Any = None,
    ) -> None:
        self.path, self.text_field, self.subset_field = path, text_field, subset_field
        self.share = share  # a key: the readers of this process with the same key share one decompression
        self.on_bad_record, self.start, self.stride, self.offset = on_bad_record, start, stride, offset
        self.subsets = subsets
        self.skipped = 0

    def __iter__(self) -> Iterator[Doc]:
        try:
            records = self._records()
            n = self.start - 1  # lines before start are skipped unread: not an empty file
            for n, raw in records:
                if raw is None or n < self.start or n % self.stride != self.offset:
                    continue
                doc = self._parse(n, raw)
                if doc is not None:
                    yield doc
            if n < 0 and first_warning("empty", self.path):
                logger.warning("%s: empty file (no records)", self.path)
        except (OSError, EOFError, ValueError, zlib.error, _zstd_error()) as e:
            # Unreadable or truncated: the rest of the file is lost, counted as one bad record.
            self._bad(-1, f"unreadable or truncated file ({type(e).__name__}: {e})")

    def _records(self) -> Iterator[tuple[int, Any]]:
        if _is_parquet(self.path):
            return _parquet_rows(self.path)
        if self.share is not None and self.stride > 1:
            from rewarm.data.shared import shared_lines

            return shared_lines((self.path, self.stride, self.share), lambda: _jsonl_lines(self.path), self.start,
                                self.stride, self.offset, self.share[-1] if isinstance(self.share, tuple) else 0)
        return _jsonl_lines(self.path, self.start)

    def _parse(self, n: int, raw: Any) -> Doc | None:
        if isinstance(raw, bytes):
            if not raw.strip():
                return None  # a blank line holds no document
            try:
                raw = json.loads(raw)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                return self._bad(n, f"malformed JSON or invalid UTF-8 ({e})")
        text = get_field(raw, self.text_field)
        if not isinstance(text, str):
            return self._bad(n, f"field {self.text_field!r} is missing or not a string")
        if not text.strip():
            return self._bad(n, f"empty text in field {self.text_field!r}")
        subset = None
        if self.subset_field:
            value = get_field(raw, self.subset_field)
            subset = None if value is None else str(value)
        if self.subsets is not None and subset not in self.subsets:
            return None  # filtered out by the subset selection, not a bad record
        return Doc(n, text, subset)

    def _bad(self, n: int, reason: str) -> None:
        where = f"{self.path}:{n + 1}" if n >= 0 else self.path
        if self.on_bad_record == "error":
            raise DataError(f"{where}: {reason} (set data.on_bad_record=skip to skip such records)")
        self.skipped += 1
        if first_warning("bad record", self.path):
            logger.warning("%s: skipping bad record: %s (further bad records of this file are counted "
                           "in data/skipped_records, not logged)", where, reason)
        return None


class _ZstdTruncated(EOFError):
    """A .zst stream that ends inside a frame."""


def _zstd_error() -> type[Exception]:
    import zstandard

    return zstandard.ZstdError


def _open_binary(path: str) -> IO[bytes]:
    if is_remote(path):
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path[len("file://") :] if path.startswith("file://") else path, "rb")


def _is_parquet(path: str) -> bool:
    return path.endswith(".parquet")


def _jsonl_lines(path: str, skip: int = 0) -> Iterator[tuple[int, bytes]]:
    """(line number from 0, raw line bytes) of a .jsonl, .jsonl.zst or .jsonl.gz file, from line ``skip`` on."""
    with _open_binary(path) as fh:
        if path.endswith(".zst"):
            chunks: Iterator[bytes] = _zstd_chunks(fh)
        elif path.endswith(".gz"):
            chunks = _gzip_chunks(fh)
        else:
            chunks = iter(lambda: fh.read(_CHUNK), b"")
        yield from enumerate(_split_lines(_skip_lines(chunks, skip)), start=skip)


def _skip_lines(chunks: Iterator[bytes], n: int) -> Iterator[bytes]:
    """The byte stream from line ``n`` on. Chunks before it are dropped by counting their newlines (C speed)
    instead of splitting them into lines: a resume deep in a shard costs its decompression, not a Python
    step per skipped record."""
    for chunk in chunks:
        if n:
            k = chunk.count(b"\n")
            if k < n:
                n -= k
                continue
            pos = -1
            for _ in range(n):
                pos = chunk.index(b"\n", pos + 1)
            chunk, n = chunk[pos + 1 :], 0
        yield chunk


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    tail = b""
    for chunk in chunks:
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail


def _zstd_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    """Decompressed chunks of a (multi-frame) zstd stream; raises _ZstdTruncated when it ends mid-frame
    (zstandard's stream reader returns a silent EOF there)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj, pending = dctx.decompressobj(), False
    for data in iter(lambda: fh.read(_CHUNK), b""):
        while data:
            pending = True
            out = dobj.decompress(data)
            if out:
                yield out
            data = b""
            if dobj.eof:
                data, dobj, pending = dobj.unused_data, dctx.decompressobj(), False
    if pending:
        raise _ZstdTruncated("the zstd stream ends inside a frame")


def _gzip_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=fh) as gz:  # a truncated stream raises EOFError at its end
        yield from iter(lambda: gz.read(_CHUNK), b"")


def _parquet_rows(path: str) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    n = 0
    with _open_binary(path) as fh:
        for batch in pq.ParquetFile(fh).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                yield n, row
                n += 1


def file_signature(path: str) -> tuple[str, int, int]:
    """(path, size, mtime_ns) of a local file, for cache keys and fingerprints; remote: (path, -1, -1)."""
    if is_remote(path):
        return (path, -1, -1)
    try:
        st = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)
