"""Checkpoint validity and the choice of the checkpoint to resume from (rewarm.checkpoints.store), on real
``torch.save`` files; metrics.csv continuation after a row cut short by a kill."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from rewarm.checkpoints.store import (
    MANIFEST,
    STATE,
    Checkpointer,
    find_latest_valid,
    invalid_reason,
    read_valid_manifest,
    resolve_resume,
    step_dir_name,
    write_manifest,
)
from rewarm.errors import ResumeError


def _checkpoint(root: Path, step: int) -> Path:
    d = root / step_dir_name(step)
    d.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.arange(4096, dtype=torch.float32) * step}, "global_step": step}, d / STATE)
    write_manifest(d, {"step": step, "reason": "periodic"})
    return d


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    for step in (2, 4, 6):
        _checkpoint(tmp_path / "checkpoints", step)
    return tmp_path


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)


def _flip_byte(path: Path) -> None:
    """Same size, one byte of tensor data changed: only the archive's CRC can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _break_manifest(d: Path) -> None:
    (d / MANIFEST).write_text('{"step": 6, "complete": tr')


def _drop_manifest(d: Path) -> None:
    (d / MANIFEST).unlink()


def test_a_written_checkpoint_is_valid(run_dir):
    d = run_dir / "checkpoints" / step_dir_name(6)
    manifest = read_valid_manifest(d, deep=True)
    assert manifest is not None and manifest["step"] == 6 and manifest["files"] == {STATE: (d / STATE).stat().st_size}
    assert torch.load(d / STATE, weights_only=True)["global_step"] == 6


@pytest.mark.parametrize("damage, reason", [
    (lambda d: _truncate(d / STATE), "state.ckpt has"),
    (lambda d: _flip_byte(d / STATE), "state.ckpt: content differs from the manifest's sha256"),
    (_break_manifest, "unreadable manifest.json"),
    (_drop_manifest, "missing manifest.json"),
    (lambda d: (d / STATE).unlink(), "missing state.ckpt"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(run_dir, caplog, damage, reason):
    newest = run_dir / "checkpoints" / step_dir_name(6)
    damage(newest)
    assert reason in (invalid_reason(newest, deep=True) or "")
    with caplog.at_level(logging.WARNING, logger="rewarm.checkpoints.store"):
        found = resolve_resume("auto", run_dir)
    assert found == run_dir / "checkpoints" / step_dir_name(4)
    assert f"skipping checkpoint {newest}: {reason}" in caplog.text


def test_the_crc_check_is_what_catches_same_size_damage(run_dir):
    newest = run_dir / "checkpoints" / step_dir_name(6)
    _flip_byte(newest / STATE)
    assert read_valid_manifest(newest) is not None  # sizes still match
    assert read_valid_manifest(newest, deep=True) is None


def test_manifests_without_hashes_fall_back_to_the_crc_check(run_dir):
    """Checkpoints written before the manifest listed sha256s: the zip CRCs are checked instead."""
    newest = run_dir / "checkpoints" / step_dir_name(6)
    manifest = json.loads((newest / MANIFEST).read_text())
    del manifest["sha256"]
    (newest / MANIFEST).write_text(json.dumps(manifest))
    assert read_valid_manifest(newest, deep=True) is not None
    _flip_byte(newest / STATE)
    assert "state.ckpt: CRC check failed" in (invalid_reason(newest, deep=True) or "")


def test_temporary_and_foreign_directories_are_never_candidates(run_dir):
    ckpts = run_dir / "checkpoints"
    tmp = _checkpoint(ckpts / "x", 8)
    tmp.rename(ckpts / ".tmp-step00000008")  # a write killed before the rename (even with a manifest)
    (ckpts / "step00000010").mkdir()  # no manifest
    (ckpts / "abandoned").mkdir()
    _checkpoint(ckpts / "abandoned", 12)
    assert find_latest_valid(ckpts) == ckpts / step_dir_name(6)


def test_no_valid_checkpoint_means_a_fresh_start(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rewarm.checkpoints.store"):
        assert resolve_resume("auto", tmp_path) is None
    assert "no valid checkpoint, starting fresh" in caplog.text
    d = _checkpoint(tmp_path / "checkpoints", 2)
    _truncate(d / STATE)
    assert resolve_resume("auto", tmp_path) is None


def test_resume_never_and_explicit_paths(run_dir):
    ckpts = run_dir / "checkpoints"
    assert resolve_resume("never", run_dir) is None
    assert resolve_resume(str(ckpts / step_dir_name(4)), run_dir / "other") == ckpts / step_dir_name(4)
    assert resolve_resume(str(ckpts / step_dir_name(2) / STATE), run_dir) == ckpts / step_dir_name(2)
    assert resolve_resume(str(run_dir), run_dir / "other") == ckpts / step_dir_name(6)  # a run directory
    _truncate(ckpts / step_dir_name(4) / STATE)
    with pytest.raises(ResumeError, match="state.ckpt has"):
        resolve_resume(str(ckpts / step_dir_name(4)), run_dir)
    with pytest.raises(ResumeError, match="missing manifest.json"):
        resolve_resume(str(run_dir / "nowhere"), run_dir)


def test_manifest_is_written_last_and_atomically(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    torch.save({"a": 1}, d / STATE)
    write_manifest(d, {"step": 3, "config_fingerprint": "abc"})
    assert sorted(p.name for p in d.iterdir()) == [MANIFEST, STATE]  # no manifest.json.tmp left behind
    assert json.loads((d / MANIFEST).read_text())["complete"] is True


def _checkpointer(root: Path, every_steps: int = 0, every_minutes: float = 0.0) -> Checkpointer:
    return Checkpointer(root, every_steps=every_steps, every_minutes=every_minutes, keep_last=1, keep_every=0,
                        info=dict)


def test_newer_checkpoints_and_temporaries_are_set_aside_at_start(run_dir, caplog):
    ckpts = run_dir / "checkpoints"
    (ckpts / ".tmp-step00000008").mkdir()
    (ckpts / ".old-step00000002").mkdir()
    with caplog.at_level(logging.WARNING, logger="rewarm.checkpoints.store"):
        _checkpointer(ckpts).set_aside(4)  # resumed from step 4 (e.g. 6 was skipped as invalid, or a rewind)
    assert sorted(p.name for p in ckpts.iterdir()) == ["abandoned", "step00000002", "step00000004"]
    assert [p.name for p in (ckpts / "abandoned").iterdir()] == ["step00000006"]
    assert "step00000006 is not part of this run's history (resumed from step 4)" in caplog.text
    _checkpointer(ckpts).set_aside(None)  # a fresh start (resume=never): nothing is left to resume from
    assert find_latest_valid(ckpts) is None
    assert sorted(p.name for p in (ckpts / "abandoned").iterdir()) == ["step00000002", "step00000004", "step00000006"]


def test_checkpoint_due_by_steps_and_minutes(tmp_path):
    def make(every_steps: int, every_minutes: float) -> Checkpointer:
        return _checkpointer(tmp_path, every_steps, every_minutes)

    assert [s for s in range(1, 10) if make(3, 0).due(s)] == [3, 6, 9]
    assert not any(make(0, 0).due(s) for s in range(1, 10))
    assert make(0, 1e-9).due(1)  # 0.06 µs passed since it was created
    assert not make(0, 60.0).due(1)


def test_metrics_csv_continues_after_a_row_cut_by_a_kill(tmp_path):
    from rewarm.training.metrics import CsvRunLogger, read_metrics

    path = tmp_path / "metrics.csv"
    log = CsvRunLogger(path, ["train/loss"])
    log.start(None)
    for step in range(4):
        log.log_metrics({"tokens": 8 * step, "train/loss": 1.0 / (step + 1)}, step=step)
    log.finalize("success")
    with open(path, "a") as f:
        f.write("1")  # the first byte of row 10 (or 1x): a kill in the middle of a write
    log = CsvRunLogger(path, ["train/loss"])
    log.start(3)  # resuming from the checkpoint of step 3
    log.log_metrics({"tokens": 24, "train/loss": 0.5}, step=3)
    log.finalize("success")
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[1]["train/loss"] == repr(0.5) and rows[3]["train/loss"] == repr(0.5)
