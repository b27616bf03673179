"""Fixtures for the schedule tests: a minimal valid run YAML (with a real, tiny training file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def run_yaml(tmp_path: Path) -> Callable[..., Path]:
    """``run_yaml(max_steps=100, seq_len=16, micro_batch_size=2, **schedule_keys)`` writes a config file."""

    def write(
        max_steps: int = 100, seq_len: int = 16, micro_batch_size: int = 2, name: str = "run", **schedule
    ) -> Path:
        data = tmp_path / "train.jsonl"
        data.write_text('{"text": "a tiny document"}\n')
        lines = [
            "data:",
            f"  seq_len: {seq_len}",
            "  train:",
            f"    x: {{paths: ['{data}']}}",
            "trainer:",
            f"  max_steps: {max_steps}",
            f"  micro_batch_size: {micro_batch_size}",
            "schedule:",
            *[f"  {k}: {v}" for k, v in schedule.items()],
        ]
        if not schedule:
            lines.pop()
        path = tmp_path / f"{name}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write
