"""`rewarm average`: the newest K checkpoints of a run (or the ones named, with weights) averaged into a Hugging
Face directory equal to an independent mean of the checkpoints' `rewarm export`s; the output loads with
transformers and `rewarm eval`; refusals (exit 2, naming them) of checkpoints of different runs or models, a corrupt
or hostile checkpoint, a weights count that does not match, more checkpoints asked for than there are. From sharded
checkpoints (FSDP2, DeepSpeed ZeRO-2, 2 processes): tests/faults/test_strategy_resume.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.averaging.conftest import averaging_overrides
from tests.averaging.helpers import check_average
from tests.in_process import run_cli

REPO = Path(__file__).resolve().parents[2]


def steps(run: Path, *ns: int) -> list[Path]:
    return [run / "checkpoints" / f"step{n:08d}" for n in ns]


def test_last_k_as_typed_equals_the_mean_of_the_exports(avg_run, tmp_path):
    """As the user types it, in a process of its own; the output loads with plain transformers."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    out = tmp_path / "avg"
    proc = subprocess.run([sys.executable, "-m", "rewarm", "average", str(avg_run), "--last", "2", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpts = steps(avg_run, 4, 6)
    assert [f"averaged: {c} (weight 0.5)" for c in ckpts] == proc.stdout.splitlines()[:2], proc.stdout
    print("max |average - mean of exports|:", check_average(out, ckpts, tmp_path))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0
    assert len(AutoTokenizer.from_pretrained(out)) > 0


def test_named_checkpoints_with_weights(avg_run, tmp_path, tiny_world, avg_yaml):
    """Checkpoint directories in any order, weights oldest first; `rewarm eval` reads the output."""
    out = tmp_path / "avg"
    ckpts = steps(avg_run, 2, 6)
    proc = run_cli(["average", str(ckpts[1]), str(ckpts[0] / "state.ckpt"), "--weights", "1,3", "--out", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_average(out, ckpts, tmp_path, weights=[1.0, 3.0])
    proc = run_cli(["eval", str(avg_yaml), *averaging_overrides(tiny_world, tmp_path / "eval"), "--checkpoint", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["pile"]["loss"] > 0


def _refused(args: list[str], *needles: str) -> str:
    proc = run_cli(["average", *args])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, (needle, out)
    return out


def test_refuses_checkpoints_of_different_runs(avg_run, tmp_path):
    other = tmp_path / "runs" / "other"
    shutil.copytree(avg_run, other)
    a, b = steps(avg_run, 6)[0], steps(other, 4)[0]
    _refused([str(a), str(b), "--out", str(tmp_path / "x")], "different runs", str(avg_run), str(other),
             "model ")
    assert not (tmp_path / "x").exists()


def test_refuses_weights_of_different_models(avg_run, tmp_path):
    """A checkpoint of the same run whose weights have another shape (a checkpoint of another model put there)."""
    import torch

    run = tmp_path / "runs" / "t"
    shutil.copytree(avg_run, run)
    ckpt = steps(run, 4)[0]
    state = torch.load(ckpt / "state.ckpt", weights_only=True)
    key = next(k for k in state["state_dict"] if k.endswith("embed_in.weight"))
    state["state_dict"][key] = torch.zeros(8, 8)
    torch.save(state, ckpt / "state.ckpt")
    _rewrite_manifest(ckpt)
    _refused([str(run), "--out", str(tmp_path / "x")], "weights of different models", str(ckpt),
             "gpt_neox.embed_in.weight")


def _rewrite_manifest(ckpt: Path) -> None:
    from rewarm.checkpoints.store import MANIFEST, STATE, write_manifest

    info = {k: v for k, v in json.loads((ckpt / MANIFEST).read_text()).items()
            if k not in ("files", "sha256", "complete")}
    write_manifest(ckpt, info)
    assert (ckpt / STATE).is_file()


def test_refuses_a_corrupt_checkpoint(avg_run, tmp_path):
    from tests.faults.test_corrupted_checkpoint import REASON, flip

    run = tmp_path / "runs" / "t"
    shutil.copytree(avg_run, run)
    ckpt = steps(run, 6)[0]
    flip(ckpt / "state.ckpt", 0.5)
    _refused([str(run), "--last", "2", "--out", str(tmp_path / "x")], str(ckpt), REASON)
    assert run_cli(["average", str(run), "--last", "1", "--out", str(tmp_path / "y")]).returncode == 2
    proc = run_cli(["average", *map(str, steps(run, 2, 4)), "--out", str(tmp_path / "z")])  # leaving it out
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_refuses_a_hostile_checkpoint(avg_run, tmp_path):
    from tests.faults.test_hostile_checkpoint import plant

    run = tmp_path / "runs" / "t"
    shutil.copytree(avg_run, run)
    marker = tmp_path / "PAYLOAD_RAN"
    plant(steps(run, 4)[0], marker)
    _refused([str(run), "--last", "2", "--out", str(tmp_path / "x")], "refusing checkpoint", "posix.system")
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize(("args", "needles"), [
    (["--last", "4"], ["--last 4 asks for more checkpoints than there are: 3"]),
    (["--last", "0"], ["--last: must be >= 1"]),
    (["--weights", "1,2"], ["--weights gives 2 weights for 3 checkpoints"]),
    (["--last", "2", "--weights", "1,-1"], ["--weights: weights must be finite, >= 0"]),
    (["--weights", "a,b,c"], ["--weights: give numbers"]),
])
def test_refuses_bad_arguments(avg_run, tmp_path, args, needles):
    _refused([str(avg_run), *args, "--out", str(tmp_path / "x")], *needles)
    assert not (tmp_path / "x").exists()


def test_refuses_what_is_no_checkpoint(tmp_path):
    _refused([str(tmp_path), "--out", str(tmp_path / "x")], "neither a run directory")
