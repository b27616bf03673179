"""Real processes: `rewarm train` is killed with SIGKILL at random steps and in the middle of a checkpoint write,
and sent SIGTERM once (preemption: checkpoint, exit code 3); each time it is restarted with resume=auto until it
finishes. metrics.csv must equal the uninterrupted run's row for row (bitwise: values are written with repr;
the perf/* columns are wall-clock timing and memory, left out) and every training document must have been
consumed exactly once per pass. Also: a corrupt newest checkpoint falls back to the previous one, and a resume
with a changed data config is refused with the keys listed.

The random steps come from REWARM_KILL_SEED (default: a fresh seed, printed in every failure message)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from resume_helpers import (
    check_exactly_once,
    comparable_rows,
    effective_batches,
    finish,
    kill_when,
    last_row_step,
    read_records,
    start,
    stream_documents,
    tail,
    train_here,
    write_config,
)

from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE

SEED = int(os.environ.get("REWARM_KILL_SEED", random.SystemRandom().randrange(10**6)))
MAX_STEPS = 20


def _resumed_from(log: Path) -> list[str]:
    """Checkpoint names each start of the run resumed from ('fresh' for a fresh start), in order."""
    out = []
    for line in log.read_text().splitlines():
        if "resume=auto:" in line:
            m = re.search(r"resuming from \S*/(step\d+)", line)
            out.append(m.group(1) if m else "fresh")
    return out


def _ckpt_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name[4:]) for p in (run_dir / "checkpoints").glob("step*"))


def _check_same_run(ref_dir: Path, run_dir: Path, msg: str) -> None:
    ref, got = comparable_rows(ref_dir / "metrics.csv"), comparable_rows(run_dir / "metrics.csv")
    assert [r["step"] for r in got] == [r["step"] for r in ref], msg
    for a, b in zip(ref, got, strict=True):
        assert a == b, f"{msg}: row of step {a['step']} differs:\n{a}\n{b}"
    assert any(r["val/pile/loss"] for r in got[1:-1]), "no evaluation row between the first and the last"


def _check_documents(world: dict[str, Any], record: Path, streams: int, accum: int, msg: str) -> None:
    batches = effective_batches(read_records(record), MAX_STEPS, accum)
    per_stream = check_exactly_once(stream_documents(batches, streams, world["eos"]), world["corpus"])
    all_files = {f for f, _, _ in world["corpus"].values()}
    files = [f for fs, _ in per_stream for f in fs]
    assert sorted(files) == sorted(all_files), f"{msg}: the streams do not read each file exactly once: {per_stream}"
    assert all(passes >= 1 for _, passes in per_stream), f"{msg}: a stream did not complete a pass: {per_stream}"


def test_kill9_at_random_steps_and_mid_checkpoint_then_identical(resume_world: dict[str, Any], tmp_path: Path):
    """No workers, 2 micro-batches per step. Kills: at a random step; during the write of a checkpoint (after
    state.ckpt, before the manifest); at another random step; then the run finishes."""
    rng = random.Random(SEED)
    msg = f"REWARM_KILL_SEED={SEED}"
    cfg = write_config(tmp_path / "run.yaml", resume_world, num_workers=0, max_steps=MAX_STEPS, global_batch=4)
    ref_log, log, record = tmp_path / "ref.log", tmp_path / "train.log", tmp_path / "record.jsonl"
    ref = start(cfg, ["run.name=ref"], ref_log)  # the uninterrupted run, alongside
    run_dir, overrides = tmp_path / "r", ["resume=auto"]
    metrics, ckpts = run_dir / "metrics.csv", run_dir / "checkpoints"

    k1 = rng.randint(2, 7)
    kill_when(start(cfg, overrides, log, record=record), lambda: last_row_step(metrics) >= k1, log, f"step {k1}")
    resume1 = max(_ckpt_steps(run_dir), default=0)
    first = resume1 // 2 + 2  # a checkpoint step the next process reaches (a late kill moves it on)
    c2 = 2 * rng.randint(first, max(6, first))
    tmp_ckpt = ckpts / f".tmp-step{c2:08d}"
    kill_when(start(cfg, overrides, log, record=record, slow_manifest_step=c2),
              lambda: (tmp_ckpt / "slow-manifest").exists(), log, f"the checkpoint write of step {c2}")
    assert (tmp_ckpt / "state.ckpt").is_file() and not (tmp_ckpt / "manifest.json").exists()
    assert not (ckpts / f"step{c2:08d}").exists()
    k3 = rng.randint(c2 + 1, MAX_STEPS - 3)
    kill_when(start(cfg, overrides, log, record=record), lambda: last_row_step(metrics) >= k3, log, f"step {k3}")
    assert train_here(cfg, overrides, log, record=record) == 0, tail(log)  # the last start is not killed
    assert finish(ref, ref_log) == 0, tail(ref_log)

    starts = _resumed_from(log)
    assert starts[0] == "fresh" and len(starts) == 4, f"{msg}: {starts}"
    assert starts[2] == f"step{c2 - 2:08d}", f"{msg}: after the kill during step {c2}'s write: {starts}"
    assert not tmp_ckpt.exists(), "the interrupted checkpoint write was not cleaned up"
    assert (run_dir / "summary.json").is_file()
    _check_same_run(tmp_path / "ref", run_dir, msg)
    _check_documents(resume_world, record, streams=2, accum=2, msg=msg)


@pytest.fixture(scope="module")
def two_worker_runs(resume_world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """2 DataLoader workers, 1 micro-batch per step: an uninterrupted run and one killed once at a random step
    and resumed to the end (keep_last 2, keep_every 8)."""
    tmp = tmp_path_factory.mktemp("two_workers")
    cfg = write_config(tmp / "run.yaml", resume_world, num_workers=2, max_steps=MAX_STEPS, global_batch=2,
                       keep_every=8)
    ref_log, log, record = tmp / "ref.log", tmp / "train.log", tmp / "record.jsonl"
    ref = start(cfg, ["run.name=ref"], ref_log)
    rng = random.Random(SEED + 1)
    k1 = rng.randint(3, MAX_STEPS - 8)
    k2 = rng.randint(k1 + 2, MAX_STEPS - 3)
    metrics = tmp / "r" / "metrics.csv"
    kill_when(start(cfg, [], log, record=record), lambda: last_row_step(metrics) >= k1, log, f"step {k1}")
    proc = start(cfg, [], log, record=record)  # then a polite SIGTERM (preemption): checkpoint, exit code 3
    kill_when(proc, lambda: last_row_step(metrics) >= k2, log, f"step {k2}", sig=signal.SIGTERM)
    rc = train_here(cfg, [], log, record=record)
    ref_rc = finish(ref, ref_log)
    return {"tmp": tmp, "cfg": cfg, "log": log, "record": record, "rc": rc, "ref_rc": ref_rc, "k1": k1, "k2": k2,
            "sigterm_rc": proc.returncode}


def test_two_workers_kill9_then_identical(two_worker_runs: dict[str, Any], resume_world: dict[str, Any]):
    t = two_worker_runs
    msg = f"REWARM_KILL_SEED={SEED}, SIGKILL at step {t['k1']}, SIGTERM at step {t['k2']}"
    assert t["rc"] == 0, tail(t["log"])
    assert t["ref_rc"] == 0, tail(t["tmp"] / "ref.log")
    assert t["sigterm_rc"] == PREEMPTED_EXIT_CODE, f"{msg}\n{tail(t['log'])}"
    starts = _resumed_from(t["log"])
    assert starts[0] == "fresh" and len(starts) == 3, f"{msg}: {starts}"
    # SIGTERM came after row k2: the run checkpointed the step in progress (>= k2 + 1) and resumed from it
    assert int(starts[2][4:]) >= t["k2"] + 1, f"{msg}: {starts}"
    _check_same_run(t["tmp"] / "ref", t["tmp"] / "r", msg)
    _check_documents(resume_world, t["record"], streams=2, accum=1, msg=msg)
    assert _ckpt_steps(t["tmp"] / "r") == _kept(int(starts[2][4:]))  # keep_last 2 + keep_every 8


def _kept(preempted_at: int) -> list[int]:
    """Checkpoints left at the end: every 2 steps, the end, and the preemption's; keep_last 2 + keep_every 8."""
    saved = set(range(2, MAX_STEPS + 1, 2)) | {preempted_at}
    return sorted({s for s in saved if s % 8 == 0} | set(sorted(saved)[-2:]))


def test_corrupt_newest_checkpoint_falls_back_to_previous(two_worker_runs: dict[str, Any]):
    """The finished run's newest checkpoint loses its tail: resume=auto skips it with a warning naming it,
    resumes from the previous one, redoes the last steps, and metrics.csv is still the uninterrupted run's."""
    t = two_worker_runs
    run_dir, log = t["tmp"] / "r", t["tmp"] / "corrupt.log"
    newest = run_dir / "checkpoints" / f"step{MAX_STEPS:08d}"
    previous = _kept(int(_resumed_from(t["log"])[2][4:]))[-2]  # MAX_STEPS - 2, or the preemption's odd step
    state = newest / "state.ckpt"
    with open(state, "r+b") as f:
        f.truncate(state.stat().st_size // 2)
    (run_dir / "summary.json").unlink()
    assert train_here(t["cfg"], ["resume=auto"], log) == 0, tail(log)
    text = log.read_text()
    assert re.search(rf"skipping checkpoint \S*{newest.name}: state.ckpt has \d+ bytes", text), tail(log)
    assert _resumed_from(log) == [f"step{previous:08d}"], tail(log)
    _check_same_run(t["tmp"] / "ref", run_dir, "after falling back from a corrupt checkpoint")
    assert (run_dir / "checkpoints" / "abandoned" / newest.name).is_dir()  # set aside, never loaded again
    assert (run_dir / "summary.json").is_file()


def test_killed_after_the_end_checkpoint_keeps_the_final_row(two_worker_runs: dict[str, Any]):
    """A kill between the end checkpoint and summary.json: the restart trains nothing, keeps the final
    evaluation row (written before the end checkpoint) and writes summary.json with the final metrics."""
    t = two_worker_runs
    run_dir, log = t["tmp"] / "r", t["tmp"] / "after_end.log"
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").unlink()
    assert train_here(t["cfg"], [], log) == 0, tail(log)
    assert _resumed_from(log) == [f"step{MAX_STEPS:08d}"], tail(log)
    _check_same_run(t["tmp"] / "ref", run_dir, "after a restart from the end checkpoint")
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert _ckpt_steps(run_dir)[-1] == MAX_STEPS and "saved (end)" not in log.read_text()  # not written again


def test_resume_with_changed_data_config_is_refused(two_worker_runs: dict[str, Any]):
    t = two_worker_runs
    run_dir, log = t["tmp"] / "r", t["tmp"] / "refused.log"
    before = (run_dir / "metrics.csv").read_bytes()
    rc = train_here(t["cfg"], ["data.seq_len=8", "data.train.small.weight=2.0", "trainer.val_every_steps=5"], log)
    assert rc == 2, tail(log)
    err = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")]
    assert err and "data.seq_len: 16 -> 8" in err[0] and "data.train.small.weight: 1.0 -> 2.0" in err[0], tail(log)
    assert "trainer.val_every_steps" not in err[0]  # harmless: allowed, only logged
    assert "resume.allow_config_change=true" in err[0]
    assert (run_dir / "metrics.csv").read_bytes() == before  # nothing touched
