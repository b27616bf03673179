"""Every YAML directly under configs/ is a valid run config."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.config import batch_plan, load

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    names = {p.name for p in CONFIGS}
    assert "pythia-410m-pile-to-slimpajama.yaml" in names and "demo.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path: Path) -> None:
    cfg = load(path)
    assert batch_plan(cfg).max_steps > 0


def test_gupta_setup_is_stated() -> None:
    cfg = load(Path(__file__).parent.parent / "configs" / "pythia-410m-pile-to-slimpajama.yaml")
    plan = batch_plan(cfg)
    assert cfg.model.name_or_path == "EleutherAI/pythia-410m" and cfg.model.revision == "step143000"
    assert plan.tokens_per_step == 1024 * 2048 and plan.rows_per_step == 1024
    assert cfg.optimizer.betas == [0.9, 0.95] and cfg.optimizer.weight_decay == 0.1 and cfg.trainer.grad_clip == 1.0
    assert cfg.schedule.min_lr == pytest.approx(0.1 * cfg.schedule.max_lr)
    roles = {name: v.role for name, v in cfg.data.val.items()}
    assert roles == {"pile": "upstream", "slimpajama": "downstream"}
