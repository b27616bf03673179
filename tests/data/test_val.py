"""Validation rows: the exact definition of the skeleton issue (item 6), subsets, and the disk cache."""

from __future__ import annotations

import os

import pytest
import torch
from data_helpers import SLIM_SETS, records, write_jsonl

from rewarm.data import build_val_rows
from rewarm.errors import ConfigError, DataError


def reference_stream(tokenizer, recs, field):
    ids, subsets = [], []
    for r in recs:
        toks = tokenizer(r["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids += toks
        subsets += [r["meta"][field]] * len(toks)
    return ids, subsets


def test_rows_follow_the_definition(tokenizer, data_cfg, tmp_path):
    a, b = records(30, start_id=0, schema="slim"), records(30, start_id=100, schema="slim")
    pa, pb = write_jsonl(tmp_path / "b.jsonl.zst", a), write_jsonl(tmp_path / "a.jsonl.zst", b)
    cfg = data_cfg(train={"t": {"paths": [str(pa)]}},
                   val={"v": {"paths": [str(pa), str(pb)], "preset": "slimpajama", "max_tokens": 20 * 7 + 5}})
    val = build_val_rows(cfg.val["v"], tokenizer, 20, tmp_path / "cache")
    ids, subsets = reference_stream(tokenizer, a + b, "redpajama_set_name")  # paths in the order given
    assert len(ids) > 8 * 21
    assert val.rows.shape == (7, 21)  # max_tokens // seq_len rows: none past the budget
    assert val.rows.flatten().tolist() == ids[: 7 * 21]
    names = val.subset_names
    assert names == sorted(set(subsets[: 7 * 21]) | set(names)) and set(names) <= set(SLIM_SETS)
    expect = [[names.index(s) for s in subsets[r * 21 + 1 : (r + 1) * 21]] for r in range(7)]
    assert val.token_subsets is not None and val.token_subsets.tolist() == expect  # of the predicted tokens
    assert val.num_tokens == 7 * 20


def test_partial_last_row_is_dropped_and_no_subsets_without_field(tokenizer, data_cfg, tmp_path):
    recs = records(10)
    path = write_jsonl(tmp_path / "v.jsonl", recs)
    cfg = data_cfg(train={"t": {"paths": [str(path)]}}, val={"v": {"paths": [str(path)], "max_tokens": 10**6}})
    val = build_val_rows(cfg.val["v"], tokenizer, 16, tmp_path / "cache")
    ids, _ = reference_stream(tokenizer, recs, "pile_set_name")
    assert val.rows.shape == (len(ids) // 17, 17)
    assert val.rows.flatten().tolist() == ids[: len(ids) // 17 * 17]
    assert val.token_subsets is None and val.subset_names == []


def test_cache_is_reused_and_keyed_by_files_and_budget(tokenizer, data_cfg, tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", records(40))
    cache = tmp_path / "cache"
    cfg = data_cfg(train={"t": {"paths": [str(path)]}},
                   val={"v": {"paths": [str(path)], "preset": "pile", "max_tokens": 200}})
    first = build_val_rows(cfg.val["v"], tokenizer, 16, cache)
    files = sorted((cache / "val").iterdir())
    assert len(files) == 1
    again = build_val_rows(cfg.val["v"], tokenizer, 16, cache)
    assert torch.equal(first.rows, again.rows) and torch.equal(first.token_subsets, again.token_subsets)
    assert first.subset_names == again.subset_names
    cfg.val["v"].max_tokens = 300
    build_val_rows(cfg.val["v"], tokenizer, 16, cache)
    write_jsonl(path, records(41))  # a changed file is a new key, never stale rows
    os.utime(path, ns=(1, 1))
    changed = build_val_rows(cfg.val["v"], tokenizer, 16, cache)
    assert len(list((cache / "val").iterdir())) == 3
    assert changed.rows.shape[0] == 300 // 16


def test_damaged_cache_file_is_rebuilt(tokenizer, data_cfg, tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", records(20))
    cfg = data_cfg(train={"t": {"paths": [str(path)]}}, val={"v": {"paths": [str(path)], "max_tokens": 100}})
    first = build_val_rows(cfg.val["v"], tokenizer, 16, tmp_path / "c")
    (cached,) = (tmp_path / "c" / "val").iterdir()
    cached.write_bytes(b"not a zip")
    assert torch.equal(build_val_rows(cfg.val["v"], tokenizer, 16, tmp_path / "c").rows, first.rows)


def test_bad_records_are_skipped_in_val_and_too_small_sets_refused(tokenizer, data_cfg, tmp_path):
    recs = records(12)
    path = write_jsonl(tmp_path / "v.jsonl", recs, raw_lines={3: b"{oops"})
    cfg = data_cfg(train={"t": {"paths": [str(path)]}}, val={"v": {"paths": [str(path)], "max_tokens": 10**6}})
    val = build_val_rows(cfg.val["v"], tokenizer, 8, tmp_path / "c")
    ids, _ = reference_stream(tokenizer, recs[:3] + recs[4:], "pile_set_name")
    assert val.rows.flatten().tolist() == ids[: len(ids) // 9 * 9] and val.skipped == 1
    with pytest.raises(DataError, match="fewer than one row"):
        build_val_rows(cfg.val["v"], tokenizer, 100_000, tmp_path / "c2")
    cfg.val["v"].max_tokens = 4
    with pytest.raises(ConfigError) as e:
        build_val_rows(cfg.val["v"], tokenizer, 8, tmp_path / "c3")
    assert e.value.key == "max_tokens"
