"""Pre-tokenized sources in the training pipeline: bit-identical to the text source they were written from,
shuffled per pass, disjoint readers, exact O(1) resume, mixing with text, fingerprint, id checks."""

from __future__ import annotations

import itertools
import pickle
import re

import numpy as np
import pytest
import torch
from data_helpers import records, write_jsonl
from megatron_helpers import write_docs

from rewarm.data import build_train_loader, merge_states, state_metrics
from rewarm.data.loader import tokenizer_hash
from rewarm.data.megatron.tokenize import tokenize_files, write_sidecar
from rewarm.errors import ConfigError, DataError, ResumeError

KEYS = ("input_ids", "labels", "source_ids", "position_ids")


def take(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in KEYS if k in a)


def loader(cfg, tok, rank=0, world=1, mbs=4, seed=0, **kw):
    return build_train_loader(cfg, tok, micro_batch_size=mbs, seed=seed, rank=rank, world_size=world, **kw)


def tokenize(tokenizer, data_cfg, files, prefix) -> str:
    src = data_cfg(train={"t": {"paths": [str(f) for f in files]}}).train["t"]
    result = tokenize_files(src, [str(f) for f in files], tokenizer, str(prefix), progress=False)
    write_sidecar(str(prefix), "test-bpe", tokenizer_hash(tokenizer), [str(f) for f in files], result, "uint16", 0)
    return str(prefix)


@pytest.fixture
def corpus(tokenizer, tmp_path, data_cfg):
    """Two text files (docs 0..79, 100..139) and the pair `rewarm tokenize` writes of them."""
    files = [write_jsonl(tmp_path / "a.jsonl.zst", records(80)), write_jsonl(tmp_path / "b.jsonl", records(40, start_id=100))]
    return {"files": files, "prefix": tokenize(tokenizer, data_cfg, files, tmp_path / "tok" / "corpus")}


def doc_ids(tokenizer, batches) -> list[int]:
    rows = torch.cat([torch.cat([b["input_ids"], b["labels"][:, -1:]], 1) for b in batches])
    return [int(x) for x in re.findall(r"doc(\d+) ", tokenizer.decode(rows.flatten().tolist()))]


@pytest.mark.parametrize("mask", [False, True])
def test_batches_are_bit_identical_to_the_text_source(tokenizer, data_cfg, corpus, mask):
    """The key property: shuffling off, one reader, the written files give the text source's batches."""
    text = data_cfg(seq_len=16, num_workers=0, document_mask=mask,
                    train={"s": {"paths": [str(f) for f in corpus["files"]], "shuffle_files": False}})
    mm = data_cfg(seq_len=16, num_workers=0, document_mask=mask,
                  train={"s": {"paths": [corpus["prefix"] + ".bin"], "shuffle": "none"}})
    assert mm.train["s"].resolved_format() == "megatron"
    a, b = take(loader(text, tokenizer), 40), take(loader(mm, tokenizer), 40)  # 40 x 4 rows: past one pass
    assert all(same(x, y) for x, y in zip(a, b, strict=True))
    assert state_metrics(a[-1]["data_state"]) == state_metrics(b[-1]["data_state"])


def test_bit_identical_with_several_readers_on_one_file(tokenizer, data_cfg, tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", records(90))
    prefix = tokenize(tokenizer, data_cfg, [f], tmp_path / "one")
    text = data_cfg(seq_len=16, num_workers=0, streams=2, train={"s": {"paths": [str(f)], "shuffle_files": False}})
    mm = data_cfg(seq_len=16, num_workers=0, streams=2,
                  train={"s": {"paths": [prefix], "format": "megatron", "shuffle": "none"}})
    for rank in range(2):  # two streams split the documents in the same residue classes as the text records
        a, b = take(loader(text, tokenizer, rank=rank, world=2), 12), take(loader(mm, tokenizer, rank=rank, world=2), 12)
        assert all(same(x, y) for x, y in zip(a, b, strict=True))


def test_documents_in_index_order_without_added_eos(tokenizer, data_cfg, tmp_path):
    write_docs(tmp_path / "d", [[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    cfg = data_cfg(seq_len=3, num_workers=0, train={"s": {"paths": [str(tmp_path / "d.idx")], "shuffle": "none"}})
    rows = [torch.cat([b["input_ids"], b["labels"][:, -1:]], 1) for b in take(loader(cfg, tokenizer, mbs=1), 4)]
    assert [r.flatten().tolist() for r in rows] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 1, 2, 3], [4, 5, 6, 7]]
    cfg = data_cfg(seq_len=3, num_workers=0, train={"s": {"paths": [str(tmp_path / "d.bin")], "shuffle": "none",
                                                         "append_eos": True}})
    rows = [torch.cat([b["input_ids"], b["labels"][:, -1:]], 1) for b in take(loader(cfg, tokenizer, mbs=1), 3)]
    assert [r.flatten().tolist() for r in rows] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]


def test_document_shuffle_is_seeded_per_pass_and_uses_every_document(tokenizer, data_cfg, corpus):
    cfg = data_cfg(seq_len=16, num_workers=0, on_source_end="stop", train={"s": {"paths": [corpus["prefix"] + ".bin"]}})
    assert cfg.train["s"].resolved_shuffle() == "documents"
    first = doc_ids(tokenizer, list(loader(cfg, tokenizer)))
    assert first == doc_ids(tokenizer, list(loader(cfg, tokenizer)))  # seeded
    assert first != doc_ids(tokenizer, list(loader(cfg, tokenizer, seed=1)))
    ordered = list(range(80)) + list(range(100, 140))
    assert first != ordered[: len(first)] and sorted(first) == sorted(set(first))
    assert set(first) == set(ordered)  # one pass: every document once
    cfg2 = data_cfg(seq_len=16, num_workers=0, train={"s": {"paths": [corpus["prefix"] + ".bin"]}})
    two = doc_ids(tokenizer, take(loader(cfg2, tokenizer), 300))
    assert len(first) == 120 and len(two) > 240
    assert two[:120] == first and sorted(two[120:240]) == sorted(first) and two[120:240] != first  # a new order


def test_readers_are_disjoint_and_cover_every_document(tokenizer, data_cfg, corpus):
    cfg = data_cfg(seq_len=16, num_workers=0, on_source_end="stop", streams=3,
                   train={"s": {"paths": [corpus["prefix"]], "format": "megatron"}})
    seen = [d for r in range(3) for d in doc_ids(tokenizer, list(loader(cfg, tokenizer, rank=r, world=3, mbs=1)))]
    assert len(seen) == len(set(seen)) and len(seen) > 100  # each reader drops only its partial last row


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume_mixed_with_text(tokenizer, data_cfg, corpus, pile_dir, workers):
    cfg = data_cfg(seq_len=16, num_workers=workers, worker_start="fork", document_mask=True, streams=4,
                   train={"mm": {"paths": [corpus["prefix"] + ".bin"], "weight": 1.0},
                          "pile": {"preset": "pile", "root": str(pile_dir), "weight": 1.0}})
    n, m = 9, 8
    full = {r: take(loader(cfg, tokenizer, rank=r, world=2), n + m) for r in range(2)}
    state = pickle.loads(pickle.dumps(merge_states([full[r][n - 1]["data_state"] for r in range(2)])))
    for r in range(2):
        resumed = loader(cfg, tokenizer, rank=r, world=2)
        resumed.load_state_dict(state)
        again = take(resumed, m)
        assert all(same(a, b) for a, b in zip(again, full[r][n:], strict=True))
    ids = torch.cat([b["source_ids"] for b in full[0]])
    assert {0, 1} <= set(ids.tolist())  # both sources: mm (0) and pile (1)


def test_restore_seeks_without_reading_earlier_documents(tokenizer, data_cfg, corpus):
    """A cursor deep into the file: the restored stream reads from the cursor's document on only."""
    from rewarm.data.megatron import stream

    cfg = data_cfg(seq_len=16, num_workers=0, train={"s": {"paths": [corpus["prefix"] + ".bin"], "shuffle": "none"}})
    full = take(loader(cfg, tokenizer), 30)
    state = full[19]["data_state"]
    cursor = state["streams"]["0"]["subs"]["s"]
    assert cursor["record"] > 10 and cursor["token"] > 0  # inside a document
    spans: list[int] = []
    original = stream.gather

    def recording(tf, lo, hi, eos):
        spans.append(int(lo.min()))
        return original(tf, lo, hi, eos)

    stream.gather = recording
    try:
        resumed = loader(cfg, tokenizer)
        resumed.load_state_dict(state)
        assert all(same(a, b) for a, b in zip(take(resumed, 10), full[20:], strict=True))
    finally:
        stream.gather = original
    tf = stream.open_file(corpus["prefix"])
    first_doc_start = int(tf.doc_spans(np.asarray([cursor["record"]]))[0][0])
    assert spans and min(spans) == first_doc_start


def test_weight_schedule_replays_the_pretokenized_source(tokenizer, data_cfg, corpus, pile_dir):
    ramp = [{"at": 0, "weight": 0.0}, {"at": 10, "weight": 1.0}]
    cfg = data_cfg(seq_len=16, num_workers=0, train={"mm": {"paths": [corpus["prefix"] + ".bin"], "weight_schedule": ramp},
                                                     "pile": {"preset": "pile", "root": str(pile_dir)}})
    batches = take(loader(cfg, tokenizer), 40)
    assert (batches[0]["source_ids"] == 1).all()
    late = torch.cat([b["source_ids"] for b in batches[10:]])
    assert 0.3 < (late == 0).float().mean() < 0.7


def test_source_end_stop(tokenizer, data_cfg, tmp_path):
    write_docs(tmp_path / "d", [[1] * 10, [2] * 10])
    cfg = data_cfg(seq_len=4, num_workers=0, on_source_end="stop", train={"s": {"paths": [str(tmp_path / "d.bin")]}})
    assert len(list(loader(cfg, tokenizer, mbs=1))) == 4  # 20 tokens: 4 rows of 5


def test_fingerprint_covers_the_files(tokenizer, data_cfg, tmp_path):
    write_docs(tmp_path / "d", [[1, 2, 3]] * 20)
    cfg = data_cfg(seq_len=4, num_workers=0, train={"s": {"paths": [str(tmp_path / "d.bin")]}})
    state = take(loader(cfg, tokenizer), 2)[-1]["data_state"]
    before = loader(cfg, tokenizer).fingerprint()
    write_docs(tmp_path / "d", [[1, 2, 3]] * 20 + [[4, 5, 6]])
    after = loader(cfg, tokenizer)
    assert after.fingerprint() != before
    assert 4 in torch.cat([b["input_ids"] for b in take(after, 30)]).flatten().tolist()  # the new file is read, not a stale map
    with pytest.raises(ResumeError, match="different data config"):
        after.load_state_dict(state)
    shuffled = data_cfg(seq_len=4, num_workers=0, train={"s": {"paths": [str(tmp_path / "d.bin")], "shuffle": "none"}})
    assert loader(shuffled, tokenizer).fingerprint() != after.fingerprint()


def test_ids_at_or_above_the_vocabulary_stop_training_naming_file_and_document(tokenizer, data_cfg, tmp_path):
    write_docs(tmp_path / "d", [[1, 2, 3], [4, 5], [6, 400, 7], [8, 9]])
    cfg = data_cfg(seq_len=3, num_workers=0, train={"s": {"paths": [str(tmp_path / "d.bin")], "shuffle": "none"}})
    with pytest.raises(DataError, match=r"d\.bin: document 2 holds token id 400, outside the model's vocabulary of 320"):
        take(loader(cfg, tokenizer, mbs=1), 3)
    assert len(take(loader(cfg, tokenizer, mbs=1, vocab_size=512), 3)) == 3  # the model's embedding rows bound it


def test_sidecar_of_another_tokenizer_is_refused(tokenizer, data_cfg, corpus, tmp_path):
    import json

    meta_path = corpus["prefix"] + ".json"
    meta = json.loads(open(meta_path).read())
    assert meta["tokenizer"]["hash"] and meta["documents"] == 120 and meta["dtype"] == "uint16"
    meta["tokenizer"] = {"name": "EleutherAI/gpt-neox-20b", "hash": "0123456789abcdef"}
    open(meta_path, "w").write(json.dumps(meta))
    cfg = data_cfg(seq_len=16, num_workers=0, train={"s": {"paths": [corpus["prefix"] + ".bin"]}})
    with pytest.raises(ConfigError, match=r"corpus\.json: the files were tokenized with 'EleutherAI/gpt-neox-20b'"):
        loader(cfg, tokenizer)


def test_validation_rows_equal_the_text_set_and_are_cached(tokenizer, data_cfg, corpus, tmp_path):
    from rewarm.data import build_val_rows

    cfg = data_cfg(seq_len=16, train={"t": {"paths": ["x.jsonl"]}},
                   val={"text": {"paths": [str(f) for f in corpus["files"]], "max_tokens": 800},
                        "mm": {"paths": [corpus["prefix"] + ".idx"], "max_tokens": 800}})
    text = build_val_rows(cfg.val["text"], tokenizer, 16, tmp_path / "cache")
    mm = build_val_rows(cfg.val["mm"], tokenizer, 16, tmp_path / "cache")
    assert torch.equal(text.rows, mm.rows) and mm.rows.shape == (50, 17) and mm.rows.dtype == torch.long
    cached = sorted((tmp_path / "cache" / "val").glob("mm-*.npz"))
    assert len(cached) == 1
    assert torch.equal(build_val_rows(cfg.val["mm"], tokenizer, 16, tmp_path / "cache").rows, mm.rows)
