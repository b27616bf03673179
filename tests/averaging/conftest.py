"""Fixtures of the averaging tests: one short finished run with an EMA of its weights (decay 0.5) and a checkpoint
every 2 steps (steps 2, 4, 6), trained once per session in this process through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_overrides

EMA_DECAY = 0.5


def averaging_overrides(world: dict[str, Path], out_dir: Path, **extra: object) -> list[str]:
    """The shared tiny run: 6 steps, validation every 3, a checkpoint every 2 (all kept), an EMA, no wandb."""
    base: dict[str, object] = {"checkpoint__every_steps": 2, "checkpoint__keep_last": 10,
                               "logging__wandb__mode": "disabled", "averaging__ema_decay": EMA_DECAY}
    base.update(extra)
    return tiny_overrides(world, out_dir, **base)


@pytest.fixture(scope="session")
def avg_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("avg_cfg") / "empty.yaml"
    p.write_text("{}\n")
    return p


@pytest.fixture(scope="session")
def avg_run(tiny_world: dict[str, Path], avg_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 6-step run with checkpoints at steps 2, 4 and 6, each holding the EMA."""
    from tests.in_process import run_cli

    out = tmp_path_factory.mktemp("avg_runs")
    proc = run_cli(["train", str(avg_yaml), *averaging_overrides(tiny_world, out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "t"
