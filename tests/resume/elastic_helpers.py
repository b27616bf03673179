"""Helpers of the elastic resume tests: launch `rewarm train` on N CPU ranks (torchrun, gloo) in a process group of
its own (so that a kill -9 takes every rank), and rebuild from the recorded micro-batches which global row of which
step each rank trained on, to check that every document was read exactly once per pass whatever the world size.

The row order (rewarm.data.rows): global row ``g = k * G + r`` (row ``r`` of step ``k``, ``G`` rows per step) is
row ``g // S`` of stream ``g % S``; rank ``i`` of ``W`` reads global rows ``i + W * j``; its micro-batch ``a`` of
step ``k`` holds its local rows ``k * G / W + a * mb + q`` (``q`` < micro-batch size ``mb``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def start_ranks(nproc: int, config: Path, overrides: list[str], log: Path, record: Path) -> subprocess.Popen:
    """``torchrun --nproc-per-node N record_train.py CONFIG overrides`` (every micro-batch recorded to
    ``record``), in its own session; output appended to ``log``."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", REWARM_RECORD=str(record))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(HERE / "record_train.py"), str(config), f"trainer.devices={nproc}", *overrides]
    out = open(log, "a")  # noqa: SIM115 - handed to the child
    out.write(f"\n===== {nproc} ranks: {' '.join(overrides)}\n")
    out.flush()
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)


def kill_ranks_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, what: str,
                    timeout_s: float = 240) -> None:
    """Poll ``ready`` every 20 ms, then SIGKILL torchrun and every process under it at once (torchrun starts its
    ranks in sessions of their own: a kill of its process group would leave them running)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_tree(proc.pid)
            raise AssertionError(f"rewarm train ended ({proc.returncode}) or timed out before {what}; log:\n"
                                 + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        time.sleep(0.02)
    kill_tree(proc.pid)
    proc.wait(timeout=60)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (read from /proc), the descendants first found, all at once."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def global_rows(records: list[dict[str, Any]], rows_per_step: int) -> dict[int, list[int]]:
    """{global row g: its tokens} over every recorded micro-batch. A row recorded by several processes (a step
    redone after a kill) must be the same each time."""
    seen: dict[tuple[int, int, int], int] = defaultdict(int)  # (pid, rank, step) -> micro-batches so far
    out: dict[int, list[int]] = {}
    for rec in records:
        key = (rec["pid"], rec["rank"], rec["step"])
        a, seen[key] = seen[key], seen[key] + 1
        mb, world, k = len(rec["rows"]), rec["world"], rec["step"]
        for q, row in enumerate(rec["rows"]):
            g = k * rows_per_step + rec["rank"] + world * (a * mb + q)
            assert out.setdefault(g, row) == row, f"global row {g} differs between a run and its resumed replay"
    return out


def stream_ids(rows: dict[int, list[int]], streams: int, steps: int, rows_per_step: int, eos: int,
               corpus: dict[int, tuple[int, int, list[int]]]) -> list[list[int]]:
    """Per stream, the ids of the documents it read, in order (rows of every step of the run must be there)."""
    total = steps * rows_per_step
    missing = [g for g in range(total) if g not in rows]
    assert not missing, f"no record of global rows {missing[:8]}"
    out = []
    for s in range(streams):
        flat = [t for g in range(s, total, streams) for t in rows[g]]
        docs, cur = [], []
        for t in flat:
            if t == eos:
                docs.append(cur)
                cur = []
            else:
                cur.append(t)
        docs += [cur] if cur else []
        out.append([_identify(d, corpus, last=n == len(docs) - 1) for n, d in enumerate(docs)])
    return out


def _identify(doc: list[int], corpus: dict[int, tuple[int, int, list[int]]], last: bool) -> int:
    for doc_id, (_, _, tokens) in corpus.items():
        if doc == tokens or (last and doc and tokens[: len(doc)] == doc):
            return doc_id
    raise AssertionError(f"a stretch of consumed tokens is not a whole corpus document: {doc[:20]}...")


def check_once_per_pass(per_stream: list[list[int]], corpus_ids: set[int]) -> None:
    """Streams read disjoint documents that together make the corpus; each stream reads its documents in passes,
    each pass holding every one of them exactly once (the last pass may be partial, without repeats)."""
    owned = [set(ids) for ids in per_stream]
    assert set().union(*owned) == corpus_ids, f"documents never read: {sorted(corpus_ids - set().union(*owned))}"
    assert sum(map(len, owned)) == len(corpus_ids), f"a document is read by two streams: {owned}"
    for s, ids in enumerate(per_stream):
        n = len(owned[s])
        assert len(ids) >= n, f"stream {s} did not complete a pass: {ids}"
        for start in range(0, len(ids), n):
            chunk = ids[start:start + n]
            assert len(set(chunk)) == len(chunk), f"stream {s}: a document twice in pass {start // n}: {ids}"
