"""Pure helpers on data states: metrics and merging of per-rank states."""

from __future__ import annotations

import pytest

from rewarm.data import gather_state, merge_states, state_metrics


def rank_state(rank: int, rows_a: int, rows_b: int, skipped: int, fingerprint: str = "f") -> dict:
    cursor = {"epoch": 0, "unit": 0, "record": 3, "token": 0, "rows": 0}
    subs = {"a": {**cursor, "rows": rows_a, "skipped": skipped},
            "b/Sub1": {**cursor, "rows": rows_b, "skipped": 0, "epoch": 2}}
    return {"version": 1, "fingerprint": fingerprint, "layout": {"seq_len": 10}, "source_names": ["a", "b"],
            "sub_sources": {"a": 0, "b/Sub1": 1}, "ranks": {str(rank): {"batches": 1, "streams": [{"subs": subs}]}}}


def test_state_metrics_sum_over_ranks_and_sub_streams():
    merged = merge_states([rank_state(0, 3, 1, 2), rank_state(1, 1, 3, 1)])
    assert sorted(merged["ranks"]) == ["0", "1"]
    m = state_metrics(merged)
    assert m == {"data/skipped_records": 3.0, "data/a/tokens": 40.0, "data/a/fraction": 0.5, "data/a/passes": 0.0,
                 "data/b/tokens": 40.0, "data/b/fraction": 0.5, "data/b/passes": 2.0}


def test_merge_refuses_states_of_different_data_and_gather_without_distributed_is_identity():
    with pytest.raises(ValueError, match="different data"):
        merge_states([rank_state(0, 1, 1, 0, "f"), rank_state(1, 1, 1, 0, "g")])
    state = rank_state(0, 1, 1, 0)
    assert gather_state(state) is state
