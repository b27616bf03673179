"""Pure helpers on the pipeline state carried by ``batch["data_state"]`` (no torch import)."""

from __future__ import annotations

from typing import Any


def state_metrics(state: dict[str, Any]) -> dict[str, float]:
    """Cumulative counters of a data state, summed over the ranks it holds:
    ``data/skipped_records``, ``data/<source>/tokens`` (predicted tokens of its rows), ``data/<source>/fraction``
    (of all rows so far), ``data/<source>/passes`` (highest pass index any reader of the source reached)."""
    names: list[str] = state["source_names"]
    sid_of: dict[str, int] = state["sub_sources"]
    seq_len = int(state["layout"]["seq_len"])
    rows = [0] * len(names)
    passes = [0] * len(names)
    skipped = 0
    for rank_state in state["ranks"].values():
        for stream in rank_state["streams"]:
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
    """One state holding the ranks of all ``states`` (same fingerprint), e.g. gathered from every rank."""
    if not states:
        raise ValueError("no states to merge")
    fingerprints = {s["fingerprint"] for s in states}
    if len(fingerprints) != 1:
        raise ValueError(f"states of different data configs cannot be merged: {sorted(fingerprints)}")
    merged = dict(states[0])
    merged["ranks"] = {}
    for s in states:
        merged["ranks"].update(s["ranks"])
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
