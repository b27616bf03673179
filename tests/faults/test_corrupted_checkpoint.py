"""A checkpoint whose state file was changed after its manifest was written (flipped bytes, same size): the
manifest's sha256 catches it wherever the bytes are (tensor data, the zip directory that the old CRC check
skipped, a distributed checkpoint's raw shard); resume=auto warns naming it and falls back to the previous
valid checkpoint (the run then ends exactly as the uninterrupted one); resume=PATH and `rewarm export` refuse it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rewarm.checkpoints.store import STATE, invalid_reason, write_manifest
from rewarm.cli import main
from rewarm.training.metrics import read_metrics
from tests.faults.conftest import fault_overrides
from tests.in_process import run_cli

REASON = "state.ckpt: content differs from the manifest's sha256"


def flip(path: Path, where: float) -> None:
    """Invert 4 bytes at relative position ``where`` of the file (same size)."""
    data = bytearray(path.read_bytes())
    at = min(int(len(data) * where), len(data) - 4)
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.5, 0.995])  # tensor data; the zip central directory at the end
def test_flipped_bytes_are_caught_anywhere(run_copy, where):
    ckpt = run_copy / "checkpoints" / "step00000006"
    assert invalid_reason(ckpt, deep=True) is None
    flip(ckpt / STATE, where)
    assert REASON in (invalid_reason(ckpt, deep=True) or "")
    assert invalid_reason(ckpt, deep=False) is None  # sizes alone cannot tell


def test_resume_auto_falls_back_and_ends_like_the_uninterrupted_run(run_copy, finished_run, tiny_world, empty_yaml,
                                                                    caplog):
    ckpt = run_copy / "checkpoints" / "step00000006"
    flip(ckpt / STATE, 0.5)
    with caplog.at_level(logging.WARNING, logger="rewarm"):
        assert main(["train", str(empty_yaml), *fault_overrides(tiny_world, run_copy.parent)]) == 0
    assert f"skipping checkpoint {ckpt}: {REASON}" in caplog.text
    assert f"checkpoint {ckpt} is not part of this run's history (resumed from step 4)" in caplog.text  # set aside
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]  # noqa: E731
    assert strip(read_metrics(run_copy / "metrics.csv")) == strip(read_metrics(finished_run / "metrics.csv"))
    assert invalid_reason(ckpt, deep=True) is None  # the end checkpoint was written again, valid


def test_resume_path_and_export_refuse_it(run_copy, tiny_world, empty_yaml, tmp_path):
    ckpt = run_copy / "checkpoints" / "step00000004"
    flip(ckpt / STATE, 0.5)
    proc = run_cli(["train", str(empty_yaml), *fault_overrides(tiny_world, run_copy.parent), f"resume.mode={ckpt}"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and f"error: resume={ckpt}: not a valid rewarm checkpoint directory" in out, out
    assert REASON in out and "Traceback" not in out
    proc = run_cli(["export", str(ckpt), "--out", str(tmp_path / "hf")])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and f"error: {ckpt} is not a valid rewarm checkpoint ({REASON}" in out, out
    assert not (tmp_path / "hf").exists()


def test_a_raw_distributed_shard_is_covered_too(tmp_path):
    """FSDP2 checkpoints are directories of raw shards (no zip CRC at all): the hash covers every file."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp

    ckpt = tmp_path / "step00000002"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.arange(1000.0)}, checkpoint_id=ckpt / STATE, no_dist=True)
    write_manifest(ckpt, {"step": 2})
    assert invalid_reason(ckpt, deep=True) is None
    flip(next((ckpt / STATE).glob("*.distcp")), 0.5)
    assert "content differs from the manifest's sha256" in (invalid_reason(ckpt, deep=True) or "")
