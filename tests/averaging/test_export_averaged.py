"""`rewarm export RUN --averaged`: the EMA a checkpoint holds as a Hugging Face directory that loads with
transformers, whose `rewarm eval` equals the run's logged ``val_avg`` at that step; refused for a run without
averaging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewarm.training.metrics import read_metrics
from tests.averaging.conftest import averaging_overrides
from tests.averaging.helpers import hf_weights, max_abs_diff
from tests.in_process import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_export_averaged_as_typed_loads_and_evaluates_to_the_logged_val_avg(avg_run, avg_yaml, tiny_world, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    out = tmp_path / "ema"
    proc = subprocess.run([sys.executable, "-m", "rewarm", "export", str(avg_run), "--averaged", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"exported (averaged): {out}" in proc.stdout
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.num_parameters() > 0
    raw = run_cli(["export", str(avg_run), "--out", str(tmp_path / "raw")])
    assert raw.returncode == 0, raw.stdout + raw.stderr
    assert max_abs_diff(hf_weights(out), hf_weights(tmp_path / "raw")) > 1e-4  # the EMA, not the weights
    proc = run_cli(["eval", str(avg_yaml), *averaging_overrides(tiny_world, tmp_path / "eval"), "--checkpoint", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)
    last = [r for r in read_metrics(avg_run / "metrics.csv") if r.get("val_avg/pile/loss") not in (None, "")][-1]
    assert int(float(last["step"])) == 6
    for name in ("pile", "slimpajama"):
        logged = float(last[f"val_avg/{name}/loss"])
        assert results[name]["loss"] == pytest.approx(logged, rel=1e-6), name
        assert abs(results[name]["loss"] - float(last[f"val/{name}/loss"])) > 1e-4  # the raw weights evaluate apart


def test_export_averaged_of_a_checkpoint_differs_by_step(avg_run, tmp_path):
    """A checkpoint directory exports its own step's EMA."""
    outs = []
    for step in (4, 6):
        out = tmp_path / f"ema{step}"
        proc = run_cli(["export", str(avg_run / "checkpoints" / f"step{step:08d}"), "--averaged", "--out", str(out)])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append(hf_weights(out))
    assert max_abs_diff(*outs) > 1e-5


def test_refused_without_averaging(tiny_world, avg_yaml, tmp_path):
    run = tmp_path / "runs"
    overrides = averaging_overrides(tiny_world, run, averaging__ema_decay="null", trainer__max_steps=2,
                                    trainer__val_every_steps=0)
    proc = run_cli(["train", str(avg_yaml), *overrides])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli(["export", str(run / "t"), "--averaged", "--out", str(tmp_path / "x")])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "holds no averaged weights: the run had no averaging" in out, out
    assert "Traceback" not in out and not (tmp_path / "x").exists()
