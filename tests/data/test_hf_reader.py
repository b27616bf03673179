"""The `datasets` streaming reader (hub ids, remote paths, data.reader=datasets), tested on local files."""

from __future__ import annotations

import itertools
import pickle

import pytest
import torch
from data_helpers import records, write_jsonl

from rewarm.data import build_train_loader, build_val_rows, merge_states
from rewarm.data.hf import HFReader
from rewarm.errors import DataError

KEYS = ("input_ids", "labels", "source_ids")


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def build(cfg, tok, rank=0, world=1):
    return build_train_loader(cfg, tok, micro_batch_size=3, seed=5, rank=rank, world_size=world)


def test_datasets_reader_gives_the_same_rows_as_the_plain_reader(tokenizer, data_cfg, pile_dir):
    train = {"pile": {"preset": "pile", "root": str(pile_dir)}}
    plain = take(build(data_cfg(seq_len=16, num_workers=0, train=train), tokenizer), 40)
    hf = take(build(data_cfg(seq_len=16, num_workers=0, reader="datasets", train=train), tokenizer), 40)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(plain, hf, strict=True) for k in KEYS)


def test_datasets_reader_resumes_exactly_with_two_ranks_and_workers(tokenizer, data_cfg, pile_dir, slim_dir):
    cfg = data_cfg(seq_len=16, num_workers=2, worker_start="fork", reader="datasets", streams=4,
                   train={"pile": {"preset": "pile", "root": str(pile_dir), "weight": 1},
                          "slim": {"preset": "slimpajama", "root": str(slim_dir), "weight": 2}})
    full = {r: take(build(cfg, tokenizer, r, 2), 10) for r in range(2)}
    state = pickle.loads(pickle.dumps(merge_states([full[r][5]["data_state"] for r in range(2)])))
    for r in range(2):
        loader = build(cfg, tokenizer, r, 2)
        loader.load_state_dict(state)
        again = take(loader, 4)
        assert all(torch.equal(a[k], b[k]) for a, b in zip(again, full[r][6:], strict=True) for k in KEYS)


def test_datasets_reader_parts_are_disjoint_and_complete(tmp_path):
    files = [str(write_jsonl(tmp_path / f"{i}.jsonl", records(7, start_id=10 * i))) for i in range(3)]
    for readers in (2, 3):  # 3 files over 2 readers: one example in two; over 3: whole files
        seen = []
        for index in range(readers):
            seen += [d.text.split()[0] for _, d in HFReader(files, None, "train", "text", None, None, "skip",
                                                            index, readers, None)]
        assert sorted(seen) == sorted(f"doc{10 * i + j}" for i in range(3) for j in range(7))


def test_datasets_reader_bad_records(tmp_path):
    recs = records(5)
    recs[1] = {"text": "", "meta": {}}
    recs[3] = {"meta": {}}
    path = str(write_jsonl(tmp_path / "a.jsonl", recs))
    reader = HFReader([path], None, "train", "text", None, None, "skip", 0, 1, None)
    assert [d.text for _, d in reader] == [recs[i]["text"] for i in (0, 2, 4)] and reader.skipped == 2
    with pytest.raises(DataError, match="example 1"):
        list(HFReader([path], None, "train", "text", None, None, "error", 0, 1, None))
    broken = str(write_jsonl(tmp_path / "b.jsonl", records(3), raw_lines={1: b"{broken"}))
    with pytest.raises(DataError, match="data.reader=plain"):
        list(HFReader([broken], None, "train", "text", None, None, "skip", 0, 1, None))


def test_val_rows_through_datasets_match_plain(tokenizer, data_cfg, pile_dir, tmp_path):
    cfg = data_cfg(train={"t": {"paths": ["x"]}}, val={"v": {"preset": "pile", "root": str(pile_dir),
                                                             "max_tokens": 400}})
    plain = build_val_rows(cfg.val["v"], tokenizer, 16, tmp_path / "a")
    hf = build_val_rows(cfg.val["v"], tokenizer, 16, tmp_path / "b", reader="datasets")
    assert plain.rows.shape == (25, 17) and torch.equal(plain.rows, hf.rows)
    assert torch.equal(plain.token_subsets, hf.token_subsets) and plain.subset_names == hf.subset_names
