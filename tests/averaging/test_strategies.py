"""Two CPU processes (gloo) under DDP (EMA on rank 0 only: ``device: cpu``), FSDP2, DeepSpeed ZeRO-2 and ZeRO-3,
run one after the other in one ``torchrun``: the averaged validation each logs equals a one-process evaluation of
the EMA its checkpoint holds (assembled from the per-rank shards), and every strategy trains and averages alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewarm.averaging.state import ema_info, read_ema
from rewarm.checkpoints.store import read_valid_manifest
from rewarm.config import load
from rewarm.evaluation.checkpoint import evaluate_checkpoint
from rewarm.training.metrics import read_metrics
from tests.scale.helpers import REPO, TIMEOUT_S, scale_overrides, subprocess_env, tail

STRATEGIES = {
    "ddp": ["trainer.strategy=ddp", "averaging.device=cpu"],
    "fsdp": ["trainer.strategy=fsdp"],
    "zero2": ["trainer.strategy=deepspeed", "trainer.deepspeed.stage=2"],
    "zero3": ["trainer.strategy=deepspeed", "trainer.deepspeed.stage=3"],
}


# One torchrun per group, both at once: DeepSpeed cannot start a second engine's communication in a process that
# has run one (its backend outlives the process group), so ZeRO-3 runs in processes of its own.
GROUPS = (("ddp", "fsdp", "zero2"), ("zero3",))


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("avg_strategies")
    config = tmp / "empty.yaml"
    config.write_text("{}\n")
    base = scale_overrides(tiny_world, tmp, trainer__val_every_steps=2, checkpoint__every_steps=2,
                           averaging__ema_decay=0.5)
    env = {k: v for k, v in subprocess_env().items() if k != "WANDB_SERVICE"}
    procs = []
    for i, group in enumerate(GROUPS):
        specs = [[*base, f"run.name={name}", *STRATEGIES[name]] for name in group]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(Path(__file__).with_name("multi_train.py")), str(config), json.dumps(specs)]
        log = open(tmp / f"train{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for i, (proc, log) in enumerate(procs):
        rc = proc.wait(timeout=TIMEOUT_S)
        log.close()
        assert rc == 0, tail(tmp / f"train{i}.log")
    return tmp


def _averaged_model_dir(run_dir: Path, ckpt: Path, out: Path) -> Path:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf", dtype=torch.float32)
    missing, unexpected = model.load_state_dict(read_ema(ckpt), strict=False)
    assert not missing and not unexpected
    model.save_pretrained(out)
    return out


@pytest.mark.slow
def test_averaged_validation_equals_one_process_evaluation(runs: Path) -> None:
    reference = read_metrics(runs / "ddp" / "metrics.csv")
    for name in STRATEGIES:
        run_dir = runs / name
        rows = read_metrics(run_dir / "metrics.csv")
        assert [r["step"] for r in rows] == [r["step"] for r in reference], name
        for ref, row in zip(reference, rows, strict=True):  # the same training and EMA under every strategy
            for key in ("train/loss", "val/pile/loss", "val_avg/pile/loss"):
                assert (ref[key] == "") == (row[key] == ""), (name, row["step"], key)
                if row[key]:
                    assert abs(float(row[key]) - float(ref[key])) <= 1e-5, (name, row["step"], key)
        assert [r["step"] for r in rows if r["val_avg/pile/loss"]] == ["2", "4"]  # none before the first update
        ckpt = run_dir / "checkpoints" / "step00000004"
        info = ema_info(ckpt)
        assert info is not None and info["updates"] == 4 and info["world_size"] == 2
        assert all(f in read_valid_manifest(ckpt)["files"] or f == "state.ckpt" for f in info["files"])
        cfg = load(run_dir / "config.yaml", ["trainer.devices=1", "trainer.strategy=auto"])
        one = evaluate_checkpoint(cfg, _averaged_model_dir(run_dir, ckpt, runs / f"avg_{name}"))
        assert abs(one["pile"]["loss"] - float(rows[-1]["val_avg/pile/loss"])) <= 1e-5, name
        assert abs(float(rows[-1]["val_avg/pile/loss"]) - float(rows[-1]["val/pile/loss"])) > 1e-4  # it averages
