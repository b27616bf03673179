"""data.streams: the token stream is a function of the global step alone (issue 21). Every rank is driven in
this process with its rank / world_size set; a global batch is put together from the ranks' micro-batches
(rank r's local row j is global row r + W * j; row g of the run is row g % G of step g // G)."""

from __future__ import annotations

import itertools
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import make_text, write_jsonl

from rewarm.data import build_train_loader, merge_states
from rewarm.data.mixing import Plan, RowDraw, SubSource
from rewarm.errors import ConfigError, ResumeError

KEYS = ("input_ids", "labels", "source_ids", "position_ids")
G = 8  # rows per optimizer step in every layout below


def corpus(root: Path, n: int = 48, files: int = 2, start: int = 0) -> list[str]:
    """``files`` jsonl.zst files of short documents 'doc<id> ...' (ids start .. start + n - 1)."""
    rng = random.Random(start)
    docs = [{"text": make_text(rng, start + i, rng.randint(4, 12))} for i in range(n)]
    per = n // files
    return [str(write_jsonl(root / f"c{start}_{f}.jsonl.zst", docs[f * per:(f + 1) * per])) for f in range(files)]


def run(cfg, tok, world: int, steps: int, *, state: dict | None = None, seed: int = 3) -> tuple[list[dict], dict]:
    """The first ``steps`` global batches of a run on ``world`` ranks (micro batch G / world / 2, accumulation
    2), as dicts of (G, ...) tensors in global row order, and the state gathered after them."""
    mb, accum = G // world // 2, 2
    per_rank, states = [], []
    for rank in range(world):
        loader = build_train_loader(cfg, tok, micro_batch_size=mb, seed=seed, rank=rank, world_size=world,
                                    grad_accum_steps=accum)
        if state is not None:
            loader.load_state_dict(state)
        batches = list(itertools.islice(iter(loader), steps * accum))
        assert len(batches) == steps * accum
        per_rank.append(batches)
        states.append(batches[-1]["data_state"])
    out = []
    for k in range(steps):
        rows: list = [None] * G
        for rank in range(world):
            for a in range(accum):
                b = per_rank[rank][k * accum + a]
                for x in range(mb):
                    rows[(rank + world * ((k * accum + a) * mb + x)) % G] = {key: b[key][x] for key in KEYS if key in b}
        out.append({key: torch.stack([r[key] for r in rows]) for key in rows[0]})
    return out, pickle.loads(pickle.dumps(merge_states(states)))


def equal(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b, strict=True))


def mixed(data_cfg, files: list[str], replay: list[str], **kw):
    """Two sources, the replay one ramped in by a weight schedule, document_mask on (positions compared too)."""
    ramp = [{"at": 0, "weight": 0.5}, {"at": 4, "weight": 2.0}]
    return data_cfg(seq_len=16, document_mask=True, worker_start="fork",
                    train={"down": {"paths": files}, "replay": {"paths": replay, "weight_schedule": ramp}}, **kw)


@pytest.fixture
def text(tmp_path) -> dict[str, list[str]]:
    return {"down": corpus(tmp_path, 48, 2), "replay": corpus(tmp_path, 30, 3, start=1000)}


def test_global_batches_are_the_same_on_1_2_and_4_ranks_with_workers(tokenizer, data_cfg, text):
    cfg = {w: mixed(data_cfg, text["down"], text["replay"], streams=8, num_workers=w) for w in (0, 2)}
    one, _ = run(cfg[0], tokenizer, 1, 6)
    assert equal(one, run(cfg[2], tokenizer, 2, 6)[0])  # 2 ranks x 2 workers
    assert equal(one, run(cfg[0], tokenizer, 4, 6)[0])  # 4 ranks, 1 row per micro-batch
    assert {0, 1} == set(torch.cat([b["source_ids"] for b in one]).tolist())


def test_pretokenized_sources_give_the_same_global_batches_on_any_world_size(tokenizer, data_cfg, tmp_path):
    from megatron_helpers import write_docs

    rng = np.random.default_rng(0)
    write_docs(tmp_path / "pre", [list(rng.integers(1, 300, rng.integers(3, 30))) for _ in range(200)])
    cfg = data_cfg(seq_len=16, streams=8, num_workers=0,
                   train={"pre": {"paths": [str(tmp_path / "pre.bin")], "append_eos": True},  # shuffle: documents
                          "text": {"paths": corpus(tmp_path, 40, 2), "weight": 0.5}})
    one, _ = run(cfg, tokenizer, 1, 5)
    assert equal(one, run(cfg, tokenizer, 2, 5)[0]) and equal(one, run(cfg, tokenizer, 4, 5)[0])


def test_a_global_batch_smaller_than_the_streams_is_balanced(tokenizer, data_cfg, text):
    """16 streams, 4 rows per step on 4 ranks: each rank reads 1 row per step, from its own streams, and the
    steps hold the one-rank run's rows."""
    cfg = data_cfg(seq_len=16, streams=16, num_workers=0, train={"down": {"paths": text["down"]}})
    loaders = [build_train_loader(cfg, tokenizer, micro_batch_size=1, seed=0, rank=r, world_size=4) for r in range(4)]
    per_rank = [list(itertools.islice(iter(x), 5)) for x in loaders]
    assert all(len(b) == 5 and all(x["input_ids"].shape[0] == 1 for x in b) for b in per_rank)
    one = list(itertools.islice(iter(build_train_loader(cfg, tokenizer, micro_batch_size=4, seed=0, rank=0,
                                                        world_size=1)), 5))
    for k in range(5):
        assert torch.equal(torch.cat([per_rank[r][k]["input_ids"] for r in range(4)]), one[k]["input_ids"])
    streams = [sorted(int(s) for s in b[-1]["data_state"]["streams"]) for b in per_rank]
    assert streams == [list(range(r, 16, 4)) for r in range(4)]  # rank r owns the streams s % 4 == r


def test_data_streams_that_the_ranks_cannot_share_are_refused(tmp_path, capsys):
    from rewarm.cli import main
    from rewarm.config import load

    base = ["trainer.max_steps=1", f"data.train.a.paths=[{tmp_path}/a.jsonl]", "run.out_dir=" + str(tmp_path)]
    with pytest.raises(ConfigError, match=r"data\.streams: 64 streams cannot be shared out by 3 rank\(s\) x 1 "
                                          r"DataLoader worker\(s\) per rank = 3 readers.*nearest valid: 63 or 66"):
        load(None, [*base, "trainer.devices=3"])
    (tmp_path / "empty.yaml").write_text("{}\n")
    assert main(["check", str(tmp_path / "empty.yaml"), *base, "trainer.devices=2", "data.num_workers=3",
                 "data.streams=8"]) == 2
    assert "data.streams: 8 streams cannot be shared out by 2 rank(s) x 3 DataLoader worker(s) per rank = 6 " \
           "readers: data.streams must be a multiple of 6; nearest valid: 6 or 12" in capsys.readouterr().err
    load(None, [*base, "trainer.devices=2", "data.num_workers=4"])  # 64 = 2 x 4 x 8: accepted


def test_the_mixing_draw_depends_on_seed_stream_and_row_only():
    subs = tuple(SubSource(key=k, source_id=i, files=("x",), text_field="text", subset_field=None, subsets=None,
                           shuffle_files=False, weight=w, knots=(), share=1.0) for i, (k, w) in enumerate([("a", 1), ("b", 2)]))

    def draws(stream: int, rank: int, world: int, mb: int, seed: int = 0) -> list[int]:
        plan = Plan(subs=subs, source_names=("a", "b"), seq_len=16, micro_batch_size=mb, seed=seed, rank=rank,
                    world_size=world, streams=8, workers=1, grad_accum_steps=8 // world // mb, mix_unit="steps",
                    document_mask=False, on_bad_record="skip", on_source_end="repeat", batch_docs=4, eos_id=0)
        draw = RowDraw(plan, stream)
        return [draw.choose(p) for p in range(3000)]

    ref = draws(5, 1, 2, 2)
    assert ref == draws(5, 1, 4, 1) == draws(5, 0, 1, 8)  # world size, rank, micro batch: no effect
    assert ref != draws(4, 0, 2, 2) and ref != draws(5, 1, 2, 2, seed=1)
    assert 0.6 < np.mean(ref) < 0.73  # weight 2 of 3


def first_pass_docs(tok, batches: list[dict], streams: int) -> dict[int, list[int]]:
    """Document ids per stream in the order read, from global batches (row g of the run: stream g % streams)."""
    rows = torch.cat([torch.cat([b["input_ids"], b["labels"][:, -1:]], 1) for b in batches]).tolist()
    per: dict[int, list[int]] = {}
    for g, row in enumerate(rows):
        per.setdefault(g % streams, []).extend(row)
    return {s: [int(x) for x in re.findall(r"doc(\d+) ", tok.decode(t))] for s, t in per.items()}


def test_a_state_saved_on_2_ranks_continues_on_1_and_then_4(tokenizer, data_cfg, text):
    """Steps 0-3 on 2 ranks, 4-7 on 1 rank (from the 2-rank state), 8-13 on 4 ranks with 2 workers each: the
    uninterrupted 2-rank run's global batches, and every document read once in each stream's first pass."""
    cfg = {w: data_cfg(seq_len=16, streams=8, num_workers=w, worker_start="fork", train={"down": {"paths": text["down"]}})
           for w in (0, 2)}
    full, _ = run(cfg[0], tokenizer, 2, 14)
    a, state = run(cfg[0], tokenizer, 2, 4)
    assert state["world"]["world_size"] == 2 and len(state["streams"]) == 8
    b, state = run(cfg[0], tokenizer, 1, 4, state=state)
    c, _ = run(cfg[2], tokenizer, 4, 6, state=state)
    assert equal(a + b + c, full)
    seen = []
    for ids in first_pass_docs(tokenizer, a + b + c, 8).values():
        assert len(ids) > len(set(ids))  # each stream went past its first pass
        seen += ids[: next(i for i in range(len(ids)) if ids[i] in ids[:i])]
    assert sorted(seen) == list(range(48))  # each document once over the streams' first passes


def test_another_seed_reads_other_documents_in_each_step_and_each_once_per_pass(tokenizer, data_cfg, text):
    """2 files for 8 streams (each stream one part of a file): the seed permutes which part each stream reads
    (data order 3), so two seeds make other steps; without shuffle_files it changes nothing."""
    cfg = data_cfg(seq_len=16, streams=8, num_workers=0, train={"down": {"paths": text["down"]}})
    a, _ = run(cfg, tokenizer, 1, 14, seed=3)
    b, _ = run(cfg, tokenizer, 2, 14, seed=4)
    assert not torch.equal(a[0]["input_ids"], b[0]["input_ids"])
    for batches in (a, b):
        seen = []
        for ids in first_pass_docs(tokenizer, batches, 8).values():
            seen += ids[: next(i for i in range(len(ids)) if ids[i] in ids[:i])]
        assert sorted(seen) == list(range(48))
    fixed = data_cfg(seq_len=16, streams=8, num_workers=0, train={"down": {"paths": text["down"], "shuffle_files": False}})
    assert equal(run(fixed, tokenizer, 1, 3, seed=3)[0], run(fixed, tokenizer, 1, 3, seed=4)[0])


def test_a_state_of_data_order_2_goes_on_in_order_2(tokenizer, data_cfg, text):
    """A state written before the seeded readers (data order 2: stream s reads reader s's parts) continues in
    that order and keeps writing order 2; order 3 reads other parts; an unknown order is refused."""
    cfg = data_cfg(seq_len=16, streams=8, num_workers=0, train={"down": {"paths": text["down"]}})
    fixed = data_cfg(seq_len=16, streams=8, num_workers=0, train={"down": {"paths": text["down"], "shuffle_files": False}})
    order2 = run(fixed, tokenizer, 1, 4)[0]  # with 1 part per stream, order 2 is the unshuffled order
    loader = build_train_loader(cfg, tokenizer, micro_batch_size=4, seed=3, rank=0, world_size=1, grad_accum_steps=2)
    zero = dict(loader.state_dict(), data_order=2)
    resumed = run(cfg, tokenizer, 1, 4, state=zero)
    assert equal(resumed[0], order2) and resumed[1]["data_order"] == 2
    assert not equal(run(cfg, tokenizer, 1, 4)[0], order2)
    with pytest.raises(ResumeError, match="data order 9"):
        loader.load_state_dict(dict(zero, data_order=9))


def test_a_state_that_cannot_continue_is_refused_naming_the_numbers(tokenizer, data_cfg, text):
    cfg = data_cfg(seq_len=16, streams=8, num_workers=0, train={"down": {"paths": text["down"]}})
    _, state = run(cfg, tokenizer, 2, 1)
    loader = build_train_loader(cfg, tokenizer, micro_batch_size=1, seed=3, rank=0, world_size=4, grad_accum_steps=1)
    with pytest.raises(ResumeError, match="rows_per_step: saved 8, now 4"):
        loader.load_state_dict(state)
    three = data_cfg(seq_len=16, streams=6, num_workers=0, train={"down": {"paths": text["down"]}})
    odd = build_train_loader(three, tokenizer, micro_batch_size=1, seed=3, rank=0, world_size=2)
    odd_state = next(iter(odd))["data_state"]  # rank 0 alone: 1 row of 2
    with pytest.raises(ResumeError, match="holds 3 of the 6 streams"):
        build_train_loader(three, tokenizer, micro_batch_size=2, seed=3, rank=0, world_size=1).load_state_dict(odd_state)
    old = {"version": 1, "fingerprint": "x", "layout": {"world_size": 2}, "ranks": {}}
    with pytest.raises(ResumeError, match=r"resumes only on the world size it was written with \(2 rank\(s\), now 4\)"):
        loader.load_state_dict(old)


def test_a_state_of_version_1_goes_on_in_its_own_order_on_its_world_size(tokenizer, data_cfg, text):
    """A state written before data.streams (version 1, per-rank streams) continues on its world size in the
    version-1 order (checked against the code of that version when this was written), and keeps writing
    version-1 states; another world size is refused (test_a_state_that_cannot_continue_...)."""
    cfg = mixed(data_cfg, text["down"], text["replay"], num_workers=0, streams=2)
    fresh = build_train_loader(cfg, tokenizer, micro_batch_size=2, seed=3, rank=1, world_size=2)
    v1 = {"version": 1, "fingerprint": fresh.fingerprint(), "source_names": ["down", "replay"],
          "sub_sources": {"down": 0, "replay": 1},
          "layout": {"world_size": 2, "streams_per_rank": 1, "seed": 3, "micro_batch_size": 2, "grad_accum_steps": 1,
                     "seq_len": 16},
          "ranks": {"1": {"batches": 0, "streams": [{"batches": 0, "subs": {}}]}}}
    fresh.load_state_dict(v1)
    full = list(itertools.islice(iter(fresh), 9))
    assert full[-1]["data_state"]["version"] == 1 and full[-1]["data_state"]["ranks"]["1"]["batches"] == 9
    again = build_train_loader(cfg, tokenizer, micro_batch_size=2, seed=3, rank=1, world_size=2)
    again.load_state_dict(pickle.loads(pickle.dumps(full[4]["data_state"])))
    rest = list(itertools.islice(iter(again), 4))
    assert all(all(torch.equal(a[k], b[k]) for k in KEYS) for a, b in zip(rest, full[5:], strict=True))
    new = list(itertools.islice(iter(build_train_loader(cfg, tokenizer, micro_batch_size=2, seed=3, rank=1,
                                                        world_size=2)), 9))
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(new, full, strict=True))


def test_a_new_pass_is_logged_once_not_once_per_stream(tokenizer, data_cfg, text, caplog):
    cfg = data_cfg(seq_len=16, streams=8, num_workers=0, train={"down": {"paths": text["down"]}})
    with caplog.at_level("INFO", logger="rewarm.data.packing"):
        run(cfg, tokenizer, 1, 14)  # every stream goes past its first pass
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO" and "starting pass 1" in r.getMessage()]
    assert lines == ["source down: starting pass 1 (files in a new order) (stream 0 of 8)"]
