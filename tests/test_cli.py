"""`rewarm check` prints the plan without importing Lightning / DeepSpeed / wandb; bad configs exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rewarm.cli import main
from tests.conftest import tiny_overrides


def test_check_prints_the_plan(tiny_world, tmp_path: Path, empty_config, capsys) -> None:
    overrides = tiny_overrides(tiny_world, tmp_path, trainer__global_batch_size=4, schedule__warmup_steps=2)
    assert main(["check", str(empty_config), *overrides]) == 0
    out = capsys.readouterr().out
    assert "optimizer steps 6" in out and "2 rows x 2 accumulation x 1 devices" in out
    assert "tokens/step    64" in out and "total tokens   384" in out
    assert "warmup steps   2" in out and "peak 0.001" in out
    assert "pile: upstream" in out and "slimpajama: downstream" in out
    assert "parameters" in out  # counted from the model's config.json
    assert f"resume         auto (the newest valid checkpoint in {tmp_path}" in out


@pytest.mark.parametrize("order", [1, -1])
def test_check_prints_the_resume_mode_of_a_shorthand_with_other_resume_keys(
        order: int, tiny_world, tmp_path: Path, empty_config, capsys) -> None:
    resume = ["resume=/x/ck", "resume.allow_config_change=true"][::order]
    assert main(["check", str(empty_config), *tiny_overrides(tiny_world, tmp_path), *resume]) == 0
    assert "resume         from /x/ck, config changes allowed (logged)" in capsys.readouterr().out


def test_check_refuses_a_shorthand_that_contradicts_its_long_key(tiny_world, tmp_path, empty_config, capsys) -> None:
    overrides = [*tiny_overrides(tiny_world, tmp_path), "resume=/x/ck", "resume.mode=never"]
    assert main(["check", str(empty_config), *overrides]) == 2
    assert "resume=/x/ck and resume.mode=never" in capsys.readouterr().err


def test_check_refuses_with_the_key_and_exit_2(tiny_world, tmp_path: Path, empty_config, capsys) -> None:
    overrides = tiny_overrides(tiny_world, tmp_path)
    assert main(["check", str(empty_config), *overrides, "schedule.warmup_steps=-1"]) == 2
    assert "schedule.warmup_steps" in capsys.readouterr().err
    missing = [o for o in overrides if not o.startswith("data.val.pile.paths")] + ["data.val.pile.paths=[/nope/*.zst]"]
    assert main(["check", str(empty_config), *missing]) == 2
    assert "data.val.pile.paths" in capsys.readouterr().err


def test_check_imports_no_training_stack(tiny_world, tmp_path: Path, empty_config) -> None:
    code = ("import sys; from rewarm.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('lightning', 'deepspeed', 'wandb', 'torch') if m in sys.modules]; "
            "print('HEAVY', heavy); raise SystemExit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "check", str(empty_config), *tiny_overrides(tiny_world, tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
