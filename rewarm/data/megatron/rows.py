"""Many rows of one pre-tokenized sub-stream at once, with the cursor after each row: what
``rewarm.data.packing.SubStream.take_row`` gives row by row (the same rows, the same cursors), for the
training process's bulk path (``rewarm.data.rows``), which makes the rows of all its streams for many rounds
in a few numpy steps instead of a Python call per row.

A row is ``row_len`` tokens of the sub-stream's chunks (``stream.token_chunks``). Rows inside a chunk are one
slice of it; their cursors are worked out together: the cursor after a row ending at offset ``e`` of a chunk
names the document holding ``e`` and the offset in it, or the chunk's ``end_state`` when ``e`` is its end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from rewarm.data.chunks import Chunk
from rewarm.data.megatron.stream import token_chunks


class RowReader:
    """Rows of one pre-tokenized sub-stream from ``cursor`` on (a SubStream cursor: epoch, unit, record,
    token, skipped, rows)."""

    def __init__(self, spec: Any, eos_id: int, seq_len: int, batch_docs: int, cursor: dict[str, int]) -> None:
        self.row_len, self.rows = seq_len + 1, int(cursor["rows"])
        self._skip = int(cursor["token"])  # tokens of the first document already used before a restore
        self._chunks: Iterator[Chunk] = token_chunks(spec, dict(cursor), eos_id, batch_docs)
        self._chunk: Chunk | None = None
        self._pos = 0
        self._records: np.ndarray | None = None  # the current chunk's records as an array (made once)

    def take(self, n: int) -> tuple[list[np.ndarray], list[dict[str, int]], Exception | None]:
        """Up to ``n`` rows as parts (k_i, row_len) (slices of chunks where they lie in one), the cursor after
        each row, and the error (SourceExhausted, DataError...) that stopped it short, raised by no one."""
        parts: list[np.ndarray] = []
        cursors: list[dict[str, int]] = []
        try:
            while n > 0:
                c = self._current()
                whole = min(n, (len(c.flat) - self._pos) // self.row_len)
                if whole:
                    lo, self._pos = self._pos, self._pos + whole * self.row_len
                    parts.append(c.flat[lo : self._pos].reshape(whole, self.row_len))
                    cursors += self._cursors(c, lo + self.row_len * np.arange(1, whole + 1))
                    n -= whole
                else:
                    parts.append(self._spanning()[None])
                    cursors += self._cursors(self._chunk, np.asarray([self._pos]))  # type: ignore[arg-type]
                    n -= 1
        except Exception as e:  # the caller hands out the rows made before it, then ends or raises
            return parts, cursors, e
        return parts, cursors, None

    def _current(self) -> Chunk:
        while self._chunk is None or self._pos >= len(self._chunk.flat):
            self._chunk, self._pos, self._records = next(self._chunks), 0, None
            if self._chunk.flat.size and self._skip:
                self._pos, self._skip = self._skip, 0
        return self._chunk

    def _spanning(self) -> np.ndarray:
        """The row that starts in the current chunk and ends in a later one."""
        parts, filled = [], 0
        while filled < self.row_len:
            c = self._current()
            take = min(self.row_len - filled, len(c.flat) - self._pos)
            parts.append(c.flat[self._pos : self._pos + take])
            filled, self._pos = filled + take, self._pos + take
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def _cursors(self, c: Chunk, ends: np.ndarray) -> list[dict[str, int]]:
        """The cursors after rows ending at offsets ``ends`` of chunk ``c`` (counting the rows made)."""
        first = self.rows + 1
        self.rows += len(ends)
        inside = ends < len(c.flat)
        d = np.searchsorted(c.starts, ends[inside], side="right") - 1
        if self._records is None:
            self._records = np.asarray(c.records)
        tok = (ends[inside] - c.starts[d]).tolist()
        epoch, unit = c.epoch, c.unit
        out = [{"epoch": epoch, "unit": unit, "record": r, "token": t, "skipped": s, "rows": n}
               for r, t, s, n in zip(self._records[d].tolist(), tok, c.skipped[d].tolist(), range(first, self.rows + 1),
                                     strict=False)]  # the range runs one further when the last row ends the chunk
        if not inside[-1]:  # the last row ends the chunk (only the last can)
            out.append({**c.end_state, "rows": self.rows})
        return out
