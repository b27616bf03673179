"""Pure helpers on the pipeline state carried by ``batch["data_state"]`` (no torch import).

Format (``version`` 2, ``data_order`` 3; see docs/resuming.md): one cursor
per *global* logical stream, keyed by the stream's number as a string, so a state saved by N ranks loads on
M ranks (each rank takes its own streams)::

    {"version": 2, "data_order": 3, "fingerprint": str,
     "layout": {"streams": S, "seed": int, "seq_len": int, "rows_per_step": G},   # must match on resume
     "world": {"world_size": W, "workers": K, "micro_batch_size": B, "grad_accum_steps": A},  # informational
     "source_names": [...], "sub_sources": {sub key: source index},
     "streams": {"<s>": {"pos": rows made by stream s, "subs": {sub key: cursor}}}}

A rank's state holds its own streams; ``gather_state`` / ``merge_states`` join them. Version 1 (before
data.streams) held ``"ranks": {"<rank>": {"batches", "streams": [...]}}`` with a per-rank order.
"""

from __future__ import annotations

from typing import Any

from rewarm.errors import ResumeError

STATE_VERSION = 2
DATA_ORDER_VERSION = 3
"""1: per-rank streams (before data.streams); 2: data.streams global streams, stream s reading the file parts of
reader s; 3: as 2, but with ``shuffle_files`` a text source's file parts go to the streams in a permutation seeded
by (run.seed, source), so that another seed reads the documents in another order (in 2 it only moved the order of
a stream's own parts, which is none when a source has fewer files than there are streams). A state of order 2
goes on in order 2."""


def stream_cursors(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stream state the data state holds (either format), each ``{"subs": {key: cursor}, ...}``."""
    if "streams" in state and isinstance(state["streams"], dict):
        return list(state["streams"].values())
    return [s for rank_state in state.get("ranks", {}).values() for s in rank_state["streams"]]


def state_metrics(state: dict[str, Any]) -> dict[str, float]:
    """Cumulative counters of a data state, summed over the streams it holds:
    ``data/skipped_records``, ``data/<source>/tokens`` (predicted tokens of its rows), ``data/<source>/fraction``
    (of all rows so far), ``data/<source>/passes`` (highest pass index any reader of the source reached)."""
    names: list[str] = state["source_names"]
    sid_of: dict[str, int] = state["sub_sources"]
    seq_len = int(state["layout"]["seq_len"])
    rows = [0] * len(names)
    passes = [0] * len(names)
    skipped = 0
    for stream in stream_cursors(state):
        for key, cursor in stream["subs"].items():
            sid = sid_of[key]
            rows[sid] += int(cursor["rows"])
            passes[sid] = max(passes[sid], int(cursor["epoch"]))
            skipped += int(cursor["skipped"])
    total = sum(rows)
    out: dict[str, float] = {"data/skipped_records": float(skipped)}
    for sid, name in enumerate(names):
        out[f"data/{name}/tokens"] = float(rows[sid] * seq_len)
        out[f"data/{name}/fraction"] = rows[sid] / total if total else 0.0
        out[f"data/{name}/passes"] = float(passes[sid])
    return out


def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One state holding the streams (version 1: the ranks) of all ``states`` (same fingerprint), e.g.
    gathered from every rank."""
    if not states:
        raise ValueError("no states to merge")
    fingerprints = {s["fingerprint"] for s in states}
    if len(fingerprints) != 1:
        raise ValueError(f"states of different data configs cannot be merged: {sorted(fingerprints)}")
    part = "streams" if "streams" in states[0] else "ranks"
    merged = dict(states[0])
    merged[part] = {}
    for s in states:
        merged[part].update(s[part])
    return merged


def gather_state(state: dict[str, Any]) -> dict[str, Any]:
    """All ranks' states merged into one (``torch.distributed.all_gather_object``); the state itself when
    torch.distributed is not initialised. Call it on every rank at the same point (it is a collective)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return state
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return merge_states(states)


def saved_world_size(state: dict[str, Any]) -> int | None:
    """The number of ranks that wrote a data state (either format), or None when it is not recorded."""
    world = state.get("world") or state.get("layout") or {}
    return int(world["world_size"]) if "world_size" in world else None


def rows_consumed(state: dict[str, Any], streams: int) -> int:
    """Global rows consumed by a state of all ``streams`` streams (version 2), checked to be the first rows
    of the global order (rows 0 .. g0 - 1, as ranks in lockstep leave it). Raises ResumeError otherwise."""
    saved = state["streams"]
    missing = [s for s in range(streams) if str(s) not in saved]
    if missing:
        raise ResumeError(f"data state holds {len(saved)} of the {streams} streams (missing {missing[:5]}...); save "
                          "the state gathered over all ranks (rewarm.data.gather_state)")
    pos = [int(saved[str(s)]["pos"]) for s in range(streams)]
    g0 = sum(pos)
    expected = [max(0, -(-(g0 - s) // streams)) for s in range(streams)]
    if pos != expected:
        bad = next(s for s in range(streams) if pos[s] != expected[s])
        raise ResumeError(f"data state is not at a row boundary of the global order: stream {bad} made {pos[bad]} "
                          f"rows, {expected[bad]} expected after {g0} rows in all")
    return g0


def rank_start(state: dict[str, Any], streams: int, world_size: int, rank: int) -> tuple[int, dict[int, Any]]:
    """(the rank's next local row ``j0``, its streams' states by local stream index) from a version-2 state
    of ``streams`` streams, for rank ``rank`` of ``world_size``: any world size dividing the rows consumed when
    the state holds every stream; the saved world size when it holds this rank's streams only."""
    local = streams // world_size
    mine = {t: state["streams"].get(str(rank + world_size * t)) for t in range(local)}
    if len(state["streams"]) < streams and saved_world_size(state) == world_size and all(mine.values()):
        pos = [int(s["pos"]) for s in mine.values()]
        j0 = sum(pos)
        if pos != [max(0, -(-(j0 - t) // local)) for t in range(local)]:
            raise ResumeError(f"data state of rank {rank} is not at a row boundary: its streams made {pos} rows")
        return j0, mine
    g0 = rows_consumed(state, streams)
    if g0 % world_size:
        raise ResumeError(f"data state saved after {g0} rows, not a multiple of the {world_size} ranks now; resume "
                          f"from a checkpoint at an optimizer step (rows per step divisible by the world size)")
    return g0 // world_size, mine
