"""Shipped files in a checkout: the repository's configs/ and slurm/ (the installed case: tests/wheel/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.resources import INSTALLED, main, resource

REPO = Path(__file__).resolve().parents[1]


def test_a_checkout_uses_its_own_folders() -> None:
    assert not INSTALLED.exists()  # an editable install copies nothing into the package
    assert resource("configs/demo.yaml") == REPO / "configs" / "demo.yaml"
    assert resource("slurm") == REPO / "slurm" and (resource("slurm") / "train.sbatch").is_file()
    from rewarm.demo.cli import DEFAULT_CONFIG
    from rewarm.launch.slurm import TEMPLATE_DIR

    assert DEFAULT_CONFIG == REPO / "configs" / "demo.yaml" and TEMPLATE_DIR == REPO / "slurm"


def test_command_prints_paths_and_fails_on_a_missing_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs/deepspeed/zero2_comm.json"]) == 0
    assert capsys.readouterr().out.strip() == str(REPO / "configs" / "deepspeed" / "zero2_comm.json")
    assert main([]) == 0
    assert capsys.readouterr().out.split() == ["configs", str(REPO / "configs"), "slurm", str(REPO / "slurm")]
    assert main(["configs/nope.yaml"]) == 1
    assert "not found" in capsys.readouterr().err
