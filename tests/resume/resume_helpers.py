"""Helpers of the resume tests: start / kill real `rewarm train` processes, compare metrics.csv files, and check
from the recorded training rows that every document was consumed exactly once."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).parent
REPO = HERE.parent.parent
PROCESS_TIMEOUT_S = 240  # a loaded CI machine may take long to import torch / lightning


def start(config: Path, overrides: list[str], log: Path, *, record: Path | None = None,
          slow_manifest_step: int | None = None) -> subprocess.Popen:
    """`python -m rewarm train` (or, with ``record`` / ``slow_manifest_step``, the observing wrapper
    record_train.py) in its own process group, output to ``log``."""
    # one intra-op thread: a tiny model on 2 shared cores runs ~20x faster than with contended threads
    env = {**os.environ, "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rewarm", "train"]
    if record is not None or slow_manifest_step is not None:
        cmd = [sys.executable, str(HERE / "record_train.py")]
        if record is not None:
            env["REWARM_RECORD"] = str(record)
        if slow_manifest_step is not None:
            env["REWARM_SLOW_MANIFEST_STEP"] = str(slow_manifest_step)
    out = open(log, "a")  # noqa: SIM115 - handed to the child
    out.write(f"\n===== {' '.join(cmd[1:])} {' '.join(overrides)}\n")
    out.flush()
    return subprocess.Popen([*cmd, str(config), *overrides], stdout=out, stderr=subprocess.STDOUT, env=env,
                            cwd=REPO, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path) -> int:
    """Wait for the process; its exit code."""
    try:
        return proc.wait(timeout=PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill9(proc)
        raise AssertionError(f"rewarm train did not finish in {PROCESS_TIMEOUT_S} s; log:\n{tail(log)}") from None


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL the process and its children (DataLoader workers) at once: a kill -9 of the job."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, what: str,
              sig: signal.Signals = signal.SIGKILL) -> None:
    """Poll ``ready`` every 20 ms and kill -9 the process as soon as it holds; fail if the process ends first.
    Another ``sig`` goes to the main process only (like ``kill -TERM <pid>``), which is then waited for."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"rewarm train exited ({proc.returncode}) before {what}; log:\n{tail(log)}")
        if time.monotonic() > deadline:
            kill9(proc)
            raise AssertionError(f"timed out waiting for {what}; log:\n{tail(log)}")
        time.sleep(0.02)
    if sig == signal.SIGKILL:
        kill9(proc)
    else:
        proc.send_signal(sig)
        finish(proc, log)


def tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.is_file() else "(no log)"


def last_row_step(metrics: Path) -> int:
    """Step of the last complete row of metrics.csv (-1: none yet)."""
    if not metrics.is_file():
        return -1
    lines = metrics.read_text().splitlines(keepends=True)
    complete = [ln for ln in lines[1:] if ln.endswith("\n")]
    return int(complete[-1].split(",", 1)[0]) if complete else -1


def comparable_rows(metrics: Path) -> list[dict[str, str]]:
    """metrics.csv rows without the perf/* columns (wall-clock timing and memory: never reproducible)."""
    with open(metrics, newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in csv.DictReader(f)]


def write_config(path: Path, world: dict[str, Any], *, num_workers: int, max_steps: int, global_batch: int,
                 keep_every: int = 0, streams: int = 2) -> Path:
    """A deterministic CPU run: seq_len 16, micro-batches of 2 rows, a checkpoint every 2 steps (newest 2 kept),
    validation every 6 steps on two 4-row sets."""
    w = world["world"]
    r = w["root"]
    path.write_text(f"""\
run: {{name: r, out_dir: {path.parent}, seed: 3, deterministic: true}}
model: {{name_or_path: {w['model']}}}
data:
  seq_len: 16
  num_workers: {num_workers}
  streams: {streams}
  train:
    small: {{paths: ["{world['train_glob']}"]}}
  val:
    pile: {{paths: ["{r}/pile/val.jsonl.zst"], role: upstream, max_tokens: 64}}
    slimpajama: {{paths: ["{r}/slimpajama/validation/chunk1/*.jsonl.zst"], role: downstream, max_tokens: 64}}
trainer: {{max_steps: {max_steps}, micro_batch_size: 2, global_batch_size: {global_batch}, val_every_steps: 6}}
schedule: {{warmup_steps: 3, max_lr: 1.0e-3, min_lr: 1.0e-4}}
logging: {{wandb: {{mode: disabled}}, progress: lines}}
checkpoint: {{every_steps: 2, keep_last: 2, keep_every: {keep_every}}}
""")
    return path


# ---------------------------------------------------------------- documents consumed


def read_records(path: Path) -> list[dict[str, Any]]:
    """Recorded micro-batches in the order written (a line cut by the kill is dropped)."""
    out = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            out.append(json.loads(line))
    return out


def effective_batches(records: list[dict[str, Any]], max_steps: int, accum: int) -> list[list[list[int]]]:
    """The rows each micro-batch of the finished run trained on, in order. A step redone after a resume is
    taken from the last process that ran it, and must equal what any earlier process saw for it."""
    by_key: dict[tuple[int, int], list[list[int]]] = {}
    for r in records:
        key = (r["step"], r["batch"] % accum)
        if key in by_key:
            assert by_key[key] == r["rows"], f"micro-batch {key} differs between a run and its resumed replay"
        by_key[key] = r["rows"]
    want = [(s, b) for s in range(max_steps) for b in range(accum)]
    missing = [k for k in want if k not in by_key]
    assert not missing, f"no record of micro-batches {missing[:5]}"
    return [by_key[k] for k in want]


def stream_documents(batches: list[list[list[int]]], streams: int, eos: int) -> list[list[list[int]]]:
    """Per logical data stream (row g of the run, counted over the micro-batches in order, comes from stream
    g % streams): its documents' tokens in the order they were read, split at EOS; the last one may be a
    partial document."""
    out = []
    all_rows = [row for rows in batches for row in rows]
    for s in range(streams):
        flat = [t for row in all_rows[s::streams] for t in row]
        docs, cur = [], []
        for t in flat:
            if t == eos:
                docs.append(cur)
                cur = []
            else:
                cur.append(t)
        out.append(docs + ([cur] if cur else []))
    return out


def check_exactly_once(streams: list[list[list[int]]],
                       corpus: dict[int, tuple[int, int, list[int]]]) -> list[tuple[set[int], int]]:
    """Every stream must be whole documents of ``corpus`` ({doc id: (file, index in file, tokens)}), read in
    file order without a gap or a repeat, pass after pass, each pass holding every document of the stream's
    files exactly once; only its last document may be cut short (a prefix). Returns, per stream, the files it
    read and its number of completed passes."""
    by_pos = {(f, i): doc_id for doc_id, (f, i, _) in corpus.items()}
    out = []
    for docs in streams:
        ids = [_identify(doc, corpus, last=k == len(docs) - 1) for k, doc in enumerate(docs)]
        files = {corpus[i][0] for i in ids}
        pass_docs = {d for d, (f, _, _) in corpus.items() if f in files}
        seen: set[int] = set()
        passes = 0
        for k, doc_id in enumerate(ids):
            assert doc_id not in seen, f"document {doc_id} consumed twice in one pass (position {k})"
            seen.add(doc_id)
            if k:
                _check_next(ids[k - 1], doc_id, corpus, by_pos)
            if seen == pass_docs:
                seen, passes = set(), passes + 1
        out.append((files, passes))
    return out


def _identify(doc: list[int], corpus: dict[int, tuple[int, int, list[int]]], last: bool) -> int:
    for doc_id, (_, _, tokens) in corpus.items():
        if doc == tokens or (last and doc and tokens[: len(doc)] == doc):
            return doc_id
    raise AssertionError(f"a stretch of consumed tokens is not a whole corpus document: {doc[:20]}...")


def _check_next(prev: int, cur: int, corpus: dict, by_pos: dict) -> None:
    """``cur`` follows ``prev`` in its file, or ``prev`` ended a file and ``cur`` starts one."""
    pf, pi, _ = corpus[prev]
    cf, ci, _ = corpus[cur]
    if cf == pf and ci == pi + 1:
        return
    assert (pf, pi + 1) not in by_pos and ci == 0, (
        f"gap: document {cur} (file {cf} #{ci}) follows document {prev} (file {pf} #{pi})")


# ---------------------------------------------------------------- in this process


def recording_step(original: Callable[..., Any], out: IO[str]) -> Callable[..., Any]:
    """``RewarmModule.training_step`` that first appends its micro-batch to ``out`` as one JSON line
    ``{"pid", "step", "batch", "rank", "world", "rows"}`` (rows: ``input_ids`` plus the last label), flushed before
    the step."""
    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        rows = [ids + [last] for ids, last in zip(batch["input_ids"].tolist(), batch["labels"][:, -1].tolist(),
                                                  strict=True)]
        out.write(json.dumps({"pid": os.getpid(), "step": int(self.global_step), "batch": int(batch_idx),
                              "rank": int(self.global_rank), "world": int(self.trainer.world_size),
                              "rows": rows}) + "\n")
        out.flush()
        return original(self, batch, batch_idx)

    return training_step


@contextlib.contextmanager
def recording(path: Path | None) -> Iterator[None]:
    """record_train.py's recorder for an in-process run, removed afterwards."""
    if path is None:
        yield
        return
    import rewarm.training.module as module

    original = module.RewarmModule.training_step
    with open(path, "a") as out:
        module.RewarmModule.training_step = recording_step(original, out)
        try:
            yield
        finally:
            module.RewarmModule.training_step = original


def train_here(config: Path, overrides: list[str], log: Path, *, record: Path | None = None) -> int:
    """`rewarm train CONFIG overrides` in this process (a run that is not killed gains nothing from a process of
    its own: the imports are paid once); its output appended to ``log`` like ``start``'s; the exit code."""
    from tests.in_process import run_cli

    with recording(record):
        return run_cli(["train", str(config), *overrides], log=log).returncode
