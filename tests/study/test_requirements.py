"""Runs that need an optional package that is not installed (lm-eval, DeepSpeed, flash-attn) are refused before
anything runs, with one message naming the package and the extra: `rewarm sweep`, `rewarm train`, `rewarm check`.

A package is made absent in a child process whose import system finds nothing of it (tests.study.helpers.without),
as when it is not installed; flash-attn is really absent on a machine without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.cli import main
from rewarm.config import load
from rewarm.errors import EXIT_CONFIG
from rewarm.study.sweep import SweepRun, plan_sweep
from rewarm.training.requirements import DEEPSPEED, FLASH_ATTN, LM_EVAL, installed, missing_message, required
from tests.study.helpers import BASE, without, write_run

NO_LM_EVAL = ("every run of this sweep (3) needs lm-eval[hf] for tasks.names, which is not installed: "
              "pip install 'rewarm[eval]' (or tasks.names=[] runs without downstream tasks)")
NO_DEEPSPEED = ("this run needs deepspeed for trainer.strategy=deepspeed, which is not installed: "
                "pip install 'rewarm[deepspeed]' (or trainer.strategy=ddp or fsdp runs without it)")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    from omegaconf import OmegaConf

    path = tmp_path / "run.yaml"
    OmegaConf.save(OmegaConf.from_dotlist([*BASE, f"run.out_dir={tmp_path / 'runs'}"]), path)
    return path


def test_a_sweep_needing_a_missing_package_stops_before_its_first_run(tmp_path: Path, config: Path) -> None:
    sweep = tmp_path / "lr.yaml"
    sweep.write_text("name: lr\ngrid:\n  schedule.max_lr: [1.5e-4, 3e-4, 6e-4]\n")
    argv = ["sweep", str(config), str(sweep), "tasks.names=[arc_easy]"]
    proc = without(["lm_eval"], argv, cwd=tmp_path)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {NO_LM_EVAL}"] and proc.stdout == ""
    assert not (tmp_path / "runs").exists()  # no run directory, no manifest
    # with lm-eval installed (this environment), the same sweep plans its three runs
    planned = plan_sweep(config, [SweepRun(n, [f"schedule.max_lr={n}"]) for n in ("1.5e-4", "3e-4", "6e-4")],
                         group="lr", extra_overrides=["tasks.names=[arc_easy]"])
    assert installed(LM_EVAL) and len(planned) == 3


def test_finished_runs_need_nothing(tmp_path: Path, config: Path) -> None:
    for name in ("a", "b"):
        write_run(tmp_path / "runs" / "g", name)
    sweep = tmp_path / "done.yaml"
    sweep.write_text("name: g\nruns: [{name: a}, {name: b}]\n")
    proc = without(["lm_eval"], ["sweep", str(config), str(sweep), "tasks.names=[arc_easy]"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sweep g: 2 runs finished" in proc.stdout


@pytest.mark.parametrize("command", ["train", "check"])
def test_a_run_needing_a_missing_package_is_refused_before_its_start_up(tmp_path: Path, config: Path,
                                                                        command: str) -> None:
    proc = without(["deepspeed"], [command, str(config), "trainer.strategy=deepspeed"], cwd=tmp_path)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {NO_DEEPSPEED}"]
    assert not (tmp_path / "runs").exists()


def test_flash_attention_without_flash_attn_is_refused(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if installed(FLASH_ATTN):
        pytest.skip("flash-attn is installed here")
    assert main(["check", str(config), "model.attn_implementation=flash_attention_2"]) == EXIT_CONFIG
    assert capsys.readouterr().err == (
        "error: this run needs flash-attn for model.attn_implementation=flash_attention_2, which is not installed: "
        "pip install 'rewarm[flash]' (or model.attn_implementation=auto uses it only when installed)\n")


def test_what_a_config_needs(config: Path) -> None:
    assert required(load(config)) == []  # attn_implementation=auto falls back to sdpa: it needs nothing
    cfg = load(config, ["tasks.names=[arc_easy]", "trainer.strategy=deepspeed",
                        "model.attn_implementation=flash_attention_2"])
    assert required(cfg) == [LM_EVAL, DEEPSPEED, FLASH_ATTN]


def test_one_message_for_several_packages_and_some_runs() -> None:
    assert missing_message({LM_EVAL: ["a", "b", "c"], DEEPSPEED: ["b"]}, 3, "this sweep") == (
        "every run of this sweep (3) needs lm-eval[hf] for tasks.names; 1 of 3 runs of this sweep (b) needs "
        "deepspeed for trainer.strategy=deepspeed, which are not installed: pip install 'rewarm[eval,deepspeed]' "
        "(or tasks.names=[] runs without downstream tasks; trainer.strategy=ddp or fsdp runs without it)")
