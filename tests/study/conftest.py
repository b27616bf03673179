"""Fixtures of the study tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.study.helpers import write_run


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    """Rewarm to three max LRs (min LR = 0.1 x max), as a sweep would leave them."""
    root = tmp_path / "runs" / "lr"
    return [write_run(root, f"max_lr-{lr}", max_lr=lr) for lr in (1.5e-4, 3e-4, 6e-4)]
