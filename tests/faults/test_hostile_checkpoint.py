"""A hostile checkpoint (a pickled object that calls os.system, manifest sizes and hashes updated to match) is
refused by `rewarm export`, `rewarm eval --checkpoint` and `rewarm train resume.mode=PATH` with a clear error
naming the offending type, and its payload never runs; a distributed checkpoint's ``.metadata`` (read by torch
with plain pickle) is checked the same way."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from rewarm.checkpoints.store import MANIFEST, STATE, file_sha256, read_valid_manifest
from rewarm.errors import ResumeError
from rewarm.faults.safe_load import UnsafeCheckpointError, check_dcp_metadata, weights_only_loads
from tests.faults.conftest import fault_overrides, rewarm
from tests.in_process import run_cli


class Payload:
    """Unpickling it runs ``touch MARKER`` through os.system (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(ckpt: Path, marker: Path) -> None:
    """Add the payload to a real checkpoint's state and update its manifest (sizes and sha256) to match."""
    state = torch.load(ckpt / STATE, weights_only=True)
    state["rewarm"]["note"] = Payload(marker)
    torch.save(state, ckpt / STATE)
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"] = {STATE: (ckpt / STATE).stat().st_size}
    manifest["sha256"] = {STATE: file_sha256(ckpt / STATE)}
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    assert read_valid_manifest(ckpt, deep=True) is not None  # it passes every integrity check


def _refused(proc, marker: Path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "refusing checkpoint" in out and "posix.system" in out, out
    assert "Traceback" not in out, out
    assert not marker.exists(), "the payload ran"


@pytest.fixture()
def hostile(run_copy: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(run dir, its hostile newest checkpoint, the payload's marker file)."""
    marker = tmp_path / "PAYLOAD_RAN"
    ckpt = run_copy / "checkpoints" / "step00000004"  # not the last: a resume from it trains
    plant(ckpt, marker)
    return run_copy, ckpt, marker


def test_the_payload_is_real(hostile):
    """The planted file does run code under a plain pickle load (what export did before)."""
    _, ckpt, marker = hostile
    torch.load(ckpt / STATE, weights_only=False)
    assert marker.exists()


def test_export_refuses(hostile, tmp_path):
    """As the user types it, in a process of its own (the other commands' refusals run in this one)."""
    run_dir, ckpt, marker = hostile
    _refused(rewarm(["export", str(ckpt), "--out", str(tmp_path / "hf")]), marker)
    assert not (tmp_path / "hf").exists()


def test_eval_refuses(hostile, tiny_world, empty_yaml, tmp_path):
    run_dir, ckpt, marker = hostile
    overrides = fault_overrides(tiny_world, tmp_path / "eval")
    _refused(run_cli(["eval", str(empty_yaml), *overrides, "--checkpoint", str(ckpt)]), marker)


def test_resume_refuses(hostile, tiny_world, empty_yaml):
    run_dir, ckpt, marker = hostile
    overrides = fault_overrides(tiny_world, run_dir.parent)
    _refused(run_cli(["train", str(empty_yaml), *overrides, f"resume.mode={ckpt}"]), marker)


def test_in_process_loads_raise_a_resume_error(hostile):
    _, ckpt, marker = hostile
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system"), weights_only_loads(ckpt):
        torch.load(ckpt / STATE, weights_only=False)  # what DeepSpeed's loader passes: forced weights-only
    assert issubclass(UnsafeCheckpointError, ResumeError) and not marker.exists()


def test_our_own_checkpoint_still_exports(finished_run, tmp_path):
    proc = run_cli(["export", str(finished_run), "--out", str(tmp_path / "hf")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "hf" / "config.json").is_file()


def _dcp(tmp_path: Path) -> Path:
    import warnings

    import torch.distributed.checkpoint as dcp

    d = tmp_path / "state.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save({"state_dict": {"w": torch.ones(3, dtype=torch.bfloat16)}, "n": 3}, checkpoint_id=d, no_dist=True)
    return d


def test_distributed_checkpoint_metadata_is_checked(tmp_path):
    d = _dcp(tmp_path)
    check_dcp_metadata(d)  # a real one passes
    marker = tmp_path / "PAYLOAD_RAN"
    meta = pickle.loads((d / ".metadata").read_bytes())
    meta.storage_meta = Payload(marker)
    (d / ".metadata").write_bytes(pickle.dumps(meta))
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system"):
        check_dcp_metadata(d)
    assert not marker.exists()


def test_dotted_lookups_through_allowed_modules_are_refused(tmp_path):
    """A protocol-4 pickle may name ``module.attr.attr``: the metadata module's imports are no way in."""
    d = _dcp(tmp_path)
    module = b"torch.distributed.checkpoint.metadata"
    payload = (b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x94\x8c\x09os.system\x94\x93\x94"
               b"\x8c\x04true\x94\x85\x94R\x94.")
    (d / ".metadata").write_bytes(payload)
    with pytest.raises(UnsafeCheckpointError, match="os.system"):
        check_dcp_metadata(d)
