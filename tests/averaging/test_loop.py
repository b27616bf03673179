"""The EMA in a real one-process run (`rewarm train` in this process): training is bit for bit the same as
without it, the EMA a checkpoint holds follows the formula from the checkpoints' weights, ``val_avg`` equals an
evaluation of the averaged weights, and an EMA turned on at a resume starts there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rewarm.averaging.state import ema_info, read_ema
from rewarm.checkpoints.export import model_state_dict
from rewarm.config import load
from rewarm.evaluation.checkpoint import evaluate_checkpoint
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides
from tests.in_process import run_cli

DECAY = 0.6
COMMON = {"logging__wandb__mode": "disabled", "checkpoint__every_steps": 1, "checkpoint__keep_last": 10}


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("avg_loop")
    config = out / "empty.yaml"
    config.write_text("{}\n")
    for name, extra in (("plain", {}), ("ema", {"averaging__ema_decay": DECAY})):
        res = run_cli(["train", str(config), *tiny_overrides(tiny_world, out, run__name=name, **COMMON, **extra)])
        assert res.returncode == 0, res.stderr[-3000:]
    turned_on = tiny_overrides(tiny_world, out, run__name="late", averaging__ema_decay=DECAY, **COMMON)
    res = run_cli(["train", str(config), *turned_on, f"resume={out / 'plain' / 'checkpoints' / 'step00000003'}"])
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _columns(rows: list[dict[str, str]], prefix: str) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k.startswith(prefix)} for r in rows]


def test_training_is_the_same_with_and_without_the_ema(runs: Path) -> None:
    plain, ema = read_metrics(runs / "plain" / "metrics.csv"), read_metrics(runs / "ema" / "metrics.csv")
    for prefix in ("train/", "val/", "optim/", "forgetting/", "adaptation/"):
        assert _columns(plain, prefix) == _columns(ema, prefix), prefix  # bitwise: values are written with repr
    assert [r["step"] for r in ema if r["val_avg/pile/loss"]] == ["3", "6"]  # step 0: no EMA yet
    assert "val_avg/pile/loss" not in plain[0]


def test_checkpointed_ema_follows_the_formula(runs: Path) -> None:
    ckpts = runs / "ema" / "checkpoints"
    theta1, theta2 = (model_state_dict(ckpts / f"step{s:08d}") for s in (1, 2))
    ema1, ema2 = read_ema(ckpts / "step00000001"), read_ema(ckpts / "step00000002")
    assert ema1.keys() == ema2.keys() and set(ema1) <= set(theta1)
    for name in ema1:
        assert torch.equal(ema1[name], theta1[name].float()), name  # the first update: avg = weights
        expected = DECAY * theta1[name].float() + (1 - DECAY) * theta2[name].float()
        torch.testing.assert_close(ema2[name], expected, rtol=1e-6, atol=1e-7)  # lerp vs the formula: 1 ulp
    assert ema_info(ckpts / "step00000002") == {"ema": True, "files": ["state.ckpt"], "decay": DECAY, "updates": 2,
                                                "last_step": 2, "world_size": 1, "strategy": "single"}


def test_val_avg_equals_an_evaluation_of_the_averaged_weights(runs: Path) -> None:
    from transformers import AutoModelForCausalLM

    run_dir = runs / "ema"
    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf", dtype=torch.float32)
    model.load_state_dict(read_ema(run_dir / "checkpoints" / "step00000006"), strict=True)
    model.save_pretrained(runs / "averaged")
    got = evaluate_checkpoint(load(run_dir / "config.yaml"), runs / "averaged")
    last = read_metrics(run_dir / "metrics.csv")[-1]
    for name in ("pile", "slimpajama"):
        assert abs(got[name]["loss"] - float(last[f"val_avg/{name}/loss"])) <= 1e-6, name
        assert float(last[f"val_avg/{name}/loss"]) != float(last[f"val/{name}/loss"])


def test_an_ema_turned_on_at_a_resume_starts_there(runs: Path) -> None:
    late, plain = read_metrics(runs / "late" / "metrics.csv"), read_metrics(runs / "plain" / "metrics.csv")
    assert [r["step"] for r in late] == [r["step"] for r in plain[3:]]  # a new run directory, from step 3 on
    assert _columns(late, "train/") == _columns(plain[3:], "train/")
    assert [r["step"] for r in late if r.get("val_avg/pile/loss")] == ["6"]  # none at the resume's own step 3
    info = ema_info(runs / "late" / "checkpoints" / "step00000006")
    assert info is not None and info["updates"] == 3  # steps 4, 5, 6
