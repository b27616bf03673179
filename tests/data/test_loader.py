"""The training loader: packing, document mask, mixing and schedules, disjoint reads, exact resume."""

from __future__ import annotations

import itertools
import pickle
import re

import pytest
import torch
from data_helpers import records, write_jsonl

from rewarm.data import build_train_loader, merge_states, state_metrics
from rewarm.errors import ResumeError

KEYS = ("input_ids", "labels", "source_ids", "position_ids")


def take(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in KEYS if k in a or k in b)


def stream_of(tokenizer, texts: list[str]) -> list[int]:
    """The reference token stream: each document's ids, then EOS (id 0)."""
    out: list[int] = []
    for t in texts:
        out += tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return out


def loader(cfg, tok, rank=0, world=1, mbs=4, seed=0, **kw):
    return build_train_loader(cfg, tok, micro_batch_size=mbs, seed=seed, rank=rank, world_size=world, **kw)


def test_rows_are_the_packed_document_stream(tokenizer, tmp_path, data_cfg):
    recs = records(60)
    path = write_jsonl(tmp_path / "a.jsonl.zst", recs)
    cfg = data_cfg(seq_len=16, num_workers=0, train={"a": {"paths": [str(path)]}})
    batches = take(loader(cfg, tokenizer), 5)
    ref = stream_of(tokenizer, [r["text"] for r in recs])
    rows = torch.cat([torch.cat([b["input_ids"], b["labels"][:, -1:]], 1) for b in batches])
    assert rows.shape == (20, 17)
    assert rows.flatten().tolist() == ref[: 20 * 17]  # consecutive, non-overlapping rows of seq_len + 1
    for b in batches:
        assert torch.equal(b["labels"][:, :-1], b["input_ids"][:, 1:])  # labels already shifted
        assert b["input_ids"].dtype == torch.long and "position_ids" not in b
        assert b["source_ids"].tolist() == [0, 0, 0, 0]


def test_document_mask_positions_and_labels(tokenizer, tmp_path, data_cfg):
    recs = records(40)
    path = write_jsonl(tmp_path / "a.jsonl", recs)
    cfg = data_cfg(seq_len=24, num_workers=0, document_mask=True, train={"a": {"paths": [str(path)]}})
    ref = torch.tensor(stream_of(tokenizer, [r["text"] for r in recs]))
    starts = set((torch.nonzero(ref == 0).flatten() + 1).tolist()) | {0}  # stream offsets where documents begin
    for i, b in enumerate(take(loader(cfg, tokenizer, mbs=2), 4)):
        for j in range(2):
            base = (2 * i + j) * 25  # stream offset of this row
            pos, labels = b["position_ids"][j].tolist(), b["labels"][j].tolist()
            expect_pos, p = [], 0
            for t in range(24):
                p = 0 if t == 0 or base + t in starts else p + 1
                expect_pos.append(p)
            assert pos == expect_pos
            masked = [t for t in range(24) if labels[t] == -100]
            assert masked == [t for t in range(24) if base + t + 1 in starts]
            kept = [t for t in range(24) if t not in masked]
            assert [labels[t] for t in kept] == [int(ref[base + t + 1]) for t in kept]


def two_sources(data_cfg, pile_dir, slim_dir, **kw):
    train = {"pile": {"preset": "pile", "root": str(pile_dir), "weight": 1.0},
             "slim": {"preset": "slimpajama", "root": str(slim_dir), "weight": 3.0}}
    for name, extra in kw.pop("sources", {}).items():
        train[name].update(extra)
    return data_cfg(seq_len=16, train=train, **kw)


def row_doc_ids(tokenizer, batch) -> list[list[int]]:
    rows = torch.cat([batch["input_ids"], batch["labels"][:, -1:]], 1)
    return [[int(x) for x in re.findall(r"doc(\d+) ", tokenizer.decode(r.tolist()))] for r in rows]


def test_mixing_per_row_weights_and_determinism(tokenizer, data_cfg, pile_dir, slim_dir):
    cfg = two_sources(data_cfg, pile_dir, slim_dir, num_workers=0)
    a, b = take(loader(cfg, tokenizer), 30), take(loader(cfg, tokenizer), 30)
    assert all(same(x, y) for x, y in zip(a, b, strict=True))
    c = take(loader(cfg, tokenizer, seed=1), 30)
    assert not all(torch.equal(x["source_ids"], y["source_ids"]) for x, y in zip(a, c, strict=True))
    ids = torch.cat([x["source_ids"] for x in a])
    assert loader(cfg, tokenizer).source_names == ["pile", "slim"]
    assert 0.15 < (ids == 0).float().mean() < 0.35  # weight 1 : 3
    for batch in a:  # the source id names the corpus the row's documents come from
        for sid, docs in zip(batch["source_ids"].tolist(), row_doc_ids(tokenizer, batch), strict=True):
            assert all((d < 5000) == (sid == 0) for d in docs)
    m = state_metrics(a[-1]["data_state"])
    assert m["data/pile/tokens"] == float((ids == 0).sum() * 16) and m["data/slim/fraction"] == pytest.approx(
        float((ids == 1).float().mean()))


@pytest.mark.parametrize("unit,ramp_end", [("steps", 10), ("tokens", 10 * 4 * 16)])
def test_weight_schedule_ramps_replay(tokenizer, data_cfg, pile_dir, slim_dir, unit, ramp_end):
    ramp = [{"at": 0, "weight": 0.0}, {"at": ramp_end, "weight": 3.0}]
    cfg = two_sources(data_cfg, pile_dir, slim_dir, num_workers=0, mix_schedule_unit=unit,
                      sources={"pile": {"weight_schedule": ramp}})
    batches = take(loader(cfg, tokenizer), 40)
    assert (batches[0]["source_ids"] == 1).all()  # weight 0 at the start: no replay
    late = torch.cat([b["source_ids"] for b in batches[10:]])
    assert 0.3 < (late == 0).float().mean() < 0.7  # 3 : 3 after the ramp


def test_subset_weights_select_domains(tokenizer, data_cfg, slim_dir):
    cfg = data_cfg(seq_len=16, num_workers=0, train={"slim": {"preset": "slimpajama", "root": str(slim_dir),
                   "subsets": {"RedPajamaC4": 1.0, "RedPajamaBook": 1.0}}})
    batches = take(loader(cfg, tokenizer), 20)
    docs = [d for b in batches for r in row_doc_ids(tokenizer, b) for d in r]
    assert docs and all(d % 4 in (1, 3) for d in docs)  # C4 and Book documents only (see data_helpers)
    assert {d % 4 for d in docs} == {1, 3}


def reader_streams(batches_by_rank, world, streams):
    """Token stream of each logical stream: its rows in order (rank r's local row j is global row r + world * j,
    row g // streams of stream g % streams)."""
    out = {}
    for rank, batches in batches_by_rank.items():
        rows = torch.cat([torch.cat([b["input_ids"], b["labels"][:, -1:]], 1) for b in batches])
        for j, row in enumerate(rows.tolist()):
            out.setdefault((rank + world * j) % streams, []).append(row)
    return {s: [t for row in rows for t in row] for s, rows in out.items()}


def test_ranks_and_workers_read_disjoint_documents(tokenizer, data_cfg, pile_dir):
    """2 ranks x 2 workers, 8 streams over 3 shards: in the first pass of every stream, each of the 300
    documents is read exactly once over all streams. A stream's first pass is its documents up to the first
    repeat."""
    cfg = data_cfg(seq_len=32, num_workers=2, worker_start="fork", streams=8,
                   train={"pile": {"preset": "pile", "root": str(pile_dir)}})
    by_rank = {r: take(loader(cfg, tokenizer, rank=r, world=2, mbs=4), 160) for r in range(2)}
    seen: list[int] = []
    for stream in reader_streams(by_rank, 2, 8).values():
        ids = [int(x) for x in re.findall(r"doc(\d+) ", tokenizer.decode(stream))]
        first_pass = ids[: next(i for i in range(len(ids)) if ids[i] in ids[:i])]
        seen += first_pass
    assert sorted(seen) == list(range(300))


@pytest.mark.parametrize("workers,start,ranks", [(0, "fork", 2), (2, "fork", 2), (1, "auto", 1)])
def test_exact_resume_with_mixing_workers_and_two_ranks(tokenizer, data_cfg, pile_dir, slim_dir, workers, start,
                                                        ranks):
    """world_size 2; (1, auto) runs the forkserver worker path for rank 0 only (its start is the slow part)."""
    cfg = two_sources(data_cfg, pile_dir, slim_dir, num_workers=workers, worker_start=start, document_mask=True,
                      streams=4)
    n, m = 7, 6
    full = {r: take(loader(cfg, tokenizer, rank=r, world=2), n + m) for r in range(ranks)}
    state = merge_states([full[r][n - 1]["data_state"] for r in range(ranks)])
    state = pickle.loads(pickle.dumps(state))  # what a checkpoint stores
    for r in range(ranks):
        resumed = loader(cfg, tokenizer, rank=r, world=2)
        resumed.load_state_dict(state)
        again = take(resumed, m)
        assert all(same(a, b) for a, b in zip(again, full[r][n:], strict=True))
        assert again[-1]["data_state"]["streams"] == full[r][-1]["data_state"]["streams"]
    if ranks == 2:
        assert not any(same(a, b) for a, b in zip(full[0], full[1], strict=True))  # ranks read different data


def test_a_worker_hands_over_the_same_batches_as_the_main_process(tokenizer, data_cfg, pile_dir, slim_dir):
    """One worker (forkserver) and none make the same single logical stream: the int32 arrays a worker sends
    through its pipe arrive as the same int64 tensors."""
    batches = {w: take(loader(two_sources(data_cfg, pile_dir, slim_dir, num_workers=w, document_mask=True),
                              tokenizer), 6) for w in (0, 1)}
    for a, b in zip(batches[0], batches[1], strict=True):
        assert set(a) == set(b) == {*KEYS, "data_state"}
        assert all(a[k].dtype == b[k].dtype == torch.long for k in KEYS)
        assert same(a, b)
        assert a["data_state"]["streams"] == b["data_state"]["streams"]


def test_resume_refuses_other_data_or_layout(tokenizer, data_cfg, pile_dir, slim_dir):
    cfg = two_sources(data_cfg, pile_dir, slim_dir, num_workers=0)
    state = take(loader(cfg, tokenizer), 2)[-1]["data_state"]
    other = two_sources(data_cfg, pile_dir, slim_dir, num_workers=0, sources={"pile": {"weight": 2.0}})
    with pytest.raises(ResumeError, match="different data config"):
        loader(other, tokenizer).load_state_dict(state)
    with pytest.raises(ResumeError, match="rows_per_step: saved 4, now 8"):
        loader(cfg, tokenizer, mbs=8).load_state_dict(state)
    two = two_sources(data_cfg, pile_dir, slim_dir, num_workers=0, streams=2)
    with pytest.raises(ResumeError, match="holds 1 of the 2 streams"):
        loader(two, tokenizer, rank=1, world=2, mbs=2).load_state_dict(
            take(loader(two, tokenizer, rank=0, world=2, mbs=2), 1)[0]["data_state"])


def test_source_end_repeat_and_stop(tokenizer, tmp_path, data_cfg):
    path = write_jsonl(tmp_path / "small.jsonl", records(5))
    cfg = data_cfg(seq_len=16, num_workers=0, train={"a": {"paths": [str(path)]}})
    n_tokens = len(stream_of(tokenizer, [r["text"] for r in records(5)]))
    batches = take(loader(cfg, tokenizer, mbs=1), 3 * n_tokens // 17)
    assert state_metrics(batches[-1]["data_state"])["data/a/passes"] >= 2
    stop = data_cfg(seq_len=16, num_workers=0, on_source_end="stop", train={"a": {"paths": [str(path)]}})
    assert len(list(loader(stop, tokenizer, mbs=1))) == n_tokens // 17  # the partial last row is dropped


def test_skipped_records_are_counted_cumulatively_through_resume(tokenizer, tmp_path, data_cfg):
    path = write_jsonl(tmp_path / "a.jsonl", records(40), raw_lines={i: b"{bad" for i in (2, 5, 9, 12)})
    cfg = data_cfg(seq_len=16, num_workers=0, train={"a": {"paths": [str(path)]}})
    full = take(loader(cfg, tokenizer, mbs=2), 60)
    counts = [state_metrics(b["data_state"])["data/skipped_records"] for b in full]
    assert counts == sorted(counts) and counts[-1] == 4 and counts[0] < 4
    resumed = loader(cfg, tokenizer, mbs=2)
    resumed.load_state_dict(full[9]["data_state"])
    again = take(resumed, 50)
    assert [state_metrics(b["data_state"])["data/skipped_records"] for b in again] == counts[10:]
    assert all(same(a, b) for a, b in zip(again, full[10:], strict=True))


def test_state_is_small_and_fingerprint_stable(tokenizer, data_cfg, pile_dir, slim_dir):
    cfg = two_sources(data_cfg, pile_dir, slim_dir, num_workers=0)
    batch = take(loader(cfg, tokenizer), 3)[-1]
    assert len(pickle.dumps(batch["data_state"])) < 4000
    assert loader(cfg, tokenizer).fingerprint() == batch["data_state"]["fingerprint"]


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_record_error_policy_stops_the_loader_with_file_and_line(tokenizer, tmp_path, data_cfg, workers):
    from rewarm.errors import DataError

    path = write_jsonl(tmp_path / "a.jsonl", records(30), raw_lines={4: b'{"text": 7}'})
    cfg = data_cfg(seq_len=16, num_workers=workers, worker_start="fork", on_bad_record="error",
                   train={"a": {"paths": [str(path)]}})
    with pytest.raises(DataError, match=f"{path}:5"):
        take(loader(cfg, tokenizer, mbs=2), 50)


def test_restore_reads_only_the_current_shard(tokenizer, data_cfg, pile_dir):
    """Resuming re-opens the saved shard at the saved record: earlier shards are not read again (here the
    first shard is replaced by garbage of the same size after the save; the resumed batches are unchanged)."""
    cfg = data_cfg(seq_len=32, num_workers=0, train={"p": {"preset": "pile", "root": str(pile_dir),
                                                           "shuffle_files": False}})
    full = take(loader(cfg, tokenizer), 150)
    k = next(i for i, b in enumerate(full) if b["data_state"]["streams"]["0"]["subs"]["p"]["unit"] == 1)
    shard = pile_dir / "train" / "00.jsonl.zst"
    shard.write_bytes(b"\xff" * shard.stat().st_size)
    resumed = loader(cfg, tokenizer)
    resumed.load_state_dict(full[k + 2]["data_state"])
    again = take(resumed, 20)
    assert len(full) >= k + 23 and all(same(a, b) for a, b in zip(again, full[k + 3 : k + 23], strict=True))
    assert state_metrics(again[-1]["data_state"])["data/skipped_records"] == 0


@pytest.mark.parametrize("reader", ["plain", "datasets"])
def test_a_bad_record_is_warned_once_per_run_and_counted_every_pass(tokenizer, tmp_path, data_cfg, caplog, reader):
    """A 6-document file with a bad line 4, read pass after pass (on_source_end=repeat): one warning in the
    run, while data/skipped_records counts the line once per pass."""
    from rewarm.data.sources import reset_warnings

    bad = b'{"text": "broken' if reader == "plain" else b'{"meta": {"pile_set_name": "x"}}'  # datasets: no JSON errors
    path = write_jsonl(tmp_path / "six.jsonl", records(6), raw_lines={3: bad})
    cfg = data_cfg(seq_len=16, num_workers=0, on_bad_record="skip", on_source_end="repeat", reader=reader,
                   train={"a": {"paths": [str(path)]}})
    reset_warnings()
    with caplog.at_level("WARNING", logger="rewarm.data"):
        batches = [state_metrics(b["data_state"]) for b in itertools.takewhile(
            lambda b: state_metrics(b["data_state"])["data/a/passes"] < 3, iter(loader(cfg, tokenizer, mbs=1)))]
    assert [m["data/a/passes"] for m in batches][-1] == 2  # three passes (0, 1, 2) over the file
    assert batches[-1]["data/skipped_records"] == 3
    warned = [r.getMessage() for r in caplog.records if "skipping bad record" in r.getMessage()]
    assert len(warned) == 1 and (f"{path}:4" in warned[0] or reader == "datasets")
    reset_warnings()  # the next run warns again
    with caplog.at_level("WARNING", logger="rewarm.data"):
        take(loader(cfg, tokenizer, mbs=1), 5)
    assert len([r for r in caplog.records if "skipping bad record" in r.getMessage()]) == 2


WORKERS_SCRIPT = """
import itertools, logging, sys
from transformers import PreTrainedTokenizerFast
from rewarm.data import build_train_loader, state_metrics
from rewarm.data.config import DataConfig
from omegaconf import OmegaConf
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.create(dict(
    seq_len=16, num_workers=2, streams=2, worker_start="fork", on_source_end="repeat",
    train={"a": {"paths": [sys.argv[2]]}}))))
tok = PreTrainedTokenizerFast.from_pretrained(sys.argv[1])
it = iter(build_train_loader(cfg, tok, micro_batch_size=1, seed=0, rank=0, world_size=1))
m = [state_metrics(b["data_state"]) for b in itertools.islice(it, 200)]
it.close()  # stops the workers
print("PASSES", min(x["data/a/passes"] for x in m[-4:]), "SKIPPED", m[-1]["data/skipped_records"], flush=True)
"""


def test_a_bad_record_is_warned_once_with_two_worker_processes(tokenizer, tmp_path):
    """Each record has one reader (here: one of two DataLoader worker processes), so the bad line is warned
    about by the one worker that owns it, once, however many passes it makes."""
    import subprocess
    import sys

    tokenizer.save_pretrained(tmp_path / "tok")
    path = write_jsonl(tmp_path / "six.jsonl", records(6), raw_lines={3: b'{"text": "broken'})
    proc = subprocess.run([sys.executable, "-c", WORKERS_SCRIPT, str(tmp_path / "tok"), str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    passes, skipped = re.search(r"PASSES (\S+) SKIPPED (\S+)", proc.stdout).groups()
    assert float(passes) >= 3 and float(skipped) >= 3
    assert proc.stderr.count("skipping bad record") == 1 and f"{path}:4" in proc.stderr
