"""preset: pythia_preshuffled — rows of 2049 tokens in order from start_step x rows_per_step, 21-shard layout
read as one stream, Pythia's index (doc_idx [0]) taken as it is, and its refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from megatron_helpers import write_pythia_like

from rewarm.data import build_train_loader, build_val_rows, check_paths
from rewarm.errors import ConfigError

ROW = 2049


def take(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def rows_of(batch: dict) -> np.ndarray:
    return torch.cat([batch["input_ids"], batch["labels"][:, -1:]], 1).numpy()


def pythia(data_cfg, root, **source):
    extra = {k: source.pop(k) for k in ("document_mask", "seq_len", "on_source_end", "streams") if k in source}
    return data_cfg(**{"seq_len": 2048, "num_workers": 0, **extra},
                    train={"pile": {"preset": "pythia_preshuffled", "root": str(root), **source}})


def loader(cfg, tok, mbs=4, rank=0, world=1):
    return build_train_loader(cfg, tok, micro_batch_size=mbs, seed=0, rank=rank, world_size=world)


@pytest.mark.parametrize("shards", [0, 21])
def test_step_n_starts_at_row_n_times_rows_per_step(tokenizer, data_cfg, tmp_path, shards):
    tokens = write_pythia_like(tmp_path / "p", n_rows=40, shards=shards)
    cfg = pythia(data_cfg, tmp_path / "p", start_step=3, rows_per_step=4)
    assert cfg.train["pile"].resolved_format() == "megatron" and cfg.train["pile"].resolved_shuffle() == "none"
    got = np.concatenate([rows_of(b) for b in take(loader(cfg, tokenizer), 3)])
    want = tokens[12 * ROW : 24 * ROW].reshape(12, ROW)  # rows 12..23: steps 3, 4, 5 of 4 rows
    assert np.array_equal(got, want)


@pytest.mark.parametrize("streams", [2, 8])
def test_two_readers_share_the_rows_in_order(tokenizer, data_cfg, tmp_path, streams):
    """Global row g is Pythia's row start + g whatever data.streams: stream s reads rows s, s + S, ..."""
    tokens = write_pythia_like(tmp_path / "p", n_rows=20).reshape(20, ROW)
    cfg = pythia(data_cfg, tmp_path / "p", start_step=2, rows_per_step=2, streams=streams)
    got = {r: np.concatenate([rows_of(b) for b in take(loader(cfg, tokenizer, mbs=2, rank=r, world=2), 2)])
           for r in range(2)}
    assert np.array_equal(got[0], tokens[[4, 6, 8, 10]]) and np.array_equal(got[1], tokens[[5, 7, 9, 11]])


def test_seq_len_must_be_2048(data_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"seq_len: train\.pile reads Pythia's rows of 2049 tokens: seq_len "
                                          r"must be 2048, got 1024"):
        pythia(data_cfg, tmp_path, seq_len=1024)


def test_a_start_beyond_the_data_is_refused_with_the_row_count(tokenizer, data_cfg, tmp_path):
    write_pythia_like(tmp_path / "p", n_rows=40)
    cfg = pythia(data_cfg, tmp_path / "p", start_step=10, rows_per_step=4)
    with pytest.raises(ConfigError, match=r"train\.pile\.start_step: 10 starts at row 40 .* holds 40 rows of 2049 "
                                          r"tokens \(10 steps\)"):
        loader(cfg, tokenizer)
    with pytest.raises(ConfigError, match="holds 40 rows"):
        check_paths(cfg)  # `rewarm check` sees it too


def test_document_mask_needs_eod_tokens(tokenizer, data_cfg, tmp_path):
    write_pythia_like(tmp_path / "none", n_rows=8)
    with pytest.raises(ConfigError, match=r"document_mask: .*no EOD token \(id 0\) in 64 rows from row 0: Pythia's "
                                          r"rows carry no document boundaries"):
        loader(pythia(data_cfg, tmp_path / "none", document_mask=True), tokenizer)
    tokens = write_pythia_like(tmp_path / "eod", n_rows=8, eod_every=500)
    batch = take(loader(pythia(data_cfg, tmp_path / "eod", document_mask=True), tokenizer, mbs=1), 1)[0]
    pos, labels = batch["position_ids"][0], batch["labels"][0]
    assert pos[0] == 0 and pos[1:501].tolist() == list(range(500)) and pos[501] == 0  # EODs at 0 and 500
    assert torch.nonzero(labels == -100).flatten().tolist()[:2] == [0, 500]  # no loss across a boundary
    assert np.array_equal(batch["input_ids"][0].numpy(), tokens[: ROW - 1])


def test_pythia_keys_and_shuffle_are_refused_where_they_do_not_apply(data_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.pile\.shuffle: .*must be none"):
        pythia(data_cfg, tmp_path, shuffle="documents")
    with pytest.raises(ConfigError, match=r"train\.a\.start_step: applies to pre-tokenized"):
        data_cfg(train={"a": {"paths": ["x.jsonl"], "start_step": 5}})
    with pytest.raises(ConfigError, match=r"train\.a\.start_step: applies to preset=pythia_preshuffled only"):
        data_cfg(train={"a": {"paths": ["x.bin"], "start_step": 5}})
    with pytest.raises(ConfigError, match=r"train\.a\.shuffle: applies to pre-tokenized sources"):
        data_cfg(train={"a": {"paths": ["x.jsonl"], "shuffle": "none"}})
    with pytest.raises(ConfigError, match=r"train\.a\.paths: mixes \.bin / \.idx files with text files"):
        data_cfg(train={"a": {"paths": ["x.jsonl", "y.bin"]}})


def test_validation_rows_from_a_start_step(tokenizer, data_cfg, tmp_path):
    tokens = write_pythia_like(tmp_path / "p", n_rows=12)
    cfg = data_cfg(seq_len=2048, train={"t": {"paths": ["x.jsonl"]}},
                   val={"pile": {"preset": "pythia_preshuffled", "root": str(tmp_path / "p"), "start_step": 5,
                                 "rows_per_step": 2, "max_tokens": 3 * 2048}})
    rows = build_val_rows(cfg.val["pile"], tokenizer, 2048, tmp_path / "cache").rows
    assert np.array_equal(rows.numpy(), tokens[10 * ROW : 12 * ROW].reshape(2, ROW))  # only 2 rows left after row 10
