"""What one reading process (a DataLoader worker, or the training process itself) makes: the rows of the
streams it owns, in the rank's row order, handed over as *items* of several rows.

Rank ``i`` of ``W`` reads its local rows ``j = 0, 1, ...`` (global row ``i + W * j``); local row ``j`` is row
``j // L`` of its local stream ``j % L`` (``L = S / W``; local stream ``t`` is global stream ``i + W * t``).
With ``K`` reading processes per rank, process ``w`` owns the ``L / K`` consecutive local streams
``w * L / K .. (w + 1) * L / K - 1``: the rank's rows come in runs of ``L / K`` from one process, which the
loader puts back in order by row number (``rows``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from rewarm.data.megatron.rows import RowReader
from rewarm.data.mixing import Plan, RowMaker, document_positions, stream_batch_docs, sub_spec
from rewarm.data.packing import SourceExhausted, initial_cursor, tokenize_pool

# Rows a process makes at once on the bulk path (at least 16 per stream): one Python call per stream and block,
# not per row. 1024 rows of 2049 uint16 ids are 4 MB. The first block is one item, each next one twice the last.
BULK_ROWS = 1024


def owned_rows(j0: int, local: int, per_process: int, w: int) -> Iterator[int]:
    """Local rows ``j >= j0`` of reading process ``w``: those whose local stream ``j % local`` lies in
    ``[w * per_process, (w + 1) * per_process)``."""
    lo, hi, j = w * per_process, (w + 1) * per_process, j0
    while True:
        t = j % local
        if lo <= t < hi:
            yield j
            j += 1
        else:
            j += lo - t if t < lo else local - t + lo


def process_items(plan: Plan, tokenizer: Any, w: int, j0: int, states: dict[int, Any], per_item: int,
                  compact: bool = True, aligned: bool = False) -> Iterator[dict[str, Any]]:
    """Items of ``per_item`` rows of reading process ``w`` from local row ``j0`` on (``states``: the local
    streams' states). A source ending (on_source_end=stop) ends them with ``{"_end": source, "row": j}``; an
    error is raised after the item of the rows made before it. ``compact``: narrow the token ids (what a
    worker sends through its pipe). ``aligned``: every item is a whole micro-batch (the training process
    reading for itself), so a stream's cursor is needed after its last row in the item only."""
    if bulk_ok(plan):
        yield from bulk_items(plan, w, j0, states, per_item, compact, aligned)
        return
    local = plan.local_streams
    per_process = local // plan.workers
    pool, makers = tokenize_pool(), {}
    peers = tuple(plan.global_stream(t) for t in range(w * per_process, (w + 1) * per_process))
    rows = owned_rows(j0, local, per_process, w)
    while True:
        made: list[tuple[int, int, np.ndarray, int, list[int], dict[str, Any]]] = []
        j = -1
        try:
            for j in itertools.islice(rows, per_item):
                t = j % local
                if t not in makers:
                    makers[t] = RowMaker(plan, plan.global_stream(t), tokenizer, states.get(t), pool, per_process,
                                         peers)
                maker = makers[t]
                assert maker.pos == j // local, f"stream {maker.stream} is at row {maker.pos}, not {j // local}"
                row, i, starts = maker.next_row()
                made.append((j, t, row, i, starts, maker if aligned else maker.sub_cursor(i)))
        except SourceExhausted as e:
            if made:
                yield make_item(plan, made, compact)
            yield {"_end": str(e), "row": j}
            return
        except Exception:
            if made:
                yield make_item(plan, made, compact)
            raise
        yield make_item(plan, made, compact)


def bulk_ok(plan: Plan) -> bool:
    """One pre-tokenized source and no document starts to find: every row is a slice of its stream's tokens,
    made in bulk (``bulk_items``), the same rows and cursors as row by row."""
    return len(plan.subs) == 1 and plan.subs[0].backend == "megatron" and not plan.document_mask


def bulk_items(plan: Plan, w: int, j0: int, states: dict[int, Any], per_item: int, compact: bool = True,
               aligned: bool = False) -> Iterator[dict[str, Any]]:
    """``process_items`` for a ``bulk_ok`` plan: blocks of rows of all the process's streams at once. Rows are
    counted in the process's order: ``q = round * P + i`` is row ``round`` of its stream ``i`` of ``P``."""
    local, P = plan.local_streams, plan.local_streams // plan.workers
    r0, i0 = divmod(j0, local)
    q = r0 * P + min(max(i0 - w * P, 0), P)
    readers = {i: _reader(plan, w * P + i, states.get(w * P + i), P, q) for i in range(P)}
    n, most = per_item, per_item * -(-max(BULK_ROWS, 16 * P) // per_item)
    while True:
        tokens, cursors, error = _block(readers, q, n, P)
        m = len(cursors)
        qs = np.arange(q, q + m + 1)
        rows = (qs // P) * local + w * P + qs % P  # local row numbers (one more: where an error stopped them)
        for a in range(0, m, per_item):
            yield _bulk_item(plan, tokens[a : a + per_item], rows[a : min(m, a + per_item)],
                             cursors[a : a + per_item], P if aligned else 0, compact)
        if error is not None:
            if isinstance(error, SourceExhausted):
                yield {"_end": str(error), "row": int(rows[m])}
                return
            raise error
        q, n = q + n, min(2 * n, most)  # the first rows soon (a resume), then blocks of ``most``


def _reader(plan: Plan, t: int, state: dict[str, Any] | None, P: int, q: int) -> RowReader:
    """The RowReader of local stream ``t`` (its process's stream ``t % P``), checked to be at its row of ``q``."""
    state = state or {"pos": 0, "subs": {}}
    i, stream = t % P, plan.global_stream(t)
    want = q // P + (1 if q % P > i else 0)
    assert int(state["pos"]) == want, f"stream {stream} is at row {state['pos']}, not {want}"
    sub = plan.subs[0]
    return RowReader(sub_spec(plan, 0, stream, P), plan.eos_id, plan.seq_len, stream_batch_docs(plan.batch_docs, P),
                     state["subs"].get(sub.key) or initial_cursor())


def _block(readers: dict[int, RowReader], q: int, n: int, P: int) -> tuple[np.ndarray, list[Any], Exception | None]:
    """Rows ``q .. q + n - 1`` (process order) as (m, row_len) tokens and the cursor after each, ``m < n`` when
    an error stopped a stream (returned: the rows before the first row it could not make)."""
    ra, rb = q // P, -(-(q + n) // P)
    made, fail, error = [], q + n, None
    for i, reader in readers.items():
        first = ra * P + i if ra * P + i >= q else (ra + 1) * P + i
        if first >= q + n:
            continue
        parts, cursors, e = reader.take((q + n - 1 - first) // P + 1)
        made.append((i, first, parts, cursors))
        if e is not None and first + len(cursors) * P < fail:
            fail, error = first + len(cursors) * P, e
    some = [p[0] for _, _, parts, _ in made for p in parts[:1]]
    row_len = next(iter(readers.values())).row_len
    block = np.empty(((rb - ra) * P, row_len), some[0].dtype if some else np.int32)
    by_round = block.reshape(rb - ra, P, row_len)
    out: list[Any] = [None] * n
    for i, first, parts, cursors in made:
        r = first // P - ra
        for part in parts:
            by_round[r : r + len(part), i] = part
            r += len(part)
        out[first - q : first - q + len(cursors) * P : P] = cursors
    m = fail - q
    return block[q - ra * P : q - ra * P + m], out[:m], error


def _bulk_item(plan: Plan, tokens: np.ndarray, rows: np.ndarray, cursors: list[Any], aligned: int,
               compact: bool) -> dict[str, Any]:
    """An item of ``make_item``'s form. ``aligned`` (P, the process's streams) or 0: a row is its stream's last
    in the item when no row of the stream lies P rows later in it; only those carry a cursor when aligned."""
    sub, local, n = plan.subs[0], plan.local_streams, len(rows)
    ts = (rows % local).tolist()
    keep = n - aligned if aligned else 0
    cur = [(t, sub.key, c if k >= keep else None) for k, (t, c) in enumerate(zip(ts, cursors, strict=True))]
    return {"tokens": narrow(tokens) if compact else tokens, "source_ids": np.full(n, sub.source_id, np.int64),
            "rows": rows, "cursors": cur}


def make_item(plan: Plan, made: list[Any], compact: bool = True) -> dict[str, Any]:
    """Rows as compact arrays: ``tokens`` (n, T + 1) (uint16 where the ids fit), ``source_ids`` (n,), ``rows``
    (n,) local row numbers, ``cursors`` [(local stream, sub key, cursor after the row)]; with document_mask
    ``position_ids`` (n, T) and ``masked`` (per row: label offsets whose next token starts a document)."""
    tokens = np.stack([m[2] for m in made])
    sids = np.asarray([sub.source_id for sub in plan.subs], np.int64)[[m[3] for m in made]]
    item: dict[str, Any] = {"tokens": narrow(tokens) if compact else tokens, "source_ids": sids,
                            "rows": np.asarray([m[0] for m in made]), "cursors": cursors_of(plan, made)}
    if plan.document_mask:
        starts = [m[4] for m in made]
        pos = document_positions(starts, plan.seq_len)
        item["position_ids"] = pos.astype(np.int16) if plan.seq_len <= 1 << 15 else pos
        item["masked"] = [[p - 1 for p in s if p >= 1] for s in starts]
    return item


def cursors_of(plan: Plan, made: list[Any]) -> list[tuple[int, str | None, dict[str, Any] | None]]:
    """(local stream, sub key, cursor after the row) per row. A row made with its RowMaker in place of the cursor
    (an aligned item) gets ``(stream, None, every sub-stream cursor of the stream)`` if it is the stream's last
    row in the item, else ``(stream, key, None)``: the stream's state is taken after the whole item only."""
    last = {m[1]: k for k, m in enumerate(made)}
    out = []
    for k, m in enumerate(made):
        if isinstance(m[5], RowMaker):  # (stream, None, all its sub-streams' cursors) or (stream, key, None)
            out.append((m[1], None, m[5].state()["subs"]) if last[m[1]] == k else (m[1], plan.subs[m[3]].key, None))
        else:
            out.append((m[1], plan.subs[m[3]].key, m[5]))
    return out


def narrow(tokens: np.ndarray) -> np.ndarray:
    """The narrowest dtype that holds the token ids (< 65536: uint16): what a worker pickles is 2x smaller."""
    if tokens.dtype != np.uint16 and tokens.size and int(tokens.max()) < 1 << 16 and int(tokens.min()) >= 0:
        return tokens.astype(np.uint16)
    return tokens


def micro_batch(refs: list[tuple[dict[str, Any], int]], seq_len: int, document_mask: bool) -> dict[str, np.ndarray]:
    """The compact micro-batch of rows ``refs`` ((item, index) in row order): ``tokens``, ``source_ids`` and
    with document_mask ``position_ids`` and ``masked`` (flat indices into the (B, T) labels)."""
    first = refs[0][0]
    if all(it is first for it, _ in refs) and [i for _, i in refs] == list(range(len(first["rows"]))):
        parts = [(first, 0, len(refs))]  # the whole item: its arrays as they are
    else:
        parts = []
        for it, i in refs:
            if parts and parts[-1][0] is it and parts[-1][2] == i:
                parts[-1] = (it, parts[-1][1], i + 1)
            else:
                parts.append((it, i, i + 1))

    def cat(key: str) -> np.ndarray:
        if len(parts) == 1 and parts[0][1] == 0 and parts[0][2] == len(parts[0][0]["rows"]):
            return parts[0][0][key]
        return np.concatenate([it[key][a:b] for it, a, b in parts])

    out = {"tokens": cat("tokens"), "source_ids": cat("source_ids")}
    if document_mask:
        out["position_ids"] = cat("position_ids")
        out["masked"] = np.asarray([b * seq_len + m for b, (it, i) in enumerate(refs) for m in it["masked"][i]],
                                   np.int64)
    return out
